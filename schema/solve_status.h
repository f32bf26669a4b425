/* solve_status.h — job events as the /solve NDJSON stream: one object per
 * line with exactly one key, "status" (BuildKit's SolveStatus in the rawjson
 * shape of its Go client), "result" or "error". */
#ifndef SCHEMA_SOLVE_STATUS_H
#define SCHEMA_SOLVE_STATUS_H

#include "common/ps.h"
#include "solver/job.h"

/* Append the line for `ev` (or nothing: builder chatter has no place here). */
void schema_solve_encode (const struct solver_event *ev, const char *ref, ps_buf *out);

/* RFC 3339 with nanoseconds, trailing zeros trimmed, UTC "Z", as Go's
   time.Time marshals: 2023-11-14T22:13:20.5Z. */
void schema_time_rfc3339nano (int64_t ns, char *out, size_t outlen);

#endif
