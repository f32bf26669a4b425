/* jsonmessage.h — job events as Docker/Podman JSONMessage lines, the
 * /build (v1) response body. */
#ifndef SCHEMA_JSONMESSAGE_H
#define SCHEMA_JSONMESSAGE_H

#include "common/ps.h"
#include "schema/encoder.h"
#include "schema/jsonline.h"

/* The encoder of /build (v1) responses: lines "{...}\n", none for many
   events.  `compat`: the Docker-compatible endpoint (aux ID and
   "Successfully built/tagged"); `quiet`: q=1, only the image ID unless the
   build fails. */
struct event_encoder *schema_jsonmessage_encoder_new (bool compat, bool quiet);

/* Append one {"stream": text} line. */
void schema_jsonmessage_stream (ps_buf *out, const char *text, size_t len);

#endif
