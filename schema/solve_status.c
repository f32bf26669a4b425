/* solve_status.c — the /solve line encoder.
 *
 * SolveStatus keys and omission rules follow BuildKit's Go client
 * (client.SolveStatus, `buildctl --progress=rawjson`): empty values are
 * omitted except VertexStatus.current/timestamp and VertexLog.data/
 * timestamp; log bytes are standard base64. */
#include "schema/solve_status.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schema/jsonline.h"

void
schema_time_rfc3339nano (int64_t ns, char *out, size_t outlen)
{
  time_t secs = (time_t) (ns / 1000000000LL);
  long frac = (long) (ns % 1000000000LL);
  struct tm tm;
  gmtime_r (&secs, &tm);
  char base[32];
  strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  if (frac == 0)
    {
      snprintf (out, outlen, "%sZ", base);
      return;
    }
  char digits[16];
  snprintf (digits, sizeof digits, "%09ld", frac);
  size_t n = strlen (digits);
  while (n > 0 && digits[n - 1] == '0')
    digits[--n] = '\0';
  snprintf (out, outlen, "%s.%sZ", base, digits);
}

static void
add_time (cJSON *o, const char *key, int64_t ns)
{
  char buf[48];
  schema_time_rfc3339nano (ns, buf, sizeof buf);
  cJSON_AddStringToObject (o, key, buf);
}

static cJSON *
vertex_json (const struct solver_event *ev)
{
  cJSON *v = cJSON_CreateObject ();
  if (ev->vertex)
    cJSON_AddStringToObject (v, "digest", ev->vertex);
  if (ev->inputs && ev->inputs[0])
    {
      cJSON *in = cJSON_AddArrayToObject (v, "inputs");
      for (char **p = ev->inputs; *p; p++)
        cJSON_AddItemToArray (in, cJSON_CreateString (*p));
    }
  if (ev->name)
    cJSON_AddStringToObject (v, "name", ev->name);
  if (ev->started_ns)
    add_time (v, "started", ev->started_ns);
  if (ev->completed_ns)
    add_time (v, "completed", ev->completed_ns);
  if (ev->cached)
    cJSON_AddTrueToObject (v, "cached");
  if (ev->error && *ev->error)
    {
      cleanup_free char *clean = schema_utf8_sanitize (ev->error, strlen (ev->error));
      cJSON_AddStringToObject (v, "error", clean);
    }
  return v;
}

static cJSON *
status_json (const struct solver_event *ev)
{
  cJSON *s = cJSON_CreateObject ();
  cJSON_AddStringToObject (s, "id", ev->status_id ? ev->status_id : "");
  if (ev->vertex)
    cJSON_AddStringToObject (s, "vertex", ev->vertex);
  if (ev->name)
    cJSON_AddStringToObject (s, "name", ev->name);
  if (ev->total)
    cJSON_AddNumberToObject (s, "total", (double) ev->total);
  cJSON_AddNumberToObject (s, "current", (double) ev->current);
  add_time (s, "timestamp", ev->time_ns);
  if (ev->started_ns)
    add_time (s, "started", ev->started_ns);
  if (ev->completed_ns)
    add_time (s, "completed", ev->completed_ns);
  return s;
}

static cJSON *
log_json (const struct solver_event *ev)
{
  cJSON *l = cJSON_CreateObject ();
  if (ev->vertex)
    cJSON_AddStringToObject (l, "vertex", ev->vertex);
  if (ev->stream)
    cJSON_AddNumberToObject (l, "stream", ev->stream);
  cleanup_free char *b64 = ps_base64_encode (ev->data ? ev->data : "", ev->len);
  cJSON_AddStringToObject (l, "data", b64);
  add_time (l, "timestamp", ev->time_ns);
  return l;
}

/* BuildKit's client.VertexWarning JSON: []byte fields are base64. */
static cJSON *
warning_json (const struct solver_event *ev)
{
  cJSON *w = cJSON_CreateObject ();
  if (ev->vertex)
    cJSON_AddStringToObject (w, "vertex", ev->vertex);
  cJSON_AddNumberToObject (w, "level", (double) ev->level);
  const char *s = ev->warning ? ev->warning : "";
  cleanup_free char *b64 = ps_base64_encode (s, strlen (s));
  cJSON_AddStringToObject (w, "short", b64);
  if (ev->details && ev->details[0])
    {
      cJSON *d = cJSON_AddArrayToObject (w, "detail");
      for (char **p = ev->details; *p; p++)
        {
          cleanup_free char *db64 = ps_base64_encode (*p, strlen (*p));
          cJSON_AddItemToArray (d, cJSON_CreateString (db64));
        }
    }
  if (ev->url && *ev->url)
    cJSON_AddStringToObject (w, "url", ev->url);
  return w;
}

struct solve_encoder
{
  struct event_encoder base;
  char *ref;
};

static void
solve_encode (struct event_encoder *enc, const struct solver_event *ev, ps_buf *out)
{
  const char *ref = ((struct solve_encoder *) enc)->ref;
  cJSON *line = cJSON_CreateObject ();
  switch (ev->kind)
    {
    case SOLVER_EV_VERTEX:
    case SOLVER_EV_STATUS:
    case SOLVER_EV_LOG:
      {
        cJSON *st = cJSON_AddObjectToObject (line, "status");
        const char *key = ev->kind == SOLVER_EV_VERTEX ? "vertexes" : ev->kind == SOLVER_EV_STATUS ? "statuses" : "logs";
        cJSON *arr = cJSON_AddArrayToObject (st, key);
        cJSON_AddItemToArray (arr, ev->kind == SOLVER_EV_VERTEX   ? vertex_json (ev)
                                   : ev->kind == SOLVER_EV_STATUS ? status_json (ev)
                                                                  : log_json (ev));
        break;
      }
    case SOLVER_EV_WARNING:
      {
        cJSON *st = cJSON_AddObjectToObject (line, "status");
        cJSON_AddItemToArray (cJSON_AddArrayToObject (st, "warnings"), warning_json (ev));
        break;
      }
    case SOLVER_EV_RESULT:
      {
        cJSON *r = cJSON_AddObjectToObject (line, "result");
        if (ref)
          cJSON_AddStringToObject (r, "ref", ref);
        cJSON *resp = cJSON_AddObjectToObject (r, "exporterResponse");
        for (char **p = ev->response; p && p[0] && p[1]; p += 2)
          cJSON_AddStringToObject (resp, p[0], p[1]);
        break;
      }
    case SOLVER_EV_ERROR:
      {
        cJSON *e = cJSON_AddObjectToObject (line, "error");
        const char *msg = ev->error ? ev->error : "solve failed";
        cleanup_free char *clean = schema_utf8_sanitize (msg, strlen (msg));
        cJSON_AddStringToObject (e, "message", clean);
        if (ev->vertex)
          cJSON_AddStringToObject (e, "vertex", ev->vertex);
        if (ev->exit_code > 0)
          cJSON_AddNumberToObject (e, "exitCode", ev->exit_code);
        break;
      }
    case SOLVER_EV_TEXT:
      cJSON_Delete (line);
      return;
    }
  schema_json_append_line (out, line);
  cJSON_Delete (line);
}

static void
solve_free (struct event_encoder *enc)
{
  struct solve_encoder *e = (struct solve_encoder *) enc;
  free (e->ref);
  free (e);
}

static const struct event_encoder_ops solve_ops = {
  .encode = solve_encode,
  .free = solve_free,
};

struct event_encoder *
schema_solve_encoder_new (const char *ref)
{
  struct solve_encoder *e = xcalloc (1, sizeof *e);
  e->base.ops = &solve_ops;
  e->ref = ref ? xstrdup (ref) : NULL;
  return &e->base;
}
