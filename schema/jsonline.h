/* jsonline.h — JSON lines as Go's encoding/json writes them: compact, with
 * '<', '>' and '&' escaped and strings made valid UTF-8.  Every JSON stream
 * podsolved writes (JSONMessage, BuildKit-mode aux messages, SolveStatus)
 * goes through here, so clients written in Go read back what they expect. */
#ifndef SCHEMA_JSONLINE_H
#define SCHEMA_JSONLINE_H

#include "common/ps.h"

/* Append `o` as one compact line the way Go's encoding/json writes it
   ('<', '>', '&' escaped as \u003c, \u003e, \u0026). */
struct cJSON;
void schema_json_append_line (ps_buf *out, const struct cJSON *o);

/* Copy `len` bytes to a NUL-terminated string that is valid UTF-8: invalid
   sequences and NUL bytes become U+FFFD, as Go's encoder does. */
char *schema_utf8_sanitize (const char *data, size_t len);

/* Append `o` as one compact line (see schema_json_append_line) ended by
   "\r\n", as moby writes its BuildKit-mode messages. */
void schema_json_append_crlf_line (ps_buf *out, const struct cJSON *o);

#endif
