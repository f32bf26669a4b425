/* build.c — POST /build (compat) and POST /libpod/build.
 *
 * The request body (a tar context) is spooled to the build's own directory;
 * dockerfile_plan_new (solver/dockerfile/plan.h) unpacks it there and
 * prepares the build, a dockerfile.v0 job runs it, and the response
 * streams the job's events as JSONMessage lines (BuildKit trace records
 * for version=2). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/log.h"
#include "handlers/build_params.h"
#include "handlers/handlers.h"
#include "handlers/stream.h"
#include "schema/jsonmessage.h"
#include "schema/trace.h"
#include "server/config.h"
#include "solver/dockerfile/plan.h"

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
          return ps_error_set_errno (err, ps_write_errno_status (errno), errno, "store build context");
        }
      data += w;
      len -= (size_t) w;
    }
  return 0;
}

static int
build_complete (struct ps_request *req, ps_error **err)
{
  struct build_state *s = req->state;
  close (s->spool_fd);
  s->spool_fd = -1;
  struct build_request *b = &s->breq;

  struct dockerfile_env env = {
    .job_dir = s->dir,
    .body_path = s->spool_path,
    .state_dir = ps_cfg.state_dir,
    .max_context_bytes = ps_cfg.max_context_bytes,
    .registry_config = http_request_header (req, "X-Registry-Config"),
    .registry_auth = http_request_header (req, "X-Registry-Auth"),
  };
  struct dockerfile_build *plan = NULL;
  if (dockerfile_plan_new (b, &env, &plan, err) < 0)
    return -1;
  /* /build cannot ask for entitlements: as dockerd, network.host comes with
     networkmode=host; security.insecure with the daemon's
     --allow-insecure-entitlement (dockerd would refuse it). */
  if (plan->opts.network && strcmp (plan->opts.network, "host") == 0)
    ps_strv_push (&plan->entitlements, "network.host");
  if (config_check_entitlement ("security.insecure", NULL) == 0)
    ps_strv_push (&plan->entitlements, "security.insecure");
  bool quiet = plan->opts.quiet;
  ps_strv tags = { 0 }; /* for the start line: the plan is the job's once it runs */
  for (size_t i = 0; i < plan->opts.client_tags.n; i++)
    ps_strv_push (&tags, plan->opts.client_tags.v[i]);

  /* A BuildKit-mode build is registered under its buildid, so
     POST /build/cancel?id= finds it. */
  bool v2 = b->version == 2;
  solver_job *job = solver_job_new (v2 && b->buildid && *b->buildid ? b->buildid : s->id, s->dir);
  solver_job_set_kind (job, v2 ? "build (BuildKit mode)" : "build");
  if (v2 && solver_jobs_register (job, err) < 0)
    {
      ps_strv_free (&tags);
      dockerfile_build_free (plan);
      solver_job_unref (job);
      return -1;
    }
  /* Before it runs: the first line about the job is this one. */
  handler_log_job_start (req, job,
                         v2            ? "POST /build?version=2 (BuildKit mode)"
                         : req->libpod ? "POST /libpod/build"
                                       : "POST /build (classic)",
                         NULL, (const char *const *) tags.v);
  ps_strv_free (&tags);
  if (solver_job_start (job, dockerfile_build_run, plan, (void (*) (void *)) dockerfile_build_free, err) < 0)
    {
      if (v2)
        solver_jobs_unregister (job);
      dockerfile_build_free (plan);
      solver_job_unref (job);
      return -1;
    }
  s->dir_owned = false; /* the job removes its directory when it ends */

  struct job_stream_opts so = {
    .encoder = v2 ? schema_trace_encoder_new (quiet) : schema_jsonmessage_encoder_new (!req->libpod, quiet),
    .cancel_on_disconnect = true,
    .content_type = "application/json",
  };
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
