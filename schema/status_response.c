/* status_response.c — the StatusResponse builder and the Control.Status
 * encoder.  One event becomes one StatusResponse holding one Vertex,
 * VertexStatus or VertexLog, encoded with protobuf-c from
 * schema/control.proto (BuildKit's field numbers).  Timestamps are always
 * set on statuses and logs, as the 20.10 CLI's progress UI expects. */
#include "schema/status_response.h"

#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"

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
schema_status_response_pack (const struct solver_event *ev, size_t *len)
{
  Moby__Buildkit__V1__StatusResponse resp = MOBY__BUILDKIT__V1__STATUS_RESPONSE__INIT;
  Moby__Buildkit__V1__Vertex v = MOBY__BUILDKIT__V1__VERTEX__INIT;
  Moby__Buildkit__V1__VertexStatus s = MOBY__BUILDKIT__V1__VERTEX_STATUS__INIT;
  Moby__Buildkit__V1__VertexLog l = MOBY__BUILDKIT__V1__VERTEX_LOG__INIT;
  Moby__Buildkit__V1__VertexWarning w = MOBY__BUILDKIT__V1__VERTEX_WARNING__INIT;
  cleanup_free ProtobufCBinaryData *details = NULL;
  Moby__Buildkit__V1__VertexWarning *wp = &w;
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
    case SOLVER_EV_WARNING:
      w.vertex = ev->vertex ? ev->vertex : (char *) "";
      w.level = ev->level;
      w.short_.data = (uint8_t *) ev->warning;
      w.short_.len = ev->warning ? strlen (ev->warning) : 0;
      for (char **p = ev->details; p && *p; p++)
        w.n_detail++;
      details = xcalloc (w.n_detail + 1, sizeof *details);
      w.n_detail = 0;
      for (char **p = ev->details; p && *p; p++)
        {
          details[w.n_detail].data = (uint8_t *) *p;
          details[w.n_detail++].len = strlen (*p);
        }
      w.detail = details;
      w.url = ev->url ? ev->url : (char *) "";
      resp.n_warnings = 1;
      resp.warnings = &wp;
      break;
    default:
      return NULL;
    }
  *len = moby__buildkit__v1__status_response__get_packed_size (&resp);
  uint8_t *buf = xmalloc (*len ? *len : 1);
  moby__buildkit__v1__status_response__pack (&resp, buf);
  return buf;
}

static void
status_response_encode (struct event_encoder *enc, const struct solver_event *ev, ps_buf *out)
{
  size_t len = 0;
  cleanup_free uint8_t *pb = schema_status_response_pack (ev, &len);
  if (pb)
    ps_buf_append (out, pb, len);
}

static void
status_response_free (struct event_encoder *enc)
{
  free (enc);
}

static const struct event_encoder_ops status_response_ops = {
  .encode = status_response_encode,
  .free = status_response_free,
};

struct event_encoder *
schema_status_response_encoder_new (void)
{
  struct event_encoder *enc = xcalloc (1, sizeof *enc);
  enc->ops = &status_response_ops;
  return enc;
}
