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
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "handlers/build_params.h"
#include "handlers/handlers.h"
#include "handlers/stream.h"
#include "schema/jsonmessage.h"
#include "schema/trace.h"
#include "server/config.h"
#include "solver/context.h"
#include "solver/dockerfile/build.h"
#include "solver/registry_auth.h"
#include "solver/session_sources.h"

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
  http_request_query_all (req, &q);
  int r = build_params_parse (q.items, q.n, req->libpod, &s->breq, err);
  ps_kv_list_free (&q);
  if (r < 0)
    return -1;

  if (s->breq.use_session_context && (s->breq.version != 2 || s->breq.session == NULL || !*s->breq.session))
    return ps_error_set (err, 400, "remote=client-session needs version=2 and a session id from POST /session");
  if (s->breq.output_type && !s->breq.use_session_context)
    return ps_error_set (err, 400, "outputs of type %s are sent to the client over its session: they need "
                                   "remote=client-session and a session id", s->breq.output_type);

  /* Podman's libpod endpoint takes only tar bodies; compat takes anything
     and sniffs the bytes. */
  const char *ct = http_request_header (req, "Content-Type");
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
  struct session_sources *session = NULL;
  if (b->use_session_context)
    {
      /* The sources come over the session, inside the job (their transfers
         are the first vertices of the build). */
      session = session_sources_new (b->session, ps_cfg.state_dir, s->dir,
                                     b->dockerfile_param.n ? b->dockerfile_param.v[0] : NULL);
      session->output_type = b->output_type ? xstrdup (b->output_type) : NULL;
      session->max_context_bytes = ps_cfg.max_context_bytes;
    }
  else if (b->opts.remote == NULL)
    {
      cleanup_close int fd = open (s->spool_path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        return ps_error_set_errno (err, 500, errno, "open %s", s->spool_path);
      struct ps_context_limits lim = { ps_cfg.max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
      struct ps_context_stats stats = { 0 };
      if (context_extract_fd (fd, ctx, &lim, &stats, err) < 0)
        return -1; /* its messages name the build context already */
      context_bytes = stats.bytes;
      if (resolve_dockerfiles (s, ctx, err) < 0)
        return -1;
      const char *df = b->opts.dockerfiles.n > 0 && !is_url (b->opts.dockerfiles.v[0]) ? b->opts.dockerfiles.v[0] : NULL;
      if (context_apply_ignore (ctx, df, &b->excludes, err) < 0 || move_secrets (s, ctx, err) < 0)
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
  int have_auth = registry_auth_write (http_request_header (req, "X-Registry-Config"),
                                       http_request_header (req, "X-Registry-Auth"), authfile, err);
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
  job_input->session = session;

  bool quiet = job_input->opts.quiet;
  /* A BuildKit-mode build is registered under its buildid, so
     POST /build/cancel?id= finds it. */
  bool v2 = b->version == 2;
  solver_job *job = solver_job_new (v2 && b->buildid && *b->buildid ? b->buildid : s->id, s->dir);
  solver_job_set_kind (job, v2 ? "build (BuildKit mode)" : "build");
  if (v2 && solver_jobs_register (job, err) < 0)
    {
      dockerfile_build_free (job_input);
      solver_job_unref (job);
      return -1;
    }
  if (solver_job_start (job, dockerfile_build_run, job_input, dockerfile_build_free_cb, err) < 0)
    {
      if (v2)
        solver_jobs_unregister (job);
      dockerfile_build_free (job_input);
      solver_job_unref (job);
      return -1;
    }
  s->dir_owned = false; /* the job removes its directory when it ends */
  ps_info ("build %s: started (%s endpoint)", s->id, req->libpod ? "libpod" : "compat");

  struct job_stream_opts so = {
    .cancel_on_disconnect = true,
    .content_type = "application/json",
  };
  so.encoder = v2 ? schema_trace_encoder_new (quiet) : schema_jsonmessage_encoder_new (!req->libpod, quiet);
  return handler_stream_job (req, job, &so); /* the creator's job reference moves to the stream */
}

const struct ps_handler handler_build = {
  .on_begin = build_begin,
  .on_body = build_body,
  .on_complete = build_complete,
};

/* POST /build/cancel?id=<buildid>: what the docker CLI sends on Ctrl-C in
   BuildKit mode. */
static int
cancel_complete (struct ps_request *req, ps_error **err)
{
  const char *id = http_request_query (req, "id");
  if (id == NULL || *id == '\0')
    return ps_error_set (err, 400, "failed to parse query parameter 'id': \"\": missing build id");
  solver_job *job = solver_jobs_lookup (id);
  if (job == NULL)
    return ps_error_set (err, 404, "no build with id %s", id);
  solver_job_cancel (job, "cancelled by POST /build/cancel");
  solver_job_unref (job);
  return http_respond (req, 200, "text/plain; charset=utf-8", "", 0, NULL);
}

const struct ps_handler handler_build_cancel = { .on_complete = cancel_complete };
