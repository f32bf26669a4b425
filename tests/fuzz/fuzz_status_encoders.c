/* fuzz_status_encoders — an event built from arbitrary bytes goes through
 * the four encoders (JSONMessage, SolveStatus rawjson, BuildKit trace,
 * Control.Status StatusResponse); the StatusResponse protobuf must decode
 * back to the same fields. */
#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"
#include "schema/jsonmessage.h"
#include "schema/solve_status.h"
#include "schema/status_response.h"
#include "schema/trace.h"

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  if (size < 2)
    return 0;
  struct solver_event ev = { 0 };
  ev.kind = (enum solver_event_kind) (data[0] % 7);
  size_t half = (size - 1) / 2;
  char *a = xstrndup ((const char *) data + 1, half);
  char *b = xmalloc (size - 1 - half + 1);
  memcpy (b, data + 1 + half, size - 1 - half);
  b[size - 1 - half] = '\0';
  ev.vertex = a;
  ev.name = a;
  ev.text = a;
  ev.error = a;
  ev.status_id = a;
  ev.image_id = a;
  ev.warning = a;
  ev.url = a;
  ev.data = b;
  ev.len = size - 1 - half;
  ev.stream = data[0] & 1 ? 2 : 1;
  ev.time_ns = 1700000000000000000LL + data[0];
  ev.started_ns = data[0] & 2 ? ev.time_ns : 0;
  ev.current = (int64_t) size;

  ps_buf out = { 0 };
  struct event_encoder *encoders[] = {
    schema_jsonmessage_encoder_new (data[0] & 8, data[0] & 16),
    schema_solve_encoder_new ("ref"),
    schema_trace_encoder_new (data[0] & 32),
    schema_status_response_encoder_new (),
  };
  for (size_t i = 0; i < sizeof encoders / sizeof encoders[0]; i++)
    {
      event_encoder_encode (encoders[i], &ev, &out);
      event_encoder_free (encoders[i]);
    }
  ps_buf_free (&out);

  size_t len = 0;
  uint8_t *pb = schema_status_response_pack (&ev, &len);
  if (pb)
    {
      Moby__Buildkit__V1__StatusResponse *r = moby__buildkit__v1__status_response__unpack (NULL, len, pb);
      if (r == NULL)
        abort ();
      if (ev.kind == SOLVER_EV_LOG && (r->n_logs != 1 || r->logs[0]->msg.len != ev.len
                                       || memcmp (r->logs[0]->msg.data, ev.data, ev.len) != 0))
        abort ();
      if (ev.kind == SOLVER_EV_WARNING && (r->n_warnings != 1 || r->warnings[0]->short_.len != strlen (ev.warning)))
        abort ();
      if (ev.kind == SOLVER_EV_VERTEX && (r->n_vertexes != 1 || strcmp (r->vertexes[0]->digest, ev.vertex) != 0))
        abort ();
      moby__buildkit__v1__status_response__free_unpacked (r, NULL);
      free (pb);
    }
  free (a);
  free (b);
  return 0;
}
