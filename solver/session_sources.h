/* session_sources.h — the build's Dockerfile and context pulled from the
 * client's BuildKit session, in the order BuildKit's Dockerfile frontend
 * asks for them (buildkit-protocols.md §7.2):
 *   1. dir "dockerfile" with followpaths [<file>, <file>.dockerignore]
 *      -> "[internal] load build definition from <file>";
 *   2. dir "context" with followpaths [.dockerignore]
 *      -> "[internal] load .dockerignore";
 *   3. registry credentials for the FROM images (Auth/Credentials);
 *   4. dir "context" with the ignore patterns as exclude-patterns
 *      -> "[internal] load build context", status "transferring context:".
 * Each directory lands in a cache under <state-dir>/contexts keyed by the
 * session's shared key, the dir name and what was asked, so a rebuild
 * transfers only what changed.  Secrets the Dockerfile mounts are fetched
 * into a 0600 file on tmpfs for the build's duration. */
#ifndef SOLVER_SESSION_SOURCES_H
#define SOLVER_SESSION_SOURCES_H

#include "session/diffcopy.h"
#include "solver/dockerfile/build.h"

struct session_sources *session_sources_new (const char *session_id, const char *state_dir, const char *job_dir,
                                             const char *filename);
void session_sources_free (struct session_sources *s);

/* Sync the sources and fill b->opts (context dir, Dockerfile, auth file,
   secrets) and b->definition_digest.  The caches stay locked until
   session_sources_release. */
int session_sources_prepare (solver_job *job, struct dockerfile_build *b, ps_error **err);
void session_sources_release (struct session_sources *s);

/* Send the built image's filesystem to the client over its session
   (FileSend): a tree for output "local", a tar for "tar". */
int session_sources_export (solver_job *job, struct dockerfile_build *b, const char *image_id, ps_error **err);

/* The registry host of an image reference as containers/image resolves
   it: the first element when it has a '.' or ':' or is "localhost",
   "docker.io" otherwise. */
char *image_ref_registry_host (const char *image);

/* Ask the session for credentials for each of `hosts` and write those it
   has as an auth.json (0600) at `path`.  Returns 1 when the file was
   written, 0 when the client has none, -1 with *err on failure. */
int session_write_authfile (ps_session *sess, const ps_strv *hosts, const char *path, ps_error **err);

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

#endif
