/* session_sources.c — Dockerfile, .dockerignore and context over the
 * session, credentials and secrets from it. */
#define _GNU_SOURCE
#include "solver/session_sources.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "session/auth.h"
#include "session/diffcopy.h"
#include "session/filesend.h"
#include "session/secrets.h"
#include "session/session.h"
#include "session/session_limits.h"
#include "solver/cache_prune.h"
#include "solver/context.h"
#include "solver/rootfs_export.h"

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
  if (s->secrets_dir)
    {
      ps_rm_rf (s->secrets_dir, NULL);
      free (s->secrets_dir);
      s->secrets_dir = NULL;
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
  free (s->state_dir);
  free (s->cache_root);
  free (s->job_dir);
  free (s->filename);
  free (s->context_name);
  free (s->dockerfile_name);
  free (s->output_type);
  free (s);
}

/* The cache directory for one kind of transfer under `cache_root`, locked
   for this build (builds of the same context take turns; the lock is an
   flock on a file beside the directory, released when *lock_fd closes). */
static char *
cache_dir_at (const char *cache_root, const char *key, const char *dir_name, const char *variant, int *lock_fd,
              ps_error **err)
{
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

static const char *
sharing_key (ps_session *sess)
{
  const char *key = session_shared_key (sess);
  return key && *key ? key : session_uuid (sess); /* no shared key: nothing to share across sessions */
}

static char *
cache_dir (struct session_sources *s, ps_session *sess, const char *dir_name, const char *variant, int slot,
           ps_error **err)
{
  return cache_dir_at (s->cache_root, sharing_key (sess), dir_name, variant, &s->lock_fds[slot], err);
}

struct transfer
{
  solver_job *job;
  const char *vertex;
  const char *status_id;
  int64_t started;
  int64_t last_emit;
};

static void
emit_status (struct transfer *t, uint64_t bytes, bool done)
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

/* At most ten updates a second: the stream stays small for big contexts. */
static void
on_progress (void *ud, uint64_t bytes)
{
  struct transfer *t = ud;
  int64_t now = ps_monotonic_ns ();
  if (now - t->last_emit < 100000000LL)
    return;
  t->last_emit = now;
  emit_status (t, bytes, false);
}

static bool
on_cancel_poll (void *ud)
{
  struct transfer *t = ud;
  return solver_job_cancelled (t->job);
}

static char *
vertex_digest (const char *session_key, const char *name)
{
  cleanup_free char *material = xasprintf ("session\n%s\n%s", session_key, name);
  char hex[65];
  ps_sha256_hex (material, strlen (material), hex);
  return xasprintf ("sha256:%s", hex);
}

static void
emit_vertex (solver_job *job, const char *digest, const char *name, int64_t started, int64_t completed,
             const char *error)
{
  struct solver_event ev = { .kind = SOLVER_EV_VERTEX };
  ev.vertex = xstrdup (digest);
  ev.name = xstrdup (name);
  ev.started_ns = started;
  ev.completed_ns = completed;
  ev.error = error ? xstrdup (error) : NULL;
  solver_job_emit (job, &ev);
}

/* One DiffCopy, its progress a status of vertex `digest`. */
static int
transfer_dir (solver_job *job, ps_session *sess, const char *digest, const char *status_id, struct diffcopy_opts *o,
              const char *dest, struct diffcopy_stats *st, ps_error **err)
{
  struct transfer t = { .job = job, .vertex = digest, .status_id = status_id, .started = ps_now_ns () };
  o->progress = on_progress;
  o->progress_ud = &t;
  o->cancelled = on_cancel_poll;
  o->cancel_ud = &t;
  int r = session_diffcopy (sess, dest, o, st, err);
  if (r == 0)
    emit_status (&t, st->bytes, true);
  return r;
}

/* One DiffCopy under its own [internal] vertex. */
static int
sync_dir (solver_job *job, ps_session *sess, uint64_t max_bytes, const char *vertex_name, const char *status_id, const char *dir_name,
          const char *dest, const char *const *follow, size_t n_follow, const char *const *excludes,
          size_t n_excludes, struct diffcopy_stats *st, ps_error **err)
{
  cleanup_free char *digest = vertex_digest (session_shared_key (sess), vertex_name);
  int64_t started = ps_now_ns ();
  emit_vertex (job, digest, vertex_name, started, 0, NULL);
  struct diffcopy_opts o = {
    .dir_name = dir_name,
    .follow_paths = follow,
    .n_follow = n_follow,
    .exclude_patterns = excludes,
    .n_exclude = n_excludes,
    .max_bytes = max_bytes,
  };
  int r = transfer_dir (job, sess, digest, status_id, &o, dest, st, err);
  emit_vertex (job, digest, vertex_name, started, ps_now_ns (), r < 0 ? (*err)->msg : NULL);
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
  const char *key = shared_key_hint && *shared_key_hint ? shared_key_hint : sharing_key (sess);
  *dir = cache_dir_at (cache_root, key, o->dir_name, variant.data, lock_fd, err);
  ps_buf_free (&variant);
  if (*dir == NULL)
    return -1;
  struct diffcopy_stats st = { 0 };
  if (transfer_dir (job, sess, vertex, "transferring context:", o, *dir, &st, err) < 0)
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

/* The non-empty, non-comment lines of an ignore file, as the client's
   fsutil walker takes them. */
static void
read_ignore_lines (const char *path, ps_strv *out)
{
  cleanup_free char *text = NULL;
  size_t len = 0;
  if (ps_read_file (path, PS_MAX_IGNORE_FILE_BYTES, &text, &len, NULL) < 0)
    return;
  char *save = NULL;
  for (char *line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
    {
      while (*line && isspace ((unsigned char) *line))
        line++;
      size_t n = strlen (line);
      while (n > 0 && isspace ((unsigned char) line[n - 1]))
        line[--n] = '\0';
      if (*line == '\0' || *line == '#')
        continue;
      ps_strv_push (out, line);
    }
}

char *
image_ref_registry_host (const char *image)
{
  const char *slash = strchr (image, '/');
  if (slash && (memchr (image, '.', (size_t) (slash - image)) || memchr (image, ':', (size_t) (slash - image))
                || strncmp (image, "localhost/", 10) == 0))
    return xstrndup (image, (size_t) (slash - image));
  return xstrdup ("docker.io");
}

/* Registry hosts of the FROM images (ARG-expanded names resolve at build
   time: buildah asks for those itself, anonymously). */
static void
from_hosts (const char *dockerfile, ps_strv *hosts)
{
  ps_strv images = { 0 };
  dockerfile_from_images (dockerfile, &images);
  for (size_t k = 0; k < images.n; k++)
    {
      cleanup_free char *host = image_ref_registry_host (images.v[k]);
      bool seen = false;
      for (size_t i = 0; i < hosts->n; i++)
        seen |= strcmp (hosts->v[i], host) == 0;
      if (!seen && strcmp (host, "localhost") != 0)
        ps_strv_push (hosts, host);
    }
  ps_strv_free (&images);
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

/* Credentials for the FROM registries, as an auth.json for buildah. */
static int
fetch_credentials (struct dockerfile_build *b, ps_session *sess, const char *dockerfile, ps_error **err)
{
  ps_strv hosts = { 0 };
  from_hosts (dockerfile, &hosts);
  cleanup_free char *path = xasprintf ("%s/auth.json", b->session->job_dir);
  int r = session_write_authfile (sess, &hosts, path, err);
  ps_strv_free (&hosts);
  if (r == 1)
    {
      free (b->opts.authfile);
      b->opts.authfile = xstrdup (path);
    }
  return r < 0 ? -1 : 0;
}

/* Secret ids the Dockerfile mounts: RUN --mount=type=secret,id=X (the id
   defaults to the target's base name). */
static void
secret_ids (const char *dockerfile, ps_strv *ids)
{
  for (const char *p = dockerfile; (p = strstr (p, "--mount=")) != NULL; p += 8)
    {
      const char *end = p + 8 + strcspn (p + 8, " \t\n\\");
      cleanup_free char *spec = xstrndup (p + 8, (size_t) (end - p - 8));
      if (strstr (spec, "type=secret") == NULL)
        continue;
      cleanup_free char *id = NULL;
      char *save = NULL;
      for (char *f = strtok_r (spec, ",", &save); f; f = strtok_r (NULL, ",", &save))
        {
          if (ps_str_has_prefix (f, "id="))
            id = xstrdup (f + 3);
          else if (id == NULL && (ps_str_has_prefix (f, "target=") || ps_str_has_prefix (f, "dst=")))
            {
              const char *t = strchr (f, '=') + 1;
              const char *base = strrchr (t, '/');
              id = xstrdup (base ? base + 1 : t);
            }
        }
      if (id == NULL || *id == '\0' || strchr (id, '/'))
        continue;
      bool seen = false;
      for (size_t i = 0; i < ids->n; i++)
        seen |= strcmp (ids->v[i], id) == 0;
      if (!seen)
        ps_strv_push (ids, id);
    }
}

/* Each secret in its own 0600 file on tmpfs (/dev/shm), never in the
   context, a layer, the cache or a log; removed when the build ends. */
static int
fetch_secrets (struct dockerfile_build *b, ps_session *sess, const char *dockerfile, ps_error **err)
{
  ps_strv ids = { 0 };
  secret_ids (dockerfile, &ids);
  int ret = 0;
  for (size_t i = 0; i < ids.n && ret == 0; i++)
    {
      unsigned char *data = NULL;
      size_t len = 0;
      int r = session_get_secret (sess, ids.v[i], &data, &len, err);
      if (r < 0)
        {
          ret = ps_error_wrap (err, "secret %s", ids.v[i]);
          break;
        }
      if (r == 0)
        continue; /* buildah reports a missing required secret itself */
      if (b->session->secrets_dir == NULL)
        {
          char hex[17];
          ps_random_hex (hex, 8);
          b->session->secrets_dir = xasprintf ("/dev/shm/podsolve-secrets-%s", hex);
          if (mkdir (b->session->secrets_dir, 0700) < 0)
            {
              ret = ps_error_set_errno (err, 500, errno, "create %s", b->session->secrets_dir);
              free (b->session->secrets_dir);
              b->session->secrets_dir = NULL;
            }
        }
      if (ret == 0)
        {
          cleanup_free char *path = xasprintf ("%s/%s", b->session->secrets_dir, ids.v[i]);
          ret = ps_write_file (path, data, len, 0600, err);
          if (ret == 0)
            ps_strv_pushf (&b->opts.secrets, "id=%s,src=%s", ids.v[i], path);
        }
      explicit_bzero (data, len);
      free (data);
    }
  ps_strv_free (&ids);
  return ret;
}

int
session_sources_prepare (solver_job *job, struct dockerfile_build *b, ps_error **err)
{
  struct session_sources *s = b->session;
  ps_session *sess = session_wait (s->session_id, PS_SESSION_WAIT_MS, err);
  if (sess == NULL)
    return ps_error_wrap (err, "session %s", s->session_id);
  int ret = -1;
  const char *fname = s->filename ? s->filename : "Dockerfile";
  cleanup_free char *def_vertex = xasprintf ("[internal] load build definition from %s", fname);
  cleanup_free char *fname_ignore = xasprintf ("%s.dockerignore", fname);
  struct diffcopy_stats st = { 0 };
  cleanup_free char *df_dir = NULL, *ign_dir = NULL, *ctx_dir = NULL, *df_text = NULL;
  cleanup_free char *df_path = NULL, *own_ignore = NULL;
  ps_strv excludes = { 0 };

  /* 1. The Dockerfile (and its own ignore file), from the "dockerfile" dir. */
  const char *df_follow[3] = { fname, fname_ignore, NULL };
  size_t n_df_follow = 2;
  if (strcmp (fname, "Dockerfile") == 0)
    df_follow[n_df_follow++] = "dockerfile";
  cleanup_free char *df_variant = xasprintf ("followpaths:%s", fname);
  df_dir = cache_dir (s, sess, s->dockerfile_name, df_variant, 0, err);
  if (df_dir == NULL
      || sync_dir (job, sess, s->max_context_bytes, def_vertex, "transferring dockerfile:", s->dockerfile_name, df_dir, df_follow,
                   n_df_follow, NULL, 0, &st, err)
             < 0)
    goto out;
  if (context_file (df_dir, fname, err) != 1)
    {
      if (*err == NULL)
        ps_error_set (err, 400, "failed to read dockerfile: %s: no such file in the client's directory", fname);
      goto out;
    }
  df_path = xasprintf ("%s/%s", df_dir, fname);
  size_t df_len = 0;
  if (ps_read_file (df_path, PS_MAX_DOCKERFILE_BYTES, &df_text, &df_len, err) < 0)
    goto out;
  char hex[65];
  ps_sha256_hex (df_text, df_len, hex);
  free (b->definition_digest);
  b->definition_digest = xstrdup (hex);

  /* 2. The context's .dockerignore, unless the Dockerfile has its own. */
  own_ignore = xasprintf ("%s/%s", df_dir, fname_ignore);
  struct stat sb;
  if (stat (own_ignore, &sb) == 0)
    read_ignore_lines (own_ignore, &excludes);
  else
    {
      const char *ign_follow[] = { ".dockerignore" };
      ign_dir = cache_dir (s, sess, s->context_name, "followpaths:.dockerignore", 1, err);
      if (ign_dir == NULL
          || sync_dir (job, sess, s->max_context_bytes, "[internal] load .dockerignore", "transferring context:", s->context_name, ign_dir,
                       ign_follow, 1, NULL, 0, &st, err)
                 < 0)
        goto out;
      cleanup_free char *ign = xasprintf ("%s/.dockerignore", ign_dir);
      read_ignore_lines (ign, &excludes);
    }

  /* 3. Credentials and secrets, before buildah needs them. */
  if (fetch_credentials (b, sess, df_text, err) < 0 || fetch_secrets (b, sess, df_text, err) < 0)
    goto out;

  /* 4. The context itself. */
  ctx_dir = cache_dir (s, sess, s->context_name, "context", 2, err);
  memset (&st, 0, sizeof st);
  if (ctx_dir == NULL
      || sync_dir (job, sess, s->max_context_bytes, "[internal] load build context", "transferring context:", s->context_name, ctx_dir,
                   NULL, 0, (const char *const *) excludes.v, excludes.n, &st, err)
             < 0)
    goto out;
  s->files_requested = st.files_requested;
  b->context_bytes = st.file_bytes;
  ps_info ("job %s: context synced over session %s: %zu entries, %zu files requested, %llu bytes",
           solver_job_id (job), s->session_id, st.entries, st.files_requested, (unsigned long long) st.file_bytes);

  free (b->opts.context_dir);
  b->opts.context_dir = xstrdup (ctx_dir);
  ps_strv_free (&b->opts.dockerfiles);
  ps_strv_push (&b->opts.dockerfiles, df_path);
  free (b->dockerfile_name);
  b->dockerfile_name = xstrdup (fname);
  ret = 0;
out:
  ps_strv_free (&excludes);
  session_unref (sess);
  return ret;
}

/* ---- results back to the client ------------------------------------------------ */

struct export_ctx
{
  solver_job *job;
  ps_session *sess;
  struct session_sources *src;
  struct transfer t;
};

static void
on_send_progress (void *ud, uint64_t bytes)
{
  on_progress (ud, bytes);
}

static int
send_rootfs (const char *root, void *ud, ps_error **err)
{
  struct export_ctx *x = ud;
  if (strcmp (x->src->output_type, "local") == 0)
    return session_filesend_dir (x->sess, root, on_send_progress, &x->t, err);
  cleanup_free char *tar = xasprintf ("%s/output.tar", x->src->job_dir);
  uint64_t bytes = 0;
  int r = rootfs_write_tar (root, tar, &bytes, err);
  if (r == 0)
    r = session_filesend_file (x->sess, tar, on_send_progress, &x->t, err);
  unlink (tar);
  return r;
}

int
session_sources_export (solver_job *job, struct dockerfile_build *b, const char *image_id, ps_error **err)
{
  struct session_sources *s = b->session;
  ps_session *sess = session_wait (s->session_id, 0, err);
  if (sess == NULL)
    return ps_error_wrap (err, "send the output to the client");
  const char *name = "exporting to client";
  cleanup_free char *digest = vertex_digest (image_id, name);
  struct export_ctx x = { .job = job, .sess = sess, .src = s };
  x.t = (struct transfer){ .job = job, .vertex = digest,
                           .status_id = strcmp (s->output_type, "local") == 0 ? "copying files" : "sending tarball",
                           .started = ps_now_ns () };
  emit_vertex (job, digest, name, x.t.started, 0, NULL);
  int r = rootfs_with_mount (image_id, send_rootfs, &x, err);
  if (r == 0)
    emit_status (&x.t, 0, true);
  emit_vertex (job, digest, name, x.t.started, ps_now_ns (), r < 0 ? (*err)->msg : NULL);
  session_unref (sess);
  return r;
}
