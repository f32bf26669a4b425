/* build.c — POST /build (compat) and POST /libpod/build.
 *
 * The request body (a tar context) is spooled to the build's own directory,
 * unpacked there safely, the ignore file applied, and a dockerfile.v0 job
 * started; the response streams the job's events as JSONMessage lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "handlers/build_params.h"
#include "handlers/handlers.h"
#include "schema/jsonmessage.h"
#include "server/config.h"
#include "solver/context.h"
#include "solver/dockerfile_build.h"
#include "solver/registry_auth.h"

struct build_state
{
  struct build_request breq;
  char *id;
  char *dir;        /* <state-dir>/builds/<id>; removed with the job */
  char *spool_path; /* the uploaded body */
  int spool_fd;
  bool dir_owned;   /* still ours to remove (no job took it over) */
};

static void
build_state_free (void *p)
{
  struct build_state *s = p;
  if (s->spool_fd >= 0)
    close (s->spool_fd);
  if (s->dir_owned && s->dir)
    {
      ps_error *err = NULL;
      if (ps_rm_rf (s->dir, &err) < 0)
        {
          ps_warn ("cannot remove %s: %s", s->dir, err->msg);
          ps_error_free (err);
        }
    }
  build_request_free (&s->breq);
  free (s->id);
  free (s->dir);
  free (s->spool_path);
  free (s);
}

static bool
content_type_is_tar (const char *ct)
{
  if (ct == NULL || *ct == '\0')
    return true;
  size_t n = strcspn (ct, "; ");
  return (n == 17 && strncasecmp (ct, "application/x-tar", n) == 0)
         || (n == 15 && strncasecmp (ct, "application/tar", n) == 0);
}

static int
build_begin (struct ps_request *req, ps_error **err)
{
  struct build_state *s = xcalloc (1, sizeof *s);
  s->spool_fd = -1;
  req->state = s;
  req->state_free = build_state_free;
  build_request_init (&s->breq);

  struct ps_kv_list q;
  ps_request_query_all (req, &q);
  int r = build_params_parse (q.items, q.n, req->libpod, &s->breq, err);
  ps_kv_list_free (&q);
  if (r < 0)
    return -1;

  if (s->breq.version == 2)
    return ps_error_set (err, 400,
                         "BuildKit builds (version=2) need the /session endpoint, which this podsolved "
                         "does not serve; build with DOCKER_BUILDKIT=0");

  /* Podman's libpod endpoint takes only tar bodies; compat takes anything
     and sniffs the bytes. */
  const char *ct = ps_request_header (req, "Content-Type");
  if (req->libpod && !content_type_is_tar (ct))
    return ps_error_set (err, 400, "Content-Type: %s is not supported. Should be \"application/x-tar\"", ct);

  char hex[17];
  ps_random_hex (hex, 8);
  s->id = xstrdup (hex);
  s->dir = xasprintf ("%s/builds/%s", ps_cfg.state_dir, s->id);
  if (ps_mkdir_p (s->dir, 0700, err) < 0)
    return ps_error_wrap (err, "create build directory");
  s->dir_owned = true;
  s->spool_path = xasprintf ("%s/body", s->dir);
  s->spool_fd = open (s->spool_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (s->spool_fd < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", s->spool_path);
  return 0;
}

static int
build_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  struct build_state *s = req->state;
  if (req->body_bytes > ps_cfg.max_context_bytes)
    return ps_error_set (err, 413, "build context exceeds --max-context-bytes (%llu bytes)",
                         (unsigned long long) ps_cfg.max_context_bytes);
  while (len > 0)
    {
      ssize_t w = write (s->spool_fd, data, len);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return ps_error_set_errno (err, errno == ENOSPC ? 507 : 500, errno, "store build context");
        }
      data += w;
      len -= (size_t) w;
    }
  return 0;
}

/* Resolve `rel` inside `ctx` without leaving it, even through symlinks;
   returns 1 when it names a regular file, 0 when absent. */
static int
context_file (const char *ctx, const char *rel, ps_error **err)
{
  while (ps_str_has_prefix (rel, "./"))
    rel += 2;
  if (!ps_path_is_contained (rel))
    return ps_error_set (err, 400, "the Dockerfile path \"%s\" must be inside the build context", rel);
  cleanup_free char *full = xasprintf ("%s/%s", ctx, rel);
  char resolved[PATH_MAX], ctxreal[PATH_MAX];
  if (realpath (full, resolved) == NULL)
    return 0;
  if (realpath (ctx, ctxreal) == NULL)
    return ps_error_set_errno (err, 500, errno, "resolve %s", ctx);
  size_t n = strlen (ctxreal);
  if (strncmp (resolved, ctxreal, n) != 0 || resolved[n] != '/')
    return ps_error_set (err, 400, "the Dockerfile path \"%s\" leads outside the build context", rel);
  struct stat st;
  return stat (resolved, &st) == 0 && S_ISREG (st.st_mode) ? 1 : 0;
}

static bool
is_url (const char *s)
{
  return ps_str_has_prefix (s, "http://") || ps_str_has_prefix (s, "https://");
}

/* dockerfile=: compat defaults to Dockerfile and, as users expect, falls
   back to Containerfile; libpod looks for Containerfile, then Dockerfile. */
static int
resolve_dockerfiles (struct build_state *s, const char *ctx, ps_error **err)
{
  struct build_request *b = &s->breq;
  if (b->dockerfile_param.n == 0)
    {
      const char *order_compat[] = { "Dockerfile", "Containerfile" };
      const char *order_libpod[] = { "Containerfile", "Dockerfile" };
      const char **order = b->libpod ? order_libpod : order_compat;
      for (int i = 0; i < 2; i++)
        {
          int r = context_file (ctx, order[i], err);
          if (r < 0)
            return -1;
          if (r == 1)
            {
              ps_strv_push (&b->opts.dockerfiles, order[i]);
              return 0;
            }
        }
      return ps_error_set (err, 400,
                           b->libpod ? "no Containerfile or Dockerfile specified or found in context directory"
                                     : "Cannot locate specified Dockerfile: Dockerfile");
    }
  for (size_t i = 0; i < b->dockerfile_param.n; i++)
    {
      const char *f = b->dockerfile_param.v[i];
      if (is_url (f))
        {
          ps_strv_push (&b->opts.dockerfiles, f);
          continue;
        }
      int r = context_file (ctx, f, err);
      if (r < 0)
        return -1;
      if (r == 0)
        return ps_error_set (err, 400, "Cannot locate specified Dockerfile: %s", f);
      while (ps_str_has_prefix (f, "./"))
        f += 2;
      ps_strv_push (&b->opts.dockerfiles, f);
    }
  return 0;
}

/* The ignore file: excludes= if sent, else <Dockerfile>.dockerignore,
   .containerignore or .dockerignore, the first that exists. */
static int
apply_ignore_file (struct build_state *s, const char *ctx, ps_error **err)
{
  struct build_request *b = &s->breq;
  ps_ignore *ig = NULL;
  const char *ignore_name = NULL;
  cleanup_free char *df_ignore = NULL;

  if (b->excludes.n > 0)
    ig = ps_ignore_from_patterns ((const char *const *) b->excludes.v, b->excludes.n, err);
  else
    {
      const char *df = b->opts.dockerfiles.n > 0 && !is_url (b->opts.dockerfiles.v[0]) ? b->opts.dockerfiles.v[0] : NULL;
      df_ignore = df ? xasprintf ("%s.dockerignore", df) : NULL;
      const char *candidates[] = { df_ignore, ".containerignore", ".dockerignore" };
      for (size_t i = 0; i < ARRAY_SIZE (candidates) && ig == NULL; i++)
        {
          if (candidates[i] == NULL || context_file (ctx, candidates[i], NULL) != 1)
            continue;
          cleanup_free char *path = xasprintf ("%s/%s", ctx, candidates[i]);
          cleanup_free char *text = NULL;
          size_t len = 0;
          if (ps_read_file (path, PS_MAX_PARAM_JSON, &text, &len, err) < 0)
            return ps_error_wrap (err, "read %s", candidates[i]);
          ig = ps_ignore_parse (text, len, err);
          if (ig == NULL)
            return ps_error_wrap (err, "%s", candidates[i]);
          ignore_name = candidates[i];
        }
    }
  if (ig == NULL)
    return b->excludes.n > 0 ? ps_error_wrap (err, "excludes") : 0;

  const char *keep[1 + 3];
  size_t nkeep = 0;
  for (size_t i = 0; i < b->opts.dockerfiles.n && nkeep < 3; i++)
    keep[nkeep++] = b->opts.dockerfiles.v[i];
  if (ignore_name)
    keep[nkeep++] = ignore_name;
  long removed = ps_context_prune (ctx, ig, keep, nkeep, err);
  ps_ignore_free (ig);
  if (removed < 0)
    return ps_error_wrap (err, "apply ignore file");
  ps_debug ("build %s: ignore file removed %ld entries", s->id, removed);
  return 0;
}

/* libpod secrets=["id=X,src=<file in context>"]: podman-remote ships the
   secret inside the context; move it out so no COPY can put it in a layer. */
static int
move_secrets (struct build_state *s, const char *ctx, ps_error **err)
{
  struct build_request *b = &s->breq;
  if (b->secrets_param.n == 0)
    return 0;
  cleanup_free char *sdir = xasprintf ("%s/secrets", s->dir);
  if (ps_mkdir_p (sdir, 0700, err) < 0)
    return -1;
  for (size_t i = 0; i < b->secrets_param.n; i++)
    {
      const char *spec = b->secrets_param.v[i];
      cleanup_free char *id = NULL, *src = NULL;
      cleanup_free char *copy = xstrdup (spec);
      char *save = NULL;
      for (char *f = strtok_r (copy, ",", &save); f; f = strtok_r (NULL, ",", &save))
        {
          if (ps_str_has_prefix (f, "id="))
            id = xstrdup (f + 3);
          else if (ps_str_has_prefix (f, "src="))
            src = xstrdup (f + 4);
        }
      if (id == NULL || src == NULL || *id == '\0' || strchr (id, '/') != NULL)
        return ps_error_set (err, 400, "failed to parse query parameter 'secrets': \"%s\": expected id=ID,src=FILE", spec);
      if (context_file (ctx, src, err) != 1)
        return ps_error_set (err, 400, "secret %s: file %s is not in the build context", id, src);
      cleanup_free char *from = xasprintf ("%s/%s", ctx, src);
      cleanup_free char *to = xasprintf ("%s/%s", sdir, id);
      if (rename (from, to) < 0)
        return ps_error_set_errno (err, 500, errno, "secret %s", id);
      ps_strv_pushf (&b->opts.secrets, "id=%s,src=%s", id, to);
    }
  return 0;
}

/* ---- the response stream -------------------------------------------------- */

struct build_stream
{
  solver_job *job;
  struct jsonmessage_opts opts;
  size_t next_event;
  ps_buf pending;
  size_t sent;
  bool ended;
  int client_fd;
};

static ssize_t
build_stream_read (void *cls, uint64_t pos, char *buf, size_t max)
{
  struct build_stream *st = cls;
  for (;;)
    {
      if (st->sent < st->pending.len)
        {
          /* One JSON line per chunk, flushed as it happens (old clients
             expect a record per read). */
          const char *start = st->pending.data + st->sent;
          const char *nl = memchr (start, '\n', st->pending.len - st->sent);
          size_t n = nl ? (size_t) (nl - start) + 1 : st->pending.len - st->sent;
          if (n > max)
            n = max;
          memcpy (buf, start, n);
          st->sent += n;
          return (ssize_t) n;
        }
      ps_buf_reset (&st->pending);
      st->sent = 0;
      if (st->ended)
        return MHD_CONTENT_READER_END_OF_STREAM;

      bool done = false;
      const struct solver_event *ev = solver_job_next (st->job, st->next_event, PS_STREAM_POLL_MS, &done);
      if (ev != NULL)
        {
          st->next_event++;
          schema_jsonmessage_encode (&st->opts, ev, &st->pending);
          if (ev->kind == SOLVER_EV_RESULT || ev->kind == SOLVER_EV_ERROR)
            st->ended = true;
          continue;
        }
      if (done)
        return MHD_CONTENT_READER_END_OF_STREAM;
      /* Idle: a client that hung up cancels its build.  The fd is valid
         here: MHD calls this reader on the connection's own thread. */
      if (st->client_fd >= 0)
        {
          char c;
          ssize_t r = recv (st->client_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
          if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
}

static void
build_stream_done (void *cls)
{
  struct build_stream *st = cls;
  /* Released before the final event went out: the client left early. */
  if (!st->ended)
    solver_job_cancel (st->job, "the client disconnected");
  solver_job_unref (st->job);
  ps_buf_free (&st->pending);
  free (st);
}

static void
dockerfile_build_free_cb (void *p)
{
  dockerfile_build_free (p);
}

static int
build_complete (struct ps_request *req, ps_error **err)
{
  struct build_state *s = req->state;
  close (s->spool_fd);
  s->spool_fd = -1;
  struct build_request *b = &s->breq;

  cleanup_free char *ctx = xasprintf ("%s/context", s->dir);
  if (ps_mkdir_p (ctx, 0700, err) < 0)
    return -1;
  uint64_t context_bytes = 0;
  if (b->opts.remote == NULL)
    {
      cleanup_close int fd = open (s->spool_path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        return ps_error_set_errno (err, 500, errno, "open %s", s->spool_path);
      struct ps_context_limits lim = { ps_cfg.max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
      struct ps_context_stats stats = { 0 };
      if (ps_context_extract_fd (fd, ctx, &lim, &stats, err) < 0)
        return ps_error_wrap (err, "build context");
      context_bytes = stats.bytes;
      if (resolve_dockerfiles (s, ctx, err) < 0 || apply_ignore_file (s, ctx, err) < 0
          || move_secrets (s, ctx, err) < 0)
        return -1;
      b->opts.context_dir = xstrdup (ctx);
    }
  else
    {
      for (size_t i = 0; i < b->dockerfile_param.n; i++)
        ps_strv_push (&b->opts.dockerfiles, b->dockerfile_param.v[i]);
    }
  unlink (s->spool_path);

  cleanup_free char *authfile = xasprintf ("%s/auth.json", s->dir);
  int have_auth = registry_auth_write (ps_request_header (req, "X-Registry-Config"),
                                       ps_request_header (req, "X-Registry-Auth"), authfile, err);
  if (have_auth < 0)
    return -1;
  if (have_auth > 0)
    b->opts.authfile = xstrdup (authfile);

  struct dockerfile_build *job_input = xcalloc (1, sizeof *job_input);
  const char *df = b->opts.dockerfiles.n > 0 ? b->opts.dockerfiles.v[0] : "Dockerfile";
  job_input->dockerfile_name = xstrdup (df);
  job_input->context_bytes = context_bytes;
  char hex[65];
  cleanup_free char *text = NULL;
  size_t len = 0;
  cleanup_free char *dfpath = b->opts.context_dir ? xasprintf ("%s/%s", b->opts.context_dir, df) : NULL;
  if (dfpath && ps_read_file (dfpath, PS_MAX_DOCKERFILE_BYTES, &text, &len, NULL) == 0)
    ps_sha256_hex (text, len, hex);
  else
    ps_sha256_hex (df, strlen (df), hex);
  job_input->definition_digest = xstrdup (hex);
  job_input->opts = b->opts;
  build_options_init (&b->opts); /* moved into the job */

  struct jsonmessage_opts enc = { .compat = !req->libpod, .quiet = job_input->opts.quiet };
  solver_job *job = solver_job_new (s->id, s->dir);
  if (solver_job_start (job, dockerfile_build_run, job_input, dockerfile_build_free_cb, err) < 0)
    {
      dockerfile_build_free (job_input);
      solver_job_unref (job);
      return -1;
    }
  s->dir_owned = false; /* the job removes its directory when it ends */
  ps_info ("build %s: started (%s endpoint)", s->id, req->libpod ? "libpod" : "compat");

  struct build_stream *st = xcalloc (1, sizeof *st);
  st->job = job; /* the creator's reference moves to the stream */
  st->opts = enc;
  st->client_fd = ps_request_fd (req);
  return ps_respond_stream (req, 200, "application/json", build_stream_read, st, build_stream_done);
}

const struct ps_handler handler_build = {
  .on_begin = build_begin,
  .on_body = build_body,
  .on_complete = build_complete,
};
