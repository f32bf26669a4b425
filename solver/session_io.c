/* session_io.c — local directories, credentials and secrets from a
 * client's session (see session_io.h). */
#define _GNU_SOURCE
#include "solver/session_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "session/auth.h"
#include "session/diffcopy.h"
#include "session/secrets.h"
#include "session/session.h"
#include "solver/cache_prune.h"

struct session_sources *
session_sources_new (const char *session_id, const char *state_dir, const char *job_dir, const char *filename)
{
  struct session_sources *s = xcalloc (1, sizeof *s);
  s->session_id = xstrdup (session_id);
  /* The session stays ours (not idle) until this build ends. */
  session_claim (session_id);
  s->state_dir = xstrdup (state_dir);
  s->cache_root = xasprintf ("%s/contexts", state_dir);
  s->job_dir = xstrdup (job_dir);
  s->filename = filename && *filename && strcmp (filename, ".") != 0 ? xstrdup (filename) : NULL;
  s->context_name = xstrdup ("context");
  s->dockerfile_name = xstrdup ("dockerfile");
  for (size_t i = 0; i < ARRAY_SIZE (s->lock_fds); i++)
    s->lock_fds[i] = -1;
  return s;
}

void
session_sources_release (struct session_sources *s)
{
  if (s == NULL)
    return;
  for (size_t i = 0; i < ARRAY_SIZE (s->lock_fds); i++)
    if (s->lock_fds[i] >= 0)
      {
        close (s->lock_fds[i]); /* drops the flock */
        s->lock_fds[i] = -1;
      }
  for (size_t i = 0; i < s->n_named_lock_fds; i++)
    if (s->named_lock_fds[i] >= 0)
      close (s->named_lock_fds[i]);
  free (s->named_lock_fds);
  s->named_lock_fds = NULL;
  s->n_named_lock_fds = 0;
  if (s->secrets_dir)
    {
      ps_rm_rf (s->secrets_dir, NULL);
      free (s->secrets_dir);
      s->secrets_dir = NULL;
    }
  for (size_t i = 0; i < s->n_ssh_forwards; i++)
    session_ssh_forward_stop (s->ssh_forwards[i]);
  free (s->ssh_forwards);
  s->ssh_forwards = NULL;
  s->n_ssh_forwards = 0;
  if (s->ssh_dir)
    {
      ps_rm_rf (s->ssh_dir, NULL);
      free (s->ssh_dir);
      s->ssh_dir = NULL;
    }
}

void
session_sources_free (struct session_sources *s)
{
  if (s == NULL)
    return;
  session_sources_release (s);
  session_unclaim (s->session_id);
  free (s->session_id);
  free (s->secrets_session_id);
  ps_strv_free (&s->named_locals);
  free (s->state_dir);
  free (s->cache_root);
  free (s->job_dir);
  free (s->filename);
  free (s->context_name);
  free (s->dockerfile_name);
  free (s->output_type);
  free (s);
}

/* ---- local directories -------------------------------------------------------------- */

static const char *
sharing_key (ps_session *sess)
{
  const char *key = session_shared_key (sess);
  return key && *key ? key : session_uuid (sess); /* no shared key: nothing to share across sessions */
}

/* The lock is an flock on a file beside the directory, released when
   *lock_fd closes. */
char *
session_cache_dir (const char *cache_root, ps_session *sess, const char *key_hint, const char *dir_name,
                   const char *variant, int *lock_fd, ps_error **err)
{
  const char *key = key_hint && *key_hint ? key_hint : sharing_key (sess);
  cleanup_free char *material = xasprintf ("%s\n%s\n%s", key, dir_name, variant);
  char hex[65];
  ps_sha256_hex (material, strlen (material), hex);
  if (ps_mkdir_p (cache_root, 0700, err) < 0)
    return NULL;
  char *dir = xasprintf ("%s/%.32s", cache_root, hex);
  cleanup_free char *lock = xasprintf ("%s.lock", dir);
  int fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || flock (fd, LOCK_EX) < 0)
    {
      ps_error_set_errno (err, 500, errno, "lock %s", lock);
      if (fd >= 0)
        close (fd);
      free (dir);
      return NULL;
    }
  *lock_fd = fd;
  cache_record_touch (dir); /* its last use, for POST /build/prune (absent on a first sync) */
  return dir;
}

void
session_transfer_status (struct session_transfer *t, uint64_t bytes, bool done)
{
  struct solver_event ev = { .kind = SOLVER_EV_STATUS };
  ev.vertex = xstrdup (t->vertex);
  ev.status_id = xstrdup (t->status_id);
  ev.current = (int64_t) bytes;
  ev.started_ns = t->started;
  if (done)
    ev.completed_ns = ps_now_ns ();
  solver_job_emit (t->job, &ev);
}

void
session_transfer_progress (void *ud, uint64_t bytes)
{
  struct session_transfer *t = ud;
  int64_t now = ps_monotonic_ns ();
  if (now - t->last_emit < 100000000LL)
    return;
  t->last_emit = now;
  session_transfer_status (t, bytes, false);
}

static bool
on_cancel_poll (void *ud)
{
  struct session_transfer *t = ud;
  return solver_job_cancelled (t->job);
}

int
session_transfer_dir (solver_job *job, ps_session *sess, const char *vertex, const char *status_id,
                      struct diffcopy_opts *o, const char *dest, struct diffcopy_stats *st, ps_error **err)
{
  struct session_transfer t = { .job = job, .vertex = vertex, .status_id = status_id, .started = ps_now_ns () };
  o->progress = session_transfer_progress;
  o->progress_ud = &t;
  o->cancelled = on_cancel_poll;
  o->cancel_ud = &t;
  int r = session_diffcopy (sess, dest, o, st, err);
  if (r == 0)
    session_transfer_status (&t, st->bytes, true);
  return r;
}

int
session_sync_local (solver_job *job, ps_session *sess, const char *state_dir, const char *vertex,
                    const char *shared_key_hint, struct diffcopy_opts *o, char **dir, int *lock_fd, ps_error **err)
{
  cleanup_free char *cache_root = xasprintf ("%s/contexts", state_dir);
  ps_buf variant = { 0 };
  ps_buf_puts (&variant, "llb-local");
  const struct
  {
    const char *tag;
    const char *const *v;
    size_t n;
  } lists[] = { { "include", o->include_patterns, o->n_include },
                { "exclude", o->exclude_patterns, o->n_exclude },
                { "follow", o->follow_paths, o->n_follow } };
  for (size_t l = 0; l < ARRAY_SIZE (lists); l++)
    for (size_t i = 0; i < lists[l].n; i++)
      ps_buf_printf (&variant, "\n%s:%s", lists[l].tag, lists[l].v[i]);
  *dir = session_cache_dir (cache_root, sess, shared_key_hint, o->dir_name, variant.data, lock_fd, err);
  ps_buf_free (&variant);
  if (*dir == NULL)
    return -1;
  struct diffcopy_stats st = { 0 };
  if (session_transfer_dir (job, sess, vertex, "transferring context:", o, *dir, &st, err) < 0)
    {
      free (*dir);
      *dir = NULL;
      close (*lock_fd);
      *lock_fd = -1;
      return -1;
    }
  ps_info ("job %s: local \"%s\" synced over session %s: %zu entries, %zu files requested, %llu bytes",
           solver_job_id (job), o->dir_name, session_uuid (sess), st.entries, st.files_requested,
           (unsigned long long) st.file_bytes);
  return 0;
}

/* ---- registry credentials ----------------------------------------------------------- */

char *
image_ref_registry_host (const char *image)
{
  const char *slash = strchr (image, '/');
  if (slash && (memchr (image, '.', (size_t) (slash - image)) || memchr (image, ':', (size_t) (slash - image))
                || strncmp (image, "localhost/", 10) == 0))
    return xstrndup (image, (size_t) (slash - image));
  return xstrdup ("docker.io");
}

int
session_write_authfile (ps_session *sess, const ps_strv *hosts, const char *path, ps_error **err)
{
  ps_buf json = { 0 };
  int found = 0;
  ps_buf_puts (&json, "{\"auths\":{");
  for (size_t i = 0; i < hosts->n; i++)
    {
      /* The docker CLI keys Docker Hub as its API host. */
      const char *ask = strcmp (hosts->v[i], "docker.io") == 0 ? "registry-1.docker.io" : hosts->v[i];
      char *user = NULL, *secret = NULL;
      int r = session_auth_credentials (sess, ask, &user, &secret, err);
      if (r < 0)
        {
          ps_buf_free (&json);
          return ps_error_wrap (err, "registry credentials for %s", hosts->v[i]);
        }
      if (r == 1)
        {
          cleanup_free char *pair = xasprintf ("%s:%s", user, secret);
          cleanup_free char *b64 = ps_base64_encode (pair, strlen (pair));
          ps_buf_printf (&json, "%s\"%s\":{\"auth\":\"%s\"}", found ? "," : "", hosts->v[i], b64);
          found++;
          explicit_bzero (pair, strlen (pair));
          explicit_bzero (b64, strlen (b64));
          explicit_bzero (secret, strlen (secret));
        }
      free (user);
      free (secret);
    }
  ps_buf_puts (&json, "}}");
  int ret = 0;
  if (found)
    ret = ps_write_file (path, json.data, json.len, 0600, err) < 0 ? -1 : 1;
  explicit_bzero (json.data, json.len);
  ps_buf_free (&json);
  return ret;
}

/* ---- secrets -------------------------------------------------------------------------- */

int
session_secrets_dir (char **dir, const char *prefix, ps_error **err)
{
  if (*dir)
    return 0;
  char hex[17];
  ps_random_hex (hex, 8);
  *dir = xasprintf ("/dev/shm/%s-%s", prefix, hex);
  if (mkdir (*dir, 0700) < 0)
    {
      int ret = ps_error_set_errno (err, 500, errno, "create %s", *dir);
      free (*dir);
      *dir = NULL;
      return ret;
    }
  return 0;
}

int
session_secret_to_tmpfs (ps_session *sess, const char *id, char **dir, const char *prefix,
                         const struct session_secret_file *f, char **path, ps_error **err)
{
  *path = NULL;
  unsigned char *data = NULL;
  size_t len = 0;
  int r = session_get_secret (sess, id, &data, &len, err);
  if (r < 0)
    return ps_error_wrap (err, "secret %s", id);
  if (r == 0)
    return 0;
  char *file = NULL;
  r = session_secrets_dir (dir, prefix, err);
  if (r == 0)
    {
      char rnd[17];
      if (f->name == NULL)
        ps_random_hex (rnd, 8);
      file = xasprintf ("%s/%s", *dir, f->name ? f->name : rnd);
      r = ps_write_file (file, data, len, 0600, err);
    }
  explicit_bzero (data, len);
  free (data);
  if (r == 0 && f->chown && (chown (file, f->uid, f->gid) < 0 || chmod (file, f->mode) < 0))
    r = ps_error_set_errno (err, 500, errno, "secret file for %s", id);
  if (r < 0)
    {
      if (file)
        unlink (file);
      free (file);
      return -1;
    }
  *path = file;
  return 1;
}

/* ---- ssh agents ----------------------------------------------------------------------- */

int
session_ssh_to_socket (ps_session *sess, const char *id, char **dir, const char *prefix,
                       const struct session_ssh_socket *opt, session_ssh_forward **fwd, ps_error **err)
{
  *fwd = NULL;
  if (session_ssh_check (sess, id, err) < 0 || session_secrets_dir (dir, prefix, err) < 0)
    return -1;
  char rnd[17];
  ps_random_hex (rnd, 8);
  cleanup_free char *path = xasprintf ("%s/%s.sock", *dir, rnd);
  *fwd = session_ssh_forward_start (sess, id, path, opt, err);
  return *fwd ? 0 : ps_error_wrap (err, "ssh %s", id);
}
