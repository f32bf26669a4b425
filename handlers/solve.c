/* solve.c — POST /solve and the job routes under /solve/{ref}.
 *
 * The body is either a JSON SolveRequest or multipart/form-data with a
 * "request" part (that JSON) and one tar part per local source ("context",
 * "dockerfile", named contexts), so curl alone can build.  Everything that
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
#include "handlers/stream.h"
#include "schema/solve_request.h"
#include "schema/solve_status.h"
#include "server/config.h"
#include "solver/context.h"
#include "solver/registry_auth.h"
#include "solver/llb.h"
#include "solver/solve.h"

struct part
{
  char *name;
  char *path; /* spooled bytes */
  int fd;
  uint64_t size;
};

struct solve_state
{
  char *dir;         /* <state>/solves/<id> */
  bool dir_owned;
  bool multipart;
  ps_buf json;       /* the JSON body, or the "request" part */
  ps_buf definition; /* a "definition" part: raw pb.Definition bytes */
  bool has_definition_part;
  struct MHD_PostProcessor *pp;
  struct part *parts;
  size_t n_parts;
  ps_error *body_err; /* first error met while reading multipart data */
  uint64_t total;
};

static void
solve_state_free (void *p)
{
  struct solve_state *s = p;
  if (s->pp)
    MHD_destroy_post_processor (s->pp);
  for (size_t i = 0; i < s->n_parts; i++)
    {
      if (s->parts[i].fd >= 0)
        close (s->parts[i].fd);
      free (s->parts[i].name);
      free (s->parts[i].path);
    }
  free (s->parts);
  ps_buf_free (&s->json);
  ps_buf_free (&s->definition);
  ps_error_free (s->body_err);
  if (s->dir_owned)
    ps_rm_rf (s->dir, NULL);
  free (s->dir);
  free (s);
}

static bool
valid_part_name (const char *n)
{
  size_t len = strlen (n);
  if (len == 0 || len > PS_MAX_PART_NAME || n[0] == '.')
    return false;
  for (size_t i = 0; i < len; i++)
    if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9')
          || n[i] == '-' || n[i] == '_' || n[i] == '.'))
      return false;
  return true;
}

static int
append_json (struct solve_state *s, const char *data, size_t len, ps_error **err)
{
  if (s->json.len + len > PS_MAX_SOLVE_REQUEST)
    return ps_error_set (err, 413, "the solve request is larger than %d bytes", PS_MAX_SOLVE_REQUEST);
  ps_buf_append (&s->json, data, len);
  return 0;
}

/* MHD's multipart iterator: each call carries a piece of one part. */
static enum MHD_Result
on_part_data (void *cls, enum MHD_ValueKind kind, const char *key, const char *filename, const char *content_type,
              const char *transfer_encoding, const char *data, uint64_t off, size_t size)
{
  struct solve_state *s = cls;
  if (s->body_err)
    return MHD_NO;
  if (strcmp (key, "request") == 0)
    return append_json (s, data, size, &s->body_err) < 0 ? MHD_NO : MHD_YES;
  if (strcmp (key, "definition") == 0)
    {
      /* A raw pb.Definition (application/x-protobuf), kept in memory. */
      if (s->definition.len + size > PS_MAX_LLB_BYTES)
        {
          ps_error_set (&s->body_err, 413, "the definition part is larger than %d bytes", PS_MAX_LLB_BYTES);
          return MHD_NO;
        }
      ps_buf_append (&s->definition, data, size);
      s->has_definition_part = true;
      return MHD_YES;
    }

  struct part *p = s->n_parts ? &s->parts[s->n_parts - 1] : NULL;
  if (p == NULL || off == 0 || strcmp (p->name, key) != 0)
    {
      if (!valid_part_name (key))
        {
          ps_error_set (&s->body_err, 400, "multipart part \"%s\": names are 1-%d characters of [A-Za-z0-9._-]",
                        key, PS_MAX_PART_NAME);
          return MHD_NO;
        }
      for (size_t i = 0; i < s->n_parts; i++)
        if (strcmp (s->parts[i].name, key) == 0)
          {
            ps_error_set (&s->body_err, 400, "multipart part \"%s\" is sent twice", key);
            return MHD_NO;
          }
      if (s->n_parts >= PS_MAX_MULTIPART_PARTS)
        {
          ps_error_set (&s->body_err, 413, "more than %d multipart parts", PS_MAX_MULTIPART_PARTS);
          return MHD_NO;
        }
      if (p && p->fd >= 0)
        {
          close (p->fd);
          p->fd = -1;
        }
      s->parts = xrealloc (s->parts, (s->n_parts + 1) * sizeof *s->parts);
      p = &s->parts[s->n_parts++];
      p->name = xstrdup (key);
      p->path = xasprintf ("%s/parts/%s.tar", s->dir, key);
      p->size = 0;
      p->fd = open (p->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (p->fd < 0)
        {
          ps_error_set_errno (&s->body_err, 500, errno, "store part %s", key);
          return MHD_NO;
        }
    }
  s->total += size;
  if (s->total > ps_cfg.max_context_bytes)
    {
      ps_error_set (&s->body_err, 413, "build context exceeds --max-context-bytes (%llu bytes)",
                    (unsigned long long) ps_cfg.max_context_bytes);
      return MHD_NO;
    }
  while (size > 0)
    {
      ssize_t w = write (p->fd, data, size);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          ps_error_set_errno (&s->body_err, 500, errno, "store part %s", key);
          return MHD_NO;
        }
      data += w;
      size -= (size_t) w;
      p->size += (uint64_t) w;
    }
  return MHD_YES;
}

static int
solve_begin (struct ps_request *req, ps_error **err)
{
  struct solve_state *s = xcalloc (1, sizeof *s);
  req->state = s;
  req->state_free = solve_state_free;

  const char *ct = ps_request_header (req, "Content-Type");
  size_t n = ct ? strcspn (ct, "; ") : 0;
  if (ct && n == 19 && strncasecmp (ct, "multipart/form-data", n) == 0)
    s->multipart = true;
  else if (!(ct && n == 16 && strncasecmp (ct, "application/json", n) == 0))
    return ps_error_set (err, 415, "Content-Type %s is not supported (use application/json, or multipart/form-data "
                                   "with a \"request\" part and tar parts)", ct ? ct : "(none)");

  char hex[17];
  ps_random_hex (hex, 8);
  s->dir = xasprintf ("%s/solves/%s", ps_cfg.state_dir, hex);
  cleanup_free char *parts = xasprintf ("%s/parts", s->dir);
  if (ps_mkdir_p (parts, 0700, err) < 0)
    return -1;
  s->dir_owned = true;
  if (s->multipart)
    {
      s->pp = MHD_create_post_processor (req->conn, 64 * 1024, on_part_data, s);
      if (s->pp == NULL)
        return ps_error_set (err, 400, "multipart/form-data without a boundary");
    }
  return 0;
}

static int
solve_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  struct solve_state *s = req->state;
  if (!s->multipart)
    return append_json (s, data, len, err);
  if (MHD_post_process (s->pp, data, len) != MHD_YES)
    {
      if (s->body_err)
        {
          *err = s->body_err;
          s->body_err = NULL;
          return -1;
        }
      return ps_error_set (err, 400, "malformed multipart/form-data body");
    }
  return 0;
}

/* Unpack every tar part into sources/<name>. */
static int
unpack_sources (struct solve_state *s, struct solve_source **out, size_t *n, ps_error **err)
{
  struct solve_source *src = xcalloc (s->n_parts + 1, sizeof *src);
  *out = src;
  *n = 0;
  for (size_t i = 0; i < s->n_parts; i++)
    {
      struct part *p = &s->parts[i];
      if (p->fd >= 0)
        {
          close (p->fd);
          p->fd = -1;
        }
      cleanup_free char *dir = xasprintf ("%s/sources/%s", s->dir, p->name);
      if (ps_mkdir_p (dir, 0700, err) < 0)
        return -1;
      cleanup_close int fd = open (p->path, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        return ps_error_set_errno (err, 500, errno, "open part %s", p->name);
      struct ps_context_limits lim = { ps_cfg.max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
      struct ps_context_stats stats = { 0 };
      if (ps_context_extract_fd (fd, dir, &lim, &stats, err) < 0)
        return ps_error_wrap (err, "multipart part \"%s\"", p->name);
      unlink (p->path);
      src[*n].name = xstrdup (p->name);
      src[*n].dir = xstrdup (dir);
      src[*n].bytes = p->size;
      (*n)++;
    }
  return 0;
}

static void
encode_solve (const struct solver_event *ev, void *ctx, ps_buf *out)
{
  schema_solve_encode (ev, ctx, out);
}

static int
solve_complete (struct ps_request *req, ps_error **err)
{
  struct solve_state *s = req->state;
  if (s->multipart)
    {
      MHD_destroy_post_processor (s->pp);
      s->pp = NULL;
      if (s->body_err)
        {
          *err = s->body_err;
          s->body_err = NULL;
          return -1;
        }
      if (s->json.len == 0)
        return ps_error_set (err, 400, "multipart body has no \"request\" part (the JSON SolveRequest)");
    }
  if (s->json.len == 0)
    return ps_error_set (err, 400, "empty request body: send a JSON SolveRequest");

  struct solve_request sr;
  if (schema_solve_request_parse (s->json.data, s->json.len, s->has_definition_part, &sr, err) < 0)
    return -1;

  struct solve_source *sources = NULL;
  size_t n_sources = 0;
  int ret = unpack_sources (s, &sources, &n_sources, err);
  cleanup_free char *authfile = xasprintf ("%s/auth.json", s->dir);
  int have_auth = 0;
  if (ret == 0)
    {
      have_auth = registry_auth_write (ps_request_header (req, "X-Registry-Config"),
                                       ps_request_header (req, "X-Registry-Auth"), authfile, err);
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
        .definition = s->has_definition_part ? (const uint8_t *) s->definition.data : NULL,
        .definition_len = s->definition.len,
      };
      ret = solve_plan_new (&sr, &env, &plan, err);
    }
  for (size_t i = 0; i < n_sources; i++)
    {
      free (sources[i].name);
      free (sources[i].dir);
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
  if (solver_job_start (job, solve_run, plan, (void (*) (void *)) solve_plan_free, err) < 0)
    {
      solver_jobs_unregister (job);
      solve_plan_free (plan);
      solver_job_unref (job);
      return -1;
    }
  s->dir_owned = false; /* the job owns its directory now */
  ps_info ("solve %s: started", solver_job_id (job));

  const char *headers[] = { "Podsolve-Solve-Ref", solver_job_id (job), NULL };
  struct job_stream_opts so = {
    .encode = encode_solve,
    .ctx = xstrdup (solver_job_id (job)),
    .ctx_free = free,
    .cancel_on_disconnect = !detach,
    .content_type = "application/x-ndjson",
    .headers = headers,
  };
  return handler_stream_job (req, job, &so);
}

const struct ps_handler handler_solve = {
  .on_begin = solve_begin,
  .on_body = solve_body,
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
  int r = ps_respond_json (req, status, text);
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
    .encode = encode_solve,
    .ctx = xstrdup (solver_job_id (job)),
    .ctx_free = free,
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
    return MHD_CONTENT_READER_END_OF_STREAM;
  return r < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : r;
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
          ret = ps_respond_stream (req, 200, "application/x-tar", headers, file_read, (void *) (intptr_t) fd,
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
