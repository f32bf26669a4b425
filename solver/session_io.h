/* session_io.h — what a build fetches from the client's BuildKit session,
 * for both frontends: a local directory synced by DiffCopy into a cache
 * under <state-dir>/contexts (keyed by the session's shared key, the dir
 * name and what was asked, so a rebuild transfers only what changed),
 * registry credentials from the Auth service written as an auth.json, and
 * secrets written to files on tmpfs.  The order in which a Dockerfile build
 * asks for its sources is solver/dockerfile/transfer.h; the LLB engine's
 * local sources, pulls and secret mounts are in solver/llb/. */
#ifndef SOLVER_SESSION_IO_H
#define SOLVER_SESSION_IO_H

#include <sys/types.h>

#include "session/diffcopy.h"
#include "session/sshforward.h"
#include "solver/job.h"

/* A build's hold on a session whose sources come over it instead of the
   request body (the Dockerfile frontend, solver/dockerfile/transfer.h). */
struct session_sources
{
  char *session_id;     /* the /session uuid */
  char *secrets_session_id; /* where credentials and secrets come from when not session_id: the
                               build's own session when its files come over another one
                               (local-sessionid:*, as buildx bake shares one for all targets) */
  char *state_dir;      /* podsolved's --state-dir */
  char *cache_root;     /* <state-dir>/contexts: caches kept between builds */
  char *job_dir;        /* the job's directory (credentials) */
  char *filename;       /* Dockerfile name in the "dockerfile" dir; NULL = Dockerfile */
  char *context_name;   /* the client's dir names: "context" ... */
  char *dockerfile_name;/* ... and "dockerfile" */
  /* filled while preparing, released after the build */
  int lock_fds[3];
  char *secrets_dir;    /* tmpfs directory holding this build's secrets */
  char *ssh_dir;        /* tmpfs directory holding its forwarded agents' sockets */
  session_ssh_forward **ssh_forwards; /* one per ssh id the Dockerfile mounts */
  size_t n_ssh_forwards;
  size_t files_requested; /* context files the daemon asked for (tests read it) */
  char *output_type;    /* "local" or "tar": send the result to the client (FileSend) */
  uint64_t max_context_bytes; /* --max-context-bytes for what the session sends */
  ps_strv named_locals; /* "NAME=DIR": named contexts (context:NAME=local:DIR) synced over the session */
  int *named_lock_fds;  /* their caches' locks, held while the build runs */
  size_t n_named_lock_fds;
};

/* Claims the session (it is not idle while the build holds it) until
   session_sources_free. */
struct session_sources *session_sources_new (const char *session_id, const char *state_dir, const char *job_dir,
                                             const char *filename);
void session_sources_free (struct session_sources *s);

/* Drop what the build held while it ran: the caches' locks, the
   secrets directory, the forwarded agents and their sockets. */
void session_sources_release (struct session_sources *s);

/* ---- local directories -------------------------------------------------------------- */

/* The cache directory under `cache_root` for one kind of transfer of the
   client's directory `dir_name`, keyed by `key_hint` (the session's shared
   key when NULL or empty) and `variant` (what was asked).  It is locked for
   this build (builds of the same context take turns) until *lock_fd is
   closed. */
char *session_cache_dir (const char *cache_root, ps_session *sess, const char *key_hint, const char *dir_name,
                         const char *variant, int *lock_fd, ps_error **err);

/* One transfer's progress, reported as statuses of vertex `vertex`. */
struct session_transfer
{
  solver_job *job;
  const char *vertex;
  const char *status_id;
  int64_t started;
  int64_t last_emit;
};

/* A status of `bytes` so far (done: the transfer's last). */
void session_transfer_status (struct session_transfer *t, uint64_t bytes, bool done);

/* A progress callback (diffcopy_opts.progress, FileSend's) whose user data
   is a struct session_transfer: at most ten statuses a second, so the stream
   stays small for big contexts. */
void session_transfer_progress (void *ud, uint64_t bytes);

/* One DiffCopy of o->dir_name into `dest`, its progress statuses
   `status_id` of `vertex`, stopped when the job is cancelled.  o's progress
   and cancel callbacks are set here. */
int session_transfer_dir (solver_job *job, ps_session *sess, const char *vertex, const char *status_id,
                          struct diffcopy_opts *o, const char *dest, struct diffcopy_stats *st, ps_error **err);

/* An LLB local source over the session: DiffCopy of the client's
   directory o->dir_name (with o's patterns) into a cache under
   <state_dir>/contexts keyed by `shared_key_hint` (local.sharedkeyhint; the
   session's shared key when NULL or empty), the name and the patterns.
   Transfer statuses go to vertex `vertex`.  On success *dir is the cache
   directory, locked until *lock_fd is closed.  o's progress and cancel
   callbacks are set here. */
int session_sync_local (solver_job *job, ps_session *sess, const char *state_dir, const char *vertex,
                        const char *shared_key_hint, struct diffcopy_opts *o, char **dir, int *lock_fd,
                        ps_error **err);

/* ---- registry credentials ----------------------------------------------------------- */

/* The registry host of an image reference as containers/image resolves
   it: the first element when it has a '.' or ':' or is "localhost",
   "docker.io" otherwise. */
char *image_ref_registry_host (const char *image);

/* Ask the session for credentials for each of `hosts` and write those it
   has as an auth.json (0600) at `path`.  Returns 1 when the file was
   written, 0 when the client has none, -1 with *err on failure. */
int session_write_authfile (ps_session *sess, const ps_strv *hosts, const char *path, ps_error **err);

/* ---- secrets -------------------------------------------------------------------------- */

/* The directory of a build's secrets on tmpfs, /dev/shm/<prefix>-<16 hex>
   (0700), created when *dir is NULL.  The caller removes it (ps_rm_rf)
   when the build ends. */
int session_secrets_dir (char **dir, const char *prefix, ps_error **err);

/* How a secret's file is made. */
struct session_secret_file
{
  const char *name; /* its name in the directory; NULL: a random one */
  bool chown;       /* after writing it 0600: chown to uid:gid, chmod to mode */
  uid_t uid;
  gid_t gid;
  mode_t mode;
};

/* Secret `id` from the session into a file of its own in the build's
   secrets directory *dir (session_secrets_dir (dir, prefix) on first use):
   never in the state dir, the context, a layer, the cache or a log.  The
   bytes are wiped from memory once written; a file that could not be made
   whole is removed.  Returns 1 with *path (the caller's), 0 when the client
   has no such secret (nothing is created), -1 with *err. */
int session_secret_to_tmpfs (ps_session *sess, const char *id, char **dir, const char *prefix,
                             const struct session_secret_file *f, char **path, ps_error **err);

/* ---- ssh agents ----------------------------------------------------------------------- */

/* The client's agent `id` (CheckAgent) forwarded on a new socket of its
   own in the build's private directory *dir (session_secrets_dir (dir,
   prefix) on first use; the caller removes it after stopping the
   forwarder), owned and moded by `opt`.  Returns 0 with *fwd (stop it
   with session_ssh_forward_stop), -1 with *err: status 404 when the
   client forwards no agent under that id (session_ssh_check). */
int session_ssh_to_socket (ps_session *sess, const char *id, char **dir, const char *prefix,
                           const struct session_ssh_socket *opt, session_ssh_forward **fwd, ps_error **err);

#endif
