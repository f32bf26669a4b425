/* stream.h — a streaming HTTP response that follows a job's event log:
 * replays every event so far, then each new one as it is appended, each
 * encoded by the endpoint's encoder and flushed line by line. */
#ifndef HANDLERS_STREAM_H
#define HANDLERS_STREAM_H

#include "schema/encoder.h"
#include "server/http.h"
#include "solver/job.h"

struct job_stream_opts
{
  struct event_encoder *encoder; /* owned: freed when the stream ends */
  bool cancel_on_disconnect;     /* a client leaving early cancels the job */
  const char *content_type;
  const char *const *headers;    /* extra response headers: name, value, ..., NULL */
};

/* Queue a 200 streaming response for `job`.  Takes over the caller's job
   reference. */
int handler_stream_job (struct ps_request *req, solver_job *job, const struct job_stream_opts *o);

/* The one line a build starts with: "job ID: started: WHAT (client UA)
   [-> tags]", the id every later line about it carries.  `req` may be
   NULL (no HTTP request: gRPC); `tags` NULL-terminated or NULL. */
void handler_log_job_start (const struct ps_request *req, solver_job *job, const char *what, const char *client,
                            const char *const *tags);

#endif
