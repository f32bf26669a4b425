/* solve.c — POST /solve and the job routes under /solve/{ref}.
 *
 * The body is either a JSON SolveRequest or multipart/form-data with a
 * "request" part (that JSON) and one tar part per local source ("context",
 * "dockerfile", named contexts), so curl alone can build (read by
 * handlers/solve_body.c).  Everything that
 * can be wrong with a request is answered before streaming, with Podman's
 * error body; after that the NDJSON stream ends in one result or error. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "handlers/handlers.h"
#include "handlers/solve_body.h"
#include "handlers/stream.h"
#include "schema/solve_request.h"
#include "schema/solve_status.h"
#include "server/config.h"
#include "solver/context.h"
#include "solver/registry_auth.h"
#include "solver/llb/llb.h"
#include "solver/solve.h"

struct solve_state
{
  char *dir; /* <state>/solves/<id> */
  bool dir_owned;
  struct solve_body *body;
};

static void
solve_state_free (void *p)
{
  struct solve_state *s = p;
  solve_body_free (s->body);
  if (s->dir_owned)
    ps_rm_rf (s->dir, NULL);
  free (s->dir);
  free (s);
}

static int
solve_begin (struct ps_request *req, ps_error **err)
{
  struct solve_state *s = xcalloc (1, sizeof *s);
  req->state = s;
  req->state_free = solve_state_free;

  char hex[17];
  ps_random_hex (hex, 8);
  cleanup_free char *dir = xasprintf ("%s/solves/%s", ps_cfg.state_dir, hex);
  s->body = solve_body_new (http_request_header (req, "Content-Type"), dir, ps_cfg.max_context_bytes, err);
  if (s->body == NULL)
    return -1;
  s->dir = steal_pointer (&dir);
  cleanup_free char *parts = xasprintf ("%s/parts", s->dir);
  if (ps_mkdir_p (parts, 0700, err) < 0)
    return -1;
  s->dir_owned = true;
  return 0;
}

static int
solve_on_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  struct solve_state *s = req->state;
  return solve_body_feed (s->body, data, len, err);
}

static int
solve_complete (struct ps_request *req, ps_error **err)
{
  struct solve_state *s = req->state;
  if (solve_body_finish (s->body, err) < 0)
    return -1;
  size_t json_len = 0, def_len = 0;
  const char *json = solve_body_json (s->body, &json_len);
  const uint8_t *definition = solve_body_definition (s->body, &def_len);

  struct solve_request sr;
  if (schema_solve_request_parse (json, json_len, definition != NULL, &sr, err) < 0)
    return -1;
  for (size_t i = 0; i < sr.entitlements.n; i++)
    if (config_check_entitlement (sr.entitlements.v[i], err) < 0)
      {
        schema_solve_request_free (&sr);
        return -1;
      }

  struct solve_source *sources = NULL;
  size_t n_sources = 0;
  int ret = solve_body_sources (s->body, &sources, &n_sources);
  cleanup_free char *authfile = xasprintf ("%s/auth.json", s->dir);
  int have_auth = 0;
  if (ret == 0)
    {
      have_auth = registry_auth_write (http_request_header (req, "X-Registry-Config"),
                                       http_request_header (req, "X-Registry-Auth"), authfile, err);
      ret = have_auth < 0 ? -1 : 0;
    }
  struct solve_plan *plan = NULL;
  cleanup_free char *ref = sr.ref ? xstrdup (sr.ref) : NULL;
  bool detach = sr.detach;
  const char *kind = sr.has_definition ? "llb" : "dockerfile.v0";
  if (ret == 0)
    {
      struct solve_env env = {
        .job_dir = s->dir,
        .sources = sources,
        .n_sources = n_sources,
        .output_roots = &ps_cfg.output_roots,
        .authfile = have_auth > 0 ? authfile : NULL,
        .state_dir = ps_cfg.state_dir,
        .max_context_bytes = ps_cfg.max_context_bytes,
        .definition = definition,
        .definition_len = def_len,
      };
      ret = solve_plan_new (&sr, &env, &plan, err);
    }
  for (size_t i = 0; i < n_sources; i++)
    {
      free (sources[i].name);
      free (sources[i].dir);
      free (sources[i].tar);
    }
  free (sources);
  schema_solve_request_free (&sr);
  if (ret < 0)
    return -1;

  solver_jobs_expire ((int64_t) ps_cfg.job_ttl_s * 1000);
  solver_job *job = solver_job_new (ref, s->dir);
  solver_job_set_kind (job, kind);
  if (solver_jobs_register (job, err) < 0)
    {
      solve_plan_free (plan);
      solver_job_unref (job);
      return -1;
    }
  handler_log_job_start (req, job, "POST /solve", NULL, NULL);
  if (solver_job_start (job, solve_run, plan, (void (*) (void *)) solve_plan_free, err) < 0)
    {
      solver_jobs_unregister (job);
      solve_plan_free (plan);
      solver_job_unref (job);
      return -1;
    }
  s->dir_owned = false; /* the job owns its directory now */

  const char *headers[] = { "Podsolve-Solve-Ref", solver_job_id (job), NULL };
  struct job_stream_opts so = {
    .encoder = schema_solve_encoder_new (solver_job_id (job)),
    .cancel_on_disconnect = !detach,
    .content_type = "application/x-ndjson",
    .headers = headers,
  };
  return handler_stream_job (req, job, &so);
}

const struct ps_handler handler_solve = {
  .on_begin = solve_begin,
  .on_body = solve_on_body,
  .on_complete = solve_complete,
};

/* ---- job routes ----------------------------------------------------------------- */

static void
add_time (cJSON *o, const char *key, int64_t ns)
{
  if (ns == 0)
    return;
  char buf[48];
  schema_time_rfc3339nano (ns, buf, sizeof buf);
  cJSON_AddStringToObject (o, key, buf);
}

static cJSON *
job_json (solver_job *job, bool detail)
{
  struct solver_job_summary sum;
  solver_job_summarize (job, &sum);
  cJSON *o = cJSON_CreateObject ();
  cJSON_AddStringToObject (o, "ref", sum.ref);
  cJSON_AddStringToObject (o, "state", solver_job_state_name (sum.state));
  cJSON_AddStringToObject (o, "frontend", sum.kind);
  add_time (o, "created", sum.created_ns);
  add_time (o, "started", sum.started_ns);
  add_time (o, "completed", sum.finished_ns);
  if (sum.finished_ns && sum.started_ns)
    cJSON_AddNumberToObject (o, "durationSeconds", (double) (sum.finished_ns - sum.started_ns) / 1e9);
  const char *outcome = sum.state == SOLVER_JOB_SUCCEEDED ? "success"
                        : sum.state == SOLVER_JOB_FAILED    ? "failure"
                        : sum.state == SOLVER_JOB_CANCELLED ? "cancelled"
                        : sum.state == SOLVER_JOB_INTERRUPTED ? "interrupted"
                                                              : NULL;
  if (outcome)
    cJSON_AddStringToObject (o, "outcome", outcome);
  if (sum.error)
    cJSON_AddStringToObject (o, "error", sum.error);
  /* The names the result was given (the image exporter's image.name):
     what `podsolve ls` shows beside the ref. */
  for (char **p = sum.response; p && p[0] && p[1]; p += 2)
    if (strcmp (p[0], "image.name") == 0 && *p[1])
      cJSON_AddStringToObject (o, "image", p[1]);
  if (detail)
    {
      cJSON *resp = cJSON_AddObjectToObject (o, "exporterResponse");
      for (char **p = sum.response; p && p[0] && p[1]; p += 2)
        cJSON_AddStringToObject (resp, p[0], p[1]);
      cJSON *outs = cJSON_AddArrayToObject (o, "outputs");
      for (size_t i = 0; i < sum.n_outputs; i++)
        {
          cJSON *x = cJSON_CreateObject ();
          cJSON_AddNumberToObject (x, "index", (double) i);
          cJSON_AddNumberToObject (x, "exporter", (double) sum.outputs[i].exporter);
          cJSON_AddStringToObject (x, "type", sum.outputs[i].type);
          cJSON_AddNumberToObject (x, "size", (double) sum.outputs[i].size);
          cleanup_free char *url = xasprintf ("/solve/%s/outputs/%zu", sum.ref, i);
          cJSON_AddStringToObject (x, "url", url);
          cJSON_AddItemToArray (outs, x);
        }
    }
  solver_job_summary_free (&sum);
  return o;
}

static int
respond_cjson (struct ps_request *req, unsigned status, cJSON *o)
{
  char *text = cJSON_PrintUnformatted (o);
  cJSON_Delete (o);
  int r = http_respond_json (req, status, text);
  cJSON_free (text);
  return r;
}

static solver_job *
lookup (struct ps_request *req, ps_error **err)
{
  solver_jobs_expire ((int64_t) ps_cfg.job_ttl_s * 1000);
  solver_job *job = solver_jobs_lookup (req->params[0]);
  if (job == NULL)
    ps_error_set (err, 404, "no solve with ref \"%s\" (finished jobs are kept for %u s)", req->params[0],
                  ps_cfg.job_ttl_s);
  return job;
}

static int
list_complete (struct ps_request *req, ps_error **err)
{
  solver_jobs_expire ((int64_t) ps_cfg.job_ttl_s * 1000);
  size_t n = 0;
  solver_job **jobs = solver_jobs_list (&n);
  cJSON *arr = cJSON_CreateArray ();
  for (size_t i = 0; i < n; i++)
    cJSON_AddItemToArray (arr, job_json (jobs[i], false));
  solver_jobs_list_free (jobs, n);
  return respond_cjson (req, 200, arr);
}

static int
inspect_complete (struct ps_request *req, ps_error **err)
{
  solver_job *job = lookup (req, err);
  if (job == NULL)
    return -1;
  cJSON *o = job_json (job, true);
  solver_job_unref (job);
  return respond_cjson (req, 200, o);
}

static int
status_complete (struct ps_request *req, ps_error **err)
{
  solver_job *job = lookup (req, err);
  if (job == NULL)
    return -1;
  const char *headers[] = { "Podsolve-Solve-Ref", req->params[0], NULL };
  struct job_stream_opts so = {
    .encoder = schema_solve_encoder_new (solver_job_id (job)),
    .cancel_on_disconnect = false, /* a watcher leaving does not stop the build */
    .content_type = "application/x-ndjson",
    .headers = headers,
  };
  return handler_stream_job (req, job, &so);
}

static int
cancel_complete (struct ps_request *req, ps_error **err)
{
  solver_job *job = lookup (req, err);
  if (job == NULL)
    return -1;
  solver_job_cancel (job, "cancelled by POST /solve/{ref}/cancel");
  solver_job_wait (job);
  cJSON *o = job_json (job, false);
  solver_job_unref (job);
  return respond_cjson (req, 200, o);
}

static ssize_t
file_read (void *cls, uint64_t pos, char *buf, size_t max)
{
  int fd = (int) (intptr_t) cls;
  ssize_t r = pread (fd, buf, max, (off_t) pos);
  if (r == 0)
    return HTTP_STREAM_END;
  return r < 0 ? HTTP_STREAM_ERROR : r;
}

static void
file_done (void *cls)
{
  close ((int) (intptr_t) cls);
}

static int
output_complete (struct ps_request *req, ps_error **err)
{
  solver_job *job = lookup (req, err);
  if (job == NULL)
    return -1;
  struct solver_job_summary sum;
  solver_job_summarize (job, &sum);
  solver_job_unref (job);
  char *end = NULL;
  unsigned long idx = strtoul (req->params[1], &end, 10);
  int ret;
  if (*end != '\0' || idx >= sum.n_outputs)
    ret = ps_error_set (err, 404, "solve %s has no output %s (it kept %zu)", sum.ref, req->params[1], sum.n_outputs);
  else
    {
      int fd = open (sum.outputs[idx].path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        ret = ps_error_set_errno (err, 404, errno, "output %lu of solve %s", idx, sum.ref);
      else
        {
          cleanup_free char *disp = xasprintf ("attachment; filename=\"%s-%lu-%s.tar\"", sum.ref, idx,
                                               sum.outputs[idx].type);
          const char *headers[] = { "Content-Disposition", disp, NULL };
          ret = http_respond_stream (req, 200, "application/x-tar", headers, file_read, (void *) (intptr_t) fd,
                                   file_done);
        }
    }
  solver_job_summary_free (&sum);
  return ret;
}

const struct ps_handler handler_solve_list = { .on_complete = list_complete };
const struct ps_handler handler_solve_inspect = { .on_complete = inspect_complete };
const struct ps_handler handler_solve_status = { .on_complete = status_complete };
const struct ps_handler handler_solve_cancel = { .on_complete = cancel_complete };
const struct ps_handler handler_solve_output = { .on_complete = output_complete };
