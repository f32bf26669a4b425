/* transfer.c — a Dockerfile build's Dockerfile, .dockerignore and context
 * over the session, its credentials and secrets from it, its result back
 * (see transfer.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/transfer.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "session/diffcopy.h"
#include "session/filesend.h"
#include "session/session.h"
#include "session/session_limits.h"
#include "solver/context.h"
#include "solver/rootfs_export.h"
#include "solver/session_io.h"
#include "solver/dockerfile/scan.h"

/* The cache for one of the build's transfers, its lock in slot `slot`. */
static char *
cache_dir (struct session_sources *s, ps_session *sess, const char *dir_name, const char *variant, int slot,
           ps_error **err)
{
  return session_cache_dir (s->cache_root, sess, NULL, dir_name, variant, &s->lock_fds[slot], err);
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
  solver_job_emit_vertex (job, digest, name, NULL, started, completed, false, error, NULL);
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
  int r = session_transfer_dir (job, sess, digest, status_id, &o, dest, st, err);
  emit_vertex (job, digest, vertex_name, started, ps_now_ns (), r < 0 ? (*err)->msg : NULL);
  return r;
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

/* /dev/shm/podsolve-secrets-<hex>: the build's secrets directory. */
#define DOCKERFILE_SECRETS_PREFIX "podsolve-secrets"

/* Each secret in its own 0600 file on tmpfs (/dev/shm), never in the
   context, a layer, the cache or a log; removed when the build ends. */
static int
fetch_secrets (struct dockerfile_build *b, struct session_sources *held, ps_session *sess, const char *dockerfile,
               ps_error **err)
{
  ps_strv ids = { 0 };
  dockerfile_secret_ids (dockerfile, &ids);
  int ret = 0;
  for (size_t i = 0; i < ids.n && ret == 0; i++)
    {
      const struct session_secret_file f = { .name = ids.v[i] };
      cleanup_free char *path = NULL;
      int r = session_secret_to_tmpfs (sess, ids.v[i], &held->secrets_dir, DOCKERFILE_SECRETS_PREFIX, &f, &path, err);
      if (r < 0)
        ret = -1;
      else if (r == 1)
        ps_strv_pushf (&b->opts.secrets, "id=%s,src=%s", ids.v[i], path);
      /* r == 0: buildah reports a missing required secret itself */
    }
  ps_strv_free (&ids);
  return ret;
}

/* /dev/shm/podsolve-ssh-<hex>: the sockets of the build's forwarded agents. */
#define DOCKERFILE_SSH_PREFIX "podsolve-ssh"

/* Each ssh id the Dockerfile mounts that the client forwards (CheckAgent),
   on a socket of its own (root's, 0600: buildah connects to it and serves
   the agent to the RUN itself) for buildah's --ssh ID=SOCKET.  An id the
   client does not forward is left out: the scan cannot tell which stages
   the build runs, and buildah treats the mounts as BuildKit does (one
   without required=true runs without an agent; a required one fails, its
   message mapped to BuildKit's in buildah_output.c). */
static int
forward_ssh (struct dockerfile_build *b, struct session_sources *held, ps_session *sess, const char *dockerfile,
             ps_error **err)
{
  ps_strv ids = { 0 };
  dockerfile_ssh_ids (dockerfile, &ids);
  int ret = 0;
  for (size_t i = 0; i < ids.n && ret == 0; i++)
    {
      session_ssh_forward *fwd = NULL;
      ret = session_ssh_to_socket (sess, ids.v[i], &held->ssh_dir, DOCKERFILE_SSH_PREFIX, NULL, &fwd, err);
      if (ret < 0 && (*err)->status == 404)
        {
          ps_info ("ssh %s: %s", ids.v[i], (*err)->msg);
          ps_error_free (*err);
          *err = NULL;
          ret = 0;
          continue;
        }
      if (ret < 0)
        break;
      struct session_sources *s = held;
      s->ssh_forwards = xrealloc (s->ssh_forwards, (s->n_ssh_forwards + 1) * sizeof *s->ssh_forwards);
      s->ssh_forwards[s->n_ssh_forwards++] = fwd;
      ps_strv_pushf (&b->opts.ssh, "%s=%s", ids.v[i], session_ssh_forward_path (fwd));
    }
  ps_strv_free (&ids);
  return ret;
}

int
dockerfile_transfer_sources (solver_job *job, struct dockerfile_build *b, ps_error **err)
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
  const char *found = NULL;
  if (dockerfile_find (df_dir, &fname, 1, &found, err) != 1)
    {
      if (*err == NULL)
        ps_error_set (err, 400, "failed to read dockerfile: %s: no such file in the client's directory", fname);
      goto out;
    }
  df_path = xasprintf ("%s/%s", df_dir, fname);
  char hex[65];
  if (dockerfile_read (df_path, &df_text, NULL, hex, err) < 0)
    goto out;
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

  /* 3. Credentials, secrets and ssh agents, before buildah needs them: from the
     build's own session (BuildKit asks the request's session for them,
     whichever session the local directories come from). */
  {
    ps_session *ssess = sess;
    if (s->secrets_session_id)
      {
        ssess = session_wait (s->secrets_session_id, PS_SESSION_WAIT_MS, err);
        if (ssess == NULL)
          {
            ps_error_wrap (err, "session %s", s->secrets_session_id);
            goto out;
          }
      }
    int r = fetch_credentials (b, ssess, df_text, err) < 0 || fetch_secrets (b, s, ssess, df_text, err) < 0
                    || forward_ssh (b, s, ssess, df_text, err) < 0
                ? -1
                : 0;
    if (ssess != sess)
      session_unref (ssess);
    if (r < 0)
      goto out;
  }

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

  /* 5. Named contexts from the client's other directories
     (context:NAME=local:DIR), each into a cache of its own, locked until
     the build ends. */
  for (size_t i = 0; i < s->named_locals.n; i++)
    {
      const char *nv = s->named_locals.v[i];
      const char *eq = strchr (nv, '=');
      cleanup_free char *name = xstrndup (nv, (size_t) (eq - nv));
      const char *dir_name = eq + 1;
      s->named_lock_fds = xrealloc (s->named_lock_fds, (s->n_named_lock_fds + 1) * sizeof (int));
      int *lock_fd = &s->named_lock_fds[s->n_named_lock_fds++];
      *lock_fd = -1;
      cleanup_free char *dir = session_cache_dir (s->cache_root, sess, NULL, dir_name, "context", lock_fd, err);
      cleanup_free char *vname = xasprintf ("[context %s] load from client", name);
      struct diffcopy_stats nst = { 0 };
      if (dir == NULL
          || sync_dir (job, sess, s->max_context_bytes, vname, "transferring context:", dir_name, dir, NULL, 0, NULL, 0,
                       &nst, err)
                 < 0)
        goto out;
      ps_strv_pushf (&b->opts.build_contexts, "%s=%s", name, dir);
    }
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

int
dockerfile_client_session_inputs (solver_job *job, struct dockerfile_build *b, const char *dockerfile,
                                  struct session_sources **held, ps_error **err)
{
  *held = NULL;
  ps_strv secrets = { 0 }, ssh = { 0 };
  dockerfile_secret_ids (dockerfile, &secrets);
  dockerfile_ssh_ids (dockerfile, &ssh);
  bool wanted = secrets.n > 0 || ssh.n > 0;
  ps_strv_free (&secrets);
  ps_strv_free (&ssh);
  if (!wanted)
    return 0;
  ps_session *sess = session_wait (b->client_session, PS_SESSION_WAIT_MS, err);
  if (sess == NULL)
    return ps_error_wrap (err, "session %s", b->client_session);
  /* session_sources_new claims the session until the build ends; only its
     secrets and agents are used (the files came with the request, no
     cache under the state dir is touched). */
  const char *job_dir = solver_job_dir (job);
  struct session_sources *h = session_sources_new (b->client_session, b->state_dir ? b->state_dir : job_dir, job_dir,
                                                   NULL);
  int r = fetch_secrets (b, h, sess, dockerfile, err) < 0 || forward_ssh (b, h, sess, dockerfile, err) < 0 ? -1 : 0;
  session_unref (sess);
  if (r < 0)
    {
      session_sources_free (h);
      return -1;
    }
  *held = h;
  return 0;
}

/* ---- results back to the client ------------------------------------------------ */

struct export_ctx
{
  solver_job *job;
  ps_session *sess;
  struct session_sources *src;
  struct session_transfer t;
};

static int
send_rootfs (const char *root, void *ud, ps_error **err)
{
  struct export_ctx *x = ud;
  if (strcmp (x->src->output_type, "local") == 0)
    return session_filesend_dir (x->sess, root, session_transfer_progress, &x->t, err);
  cleanup_free char *tar = xasprintf ("%s/output.tar", x->src->job_dir);
  uint64_t bytes = 0;
  int r = rootfs_write_tar (root, tar, &bytes, err);
  if (r == 0)
    r = session_filesend_file (x->sess, tar, session_transfer_progress, &x->t, err);
  unlink (tar);
  return r;
}

int
dockerfile_transfer_export (solver_job *job, struct dockerfile_build *b, const char *image_id, ps_error **err)
{
  struct session_sources *s = b->session;
  ps_session *sess = session_wait (s->session_id, 0, err);
  if (sess == NULL)
    return ps_error_wrap (err, "send the output to the client");
  const char *name = "exporting to client";
  cleanup_free char *digest = vertex_digest (image_id, name);
  struct export_ctx x = { .job = job, .sess = sess, .src = s };
  x.t = (struct session_transfer){ .job = job, .vertex = digest,
                           .status_id = strcmp (s->output_type, "local") == 0 ? "copying files" : "sending tarball",
                           .started = ps_now_ns () };
  emit_vertex (job, digest, name, x.t.started, 0, NULL);
  int r = rootfs_with_mount (image_id, send_rootfs, &x, err);
  if (r == 0)
    session_transfer_status (&x.t, 0, true);
  emit_vertex (job, digest, name, x.t.started, ps_now_ns (), r < 0 ? (*err)->msg : NULL);
  session_unref (sess);
  return r;
}
