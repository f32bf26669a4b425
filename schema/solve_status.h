/* solve_status.h — job events as the /solve NDJSON stream: one object per
 * line with exactly one key, "status" (BuildKit's SolveStatus in the rawjson
 * shape of its Go client), "result" or "error". */
#ifndef SCHEMA_SOLVE_STATUS_H
#define SCHEMA_SOLVE_STATUS_H

#include "common/ps.h"
#include "schema/encoder.h"

/* The encoder of /solve responses: one line per event (none for builder
   chatter, which has no place here); a result line names the job `ref`
   (copied; may be NULL). */
struct event_encoder *schema_solve_encoder_new (const char *ref);

/* RFC 3339 with nanoseconds, trailing zeros trimmed, UTC "Z", as Go's
   time.Time marshals: 2023-11-14T22:13:20.5Z. */
void schema_time_rfc3339nano (int64_t ns, char *out, size_t outlen);

#endif
