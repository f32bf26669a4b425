/* trace.c — the BuildKit trace encoder.  One event becomes one
 * StatusResponse holding one Vertex, VertexStatus or VertexLog, encoded
 * with protobuf-c from schema/control.proto (BuildKit's field numbers).
 * Timestamps are always set on statuses and logs, as the 20.10 CLI's
 * progress UI expects. */
#include "schema/trace.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"
#include "schema/jsonline.h"

static Google__Protobuf__Timestamp *
ts_new (Google__Protobuf__Timestamp *slot, int64_t ns)
{
  if (ns == 0)
    return NULL;
  google__protobuf__timestamp__init (slot);
  slot->seconds = ns / 1000000000LL;
  slot->nanos = (int32_t) (ns % 1000000000LL);
  return slot;
}

uint8_t *
schema_trace_status_response (const struct solver_event *ev, size_t *len)
{
  Moby__Buildkit__V1__StatusResponse resp = MOBY__BUILDKIT__V1__STATUS_RESPONSE__INIT;
  Moby__Buildkit__V1__Vertex v = MOBY__BUILDKIT__V1__VERTEX__INIT;
  Moby__Buildkit__V1__VertexStatus s = MOBY__BUILDKIT__V1__VERTEX_STATUS__INIT;
  Moby__Buildkit__V1__VertexLog l = MOBY__BUILDKIT__V1__VERTEX_LOG__INIT;
  Google__Protobuf__Timestamp t1, t2, t3;
  Moby__Buildkit__V1__Vertex *vp = &v;
  Moby__Buildkit__V1__VertexStatus *sp = &s;
  Moby__Buildkit__V1__VertexLog *lp = &l;

  switch (ev->kind)
    {
    case SOLVER_EV_VERTEX:
      v.digest = ev->vertex ? ev->vertex : (char *) "";
      v.name = ev->name ? ev->name : (char *) "";
      for (char **p = ev->inputs; p && *p; p++)
        v.n_inputs++;
      v.inputs = ev->inputs;
      v.cached = ev->cached;
      v.started = ts_new (&t1, ev->started_ns);
      v.completed = ts_new (&t2, ev->completed_ns);
      v.error = ev->error ? ev->error : (char *) "";
      resp.n_vertexes = 1;
      resp.vertexes = &vp;
      break;
    case SOLVER_EV_STATUS:
      s.id = ev->status_id ? ev->status_id : (char *) "";
      s.vertex = ev->vertex ? ev->vertex : (char *) "";
      s.name = ev->name ? ev->name : (char *) "";
      s.current = ev->current;
      s.total = ev->total;
      s.timestamp = ts_new (&t1, ev->time_ns);
      s.started = ts_new (&t2, ev->started_ns);
      s.completed = ts_new (&t3, ev->completed_ns);
      resp.n_statuses = 1;
      resp.statuses = &sp;
      break;
    case SOLVER_EV_LOG:
      l.vertex = ev->vertex ? ev->vertex : (char *) "";
      l.timestamp = ts_new (&t1, ev->time_ns);
      l.stream = ev->stream;
      l.msg.data = (uint8_t *) ev->data;
      l.msg.len = ev->len;
      resp.n_logs = 1;
      resp.logs = &lp;
      break;
    default:
      return NULL;
    }
  *len = moby__buildkit__v1__status_response__get_packed_size (&resp);
  uint8_t *buf = xmalloc (*len ? *len : 1);
  moby__buildkit__v1__status_response__pack (&resp, buf);
  return buf;
}

struct trace_encoder
{
  struct event_encoder base;
  struct quiet_hold hold;
};

static void
trace_encode (struct event_encoder *base, const struct solver_event *ev, ps_buf *out)
{
  struct trace_encoder *enc = (struct trace_encoder *) base;
  if (ev->kind == SOLVER_EV_VERTEX || ev->kind == SOLVER_EV_STATUS || ev->kind == SOLVER_EV_LOG)
    {
      size_t len = 0;
      cleanup_free uint8_t *pb = schema_trace_status_response (ev, &len);
      cleanup_free char *b64 = ps_base64_encode (pb, len);
      cJSON *o = cJSON_CreateObject ();
      cJSON_AddStringToObject (o, "id", "moby.buildkit.trace");
      cJSON_AddStringToObject (o, "aux", b64);
      schema_json_append_crlf_line (quiet_hold_progress (&enc->hold, out), o);
      cJSON_Delete (o);
      return;
    }
  if (ev->kind == SOLVER_EV_RESULT)
    {
      quiet_hold_drop (&enc->hold);
      cleanup_free char *id = xasprintf ("sha256:%s", ev->image_id ? ev->image_id : "");
      if (enc->hold.quiet)
        {
          cleanup_free char *line = xasprintf ("%s\n", id);
          cJSON *o = cJSON_CreateObject ();
          cJSON_AddStringToObject (o, "stream", line);
          schema_json_append_crlf_line (out, o);
          cJSON_Delete (o);
          return;
        }
      cJSON *o = cJSON_CreateObject ();
      cJSON_AddStringToObject (o, "id", "moby.image.id");
      cJSON *aux = cJSON_AddObjectToObject (o, "aux");
      cJSON_AddStringToObject (aux, "ID", id);
      schema_json_append_crlf_line (out, o);
      cJSON_Delete (o);
      for (char **t = ev->tags; t && *t; t++)
        {
          cleanup_free char *line = xasprintf ("Successfully tagged %s\n", *t);
          cJSON *s = cJSON_CreateObject ();
          cJSON_AddStringToObject (s, "stream", line);
          schema_json_append_crlf_line (out, s);
          cJSON_Delete (s);
        }
      return;
    }
  if (ev->kind == SOLVER_EV_ERROR)
    quiet_hold_fail (&enc->hold, ev, true, out);
}

static void
trace_free (struct event_encoder *base)
{
  struct trace_encoder *enc = (struct trace_encoder *) base;
  ps_buf_free (&enc->hold.held);
  free (enc);
}

static const struct event_encoder_ops trace_ops = {
  .encode = trace_encode,
  .free = trace_free,
};

struct event_encoder *
schema_trace_encoder_new (bool quiet)
{
  struct trace_encoder *enc = xcalloc (1, sizeof *enc);
  enc->base.ops = &trace_ops;
  enc->hold.quiet = quiet;
  return &enc->base;
}
