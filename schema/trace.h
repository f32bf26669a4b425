/* trace.h — job events as the /build?version=2 stream the docker CLI's
 * BuildKit mode reads: {"id":"moby.buildkit.trace","aux":"<base64
 * StatusResponse protobuf>"} records (schema/status_response.h builds
 * them), then {"id":"moby.image.id",...}, or an errorDetail line
 * (buildkit-protocols.md §7.3). */
#ifndef SCHEMA_TRACE_H
#define SCHEMA_TRACE_H

#include "common/ps.h"
#include "schema/encoder.h"

/* The encoder of /build?version=2 responses: lines ending with "\r\n", as
   moby writes them.  `quiet`: q=1, progress held back; on success only the
   image ID. */
struct event_encoder *schema_trace_encoder_new (bool quiet);

#endif
