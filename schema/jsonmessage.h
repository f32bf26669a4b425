/* jsonmessage.h — job events as Docker/Podman JSONMessage lines, the
 * /build (v1) response body. */
#ifndef SCHEMA_JSONMESSAGE_H
#define SCHEMA_JSONMESSAGE_H

#include "common/ps.h"
#include "solver/job.h"

struct jsonmessage_opts
{
  bool compat; /* Docker-compatible endpoint: aux ID + "Successfully built/tagged" */
  bool quiet;  /* q=1: only the image ID, unless the build fails */
  ps_buf held; /* quiet: the progress held back, replayed before an error
                  (as Docker and Podman do) */
};

/* Append the lines (each "{...}\n") for `ev` to `out`; many events have none. */
void schema_jsonmessage_encode (struct jsonmessage_opts *o, const struct solver_event *ev, ps_buf *out);

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
