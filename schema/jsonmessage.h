/* jsonmessage.h — job events as Docker/Podman JSONMessage lines, the
 * /build (v1) response body. */
#ifndef SCHEMA_JSONMESSAGE_H
#define SCHEMA_JSONMESSAGE_H

#include "common/ps.h"
#include "schema/encoder.h"

/* The encoder of /build (v1) responses: lines "{...}\n", none for many
   events.  `compat`: the Docker-compatible endpoint (aux ID and
   "Successfully built/tagged"); `quiet`: q=1, only the image ID unless the
   build fails. */
struct event_encoder *schema_jsonmessage_encoder_new (bool compat, bool quiet);

/* Append one {"stream": text} line. */
void schema_jsonmessage_stream (ps_buf *out, const char *text, size_t len);

/* Append `o` as one compact line the way Go's encoding/json writes it
   ('<', '>', '&' escaped as \u003c, \u003e, \u0026). */
struct cJSON;
void schema_json_append_line (ps_buf *out, const struct cJSON *o);

/* Copy `len` bytes to a NUL-terminated string that is valid UTF-8: invalid
   sequences and NUL bytes become U+FFFD, as Go's encoder does. */
char *schema_utf8_sanitize (const char *data, size_t len);

#endif
