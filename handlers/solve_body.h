/* solve_body.h — the body of POST /solve as it arrives: a JSON
 * SolveRequest, or multipart/form-data with a "request" part (that JSON),
 * an optional "definition" part (a raw pb.Definition) and one tar part per
 * local source, spooled to <dir>/parts and unpacked into
 * <dir>/sources/<name>.  Kept apart from the handler so the unit tests and
 * tests/fuzz/fuzz_multipart.c run it without a connection. */
#ifndef HANDLERS_SOLVE_BODY_H
#define HANDLERS_SOLVE_BODY_H

#include "common/ps.h"
#include "solver/solve.h"

struct solve_body;

/* `content_type` is the request's header (NULL: 415); `dir` the job's
   directory, holding an empty "parts" directory.  `max_context_bytes`
   bounds the tar parts together (--max-context-bytes).  NULL with *err:
   415 for another media type, 400 for a multipart type without a usable
   boundary. */
struct solve_body *solve_body_new (const char *content_type, const char *dir, uint64_t max_context_bytes,
                                   ps_error **err);

/* The next bytes of the body.  0, or -1 with *err (400 malformed or a bad
   part name, 413 over a limit, 500 when a part cannot be stored); the
   first error is final. */
int solve_body_feed (struct solve_body *b, const void *data, size_t len, ps_error **err);

/* The whole body has arrived: 0, or -1 with a 400 (a multipart body cut
   short or without a "request" part, an empty body). */
int solve_body_finish (struct solve_body *b, ps_error **err);

/* After finish: the SolveRequest JSON, and the "definition" part (NULL
   when none was sent). */
const char *solve_body_json (const struct solve_body *b, size_t *len);
const uint8_t *solve_body_definition (const struct solve_body *b, size_t *len);

/* Every tar part as a source to unpack into <dir>/sources/<name>, its
   `tar` the spooled part (context_unpack_sources; solve_plan_new does it).
   *out (n entries, free each name, dir and tar, then the array). */
int solve_body_sources (struct solve_body *b, struct solve_source **out, size_t *n);

/* Unpack every tar part into <dir>/sources/<name> (the spooled tar is
   removed).  *out (n entries, free each name and dir, then the array) is
   set even on failure, with what was unpacked. */
int solve_body_unpack_sources (struct solve_body *b, struct solve_source **out, size_t *n, ps_error **err);

void solve_body_free (struct solve_body *b);

#endif
