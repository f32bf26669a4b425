/* trace.h — job events as the /build?version=2 stream the docker CLI's
 * BuildKit mode reads: {"id":"moby.buildkit.trace","aux":"<base64
 * StatusResponse protobuf>"} records, then {"id":"moby.image.id",...}, or an
 * errorDetail line (buildkit-protocols.md §7.3). */
#ifndef SCHEMA_TRACE_H
#define SCHEMA_TRACE_H

#include "common/ps.h"
#include "solver/job.h"

struct trace_encoder
{
  bool quiet;  /* q=1: hold progress back; on success only the image ID */
  ps_buf held; /* progress held back while quiet */
};

/* Append the lines for `ev` (each ends with "\r\n", as moby writes them). */
void schema_trace_encode (struct trace_encoder *enc, const struct solver_event *ev, ps_buf *out);
void schema_trace_encoder_free (struct trace_encoder *enc);

/* The StatusResponse protobuf bytes for one event (NULL for events with no
   trace form).  Exposed for tests: decoding them must give back the event. */
uint8_t *schema_trace_status_response (const struct solver_event *ev, size_t *len);

#endif
