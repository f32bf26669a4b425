/* status_response.h — job events as BuildKit's StatusResponse protobuf
 * (schema/control.proto, moby.buildkit.v1): the messages Control.Status
 * streams over gRPC, and the payload of /build?version=2's trace records
 * (schema/trace.h).  One builder serves both. */
#ifndef SCHEMA_STATUS_RESPONSE_H
#define SCHEMA_STATUS_RESPONSE_H

#include "common/ps.h"
#include "schema/encoder.h"

/* The StatusResponse protobuf bytes for one event: one Vertex,
   VertexStatus or VertexLog (NULL for events with no StatusResponse form:
   text, result, error).  Decoding them gives back the event. */
uint8_t *schema_status_response_pack (const struct solver_event *ev, size_t *len);

/* The encoder of Control.Status: each VERTEX, STATUS or LOG event appends
   exactly one bare StatusResponse message (no gRPC framing: the caller
   sends what one event produced as one gRPC message); every other event
   appends nothing (a Status stream ends with the job, its result or error
   travels on Control.Solve). */
struct event_encoder *schema_status_response_encoder_new (void);

#endif
