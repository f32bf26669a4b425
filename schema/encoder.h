/* encoder.h — the one interface of the event encoders.
 *
 * An encoder turns a job's events, one at a time and in log order, into
 * the bytes of one wire format: JSONMessage lines for /build
 * (schema/jsonmessage.h), BuildKit trace records for /build?version=2
 * (schema/trace.h), SolveStatus NDJSON for /solve (schema/solve_status.h),
 * bare StatusResponse messages for gRPC Control.Status
 * (schema/status_response.h).
 * Each is an object with its own state behind the same vtable, as h2o's
 * compress handlers share h2o_compress_context_t: a new wire format is one
 * new file with an ops table and a constructor. */
#ifndef SCHEMA_ENCODER_H
#define SCHEMA_ENCODER_H

#include "common/ps.h"
#include "schema/event.h"

struct event_encoder;

struct event_encoder_ops
{
  /* Append the wire form of `ev` to `out` (possibly nothing). */
  void (*encode) (struct event_encoder *enc, const struct solver_event *ev, ps_buf *out);
  void (*free) (struct event_encoder *enc);
};

/* The first member of every encoder's own struct. */
struct event_encoder
{
  const struct event_encoder_ops *ops;
};

static inline void
event_encoder_encode (struct event_encoder *enc, const struct solver_event *ev, ps_buf *out)
{
  enc->ops->encode (enc, ev, out);
}

static inline void
event_encoder_free (struct event_encoder *enc)
{
  if (enc != NULL)
    enc->ops->free (enc);
}

/* ---- shared by the /build encoders ---------------------------------------------- */

/* A quiet build (q=1), as Docker and Podman run it: progress is held back
   while the build runs, dropped when it succeeds and replayed before the
   error when it fails, so a quiet client still sees what failed. */
struct quiet_hold
{
  bool quiet;
  ps_buf held;
};

/* Where this event's progress goes: `out`, or the hold while quiet. */
ps_buf *quiet_hold_progress (struct quiet_hold *h, ps_buf *out);

/* The build succeeded: the held progress is dropped. */
void quiet_hold_drop (struct quiet_hold *h);

/* The build failed: the held progress, then the error line
   {"errorDetail":{"code":N,"message":M},"error":M} ("code" only with a
   known exit status), ended by "\n", or by "\r\n" when `crlf` (moby's
   BuildKit-mode stream). */
void quiet_hold_fail (struct quiet_hold *h, const struct solver_event *ev, bool crlf, ps_buf *out);

#endif
