/* event.h — one state change of a build, as a job's event log holds it
 * (solver/job.h) and every encoder reads it (schema/encoder.h).  The
 * event is plain data: it knows nothing of jobs or wire formats. */
#ifndef SCHEMA_EVENT_H
#define SCHEMA_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum solver_event_kind
{
  SOLVER_EV_VERTEX,  /* a vertex was started, cached, completed or failed */
  SOLVER_EV_LOG,     /* output of a vertex (RUN stdout/stderr, builder text) */
  SOLVER_EV_STATUS,  /* progress of a sub-task with byte counts */
  SOLVER_EV_TEXT,    /* builder chatter with no structure ("--> 1a2b3c",
                        "Successfully tagged …"): only the Podman-compatible
                        text stream shows it */
  SOLVER_EV_RESULT,  /* the job succeeded: image id, exporter response */
  SOLVER_EV_ERROR,   /* the job failed: message, failing vertex, exit code */
  SOLVER_EV_WARNING, /* a warning about the build (BuildKit's VertexWarning:
                        a frontend's LLBBridge.Warn); not an outcome */
};

struct solver_event
{
  enum solver_event_kind kind;
  int64_t time_ns;

  /* The builder's own line for this event, as the builder printed it
     ("STEP 2/4: RUN echo hi\n", "--> Using cache …\n").  Podman-compatible
     /build v1 output is exactly these lines; NULL when the event has no
     textual form in that stream. */
  char *text;

  /* SOLVER_EV_VERTEX / _LOG / _STATUS: the vertex digest "sha256:…". */
  char *vertex;

  /* SOLVER_EV_VERTEX */
  char *name;
  char **inputs; /* NULL-terminated, may be NULL */
  int64_t started_ns;   /* 0 = not started */
  int64_t completed_ns; /* 0 = not completed */
  bool cached;
  char *error;

  /* SOLVER_EV_LOG: raw bytes; stream 1 = stdout, 2 = stderr. */
  int stream;
  char *data;
  size_t len;

  /* SOLVER_EV_STATUS */
  char *status_id;
  int64_t current;
  int64_t total;

  /* SOLVER_EV_RESULT */
  char *image_id;      /* 64 hex, no "sha256:" */
  char **tags;         /* names the image was tagged with, as the client sent them */
  char **response;     /* exporter response: key, value, key, value, ..., NULL */

  /* SOLVER_EV_ERROR (message in `error`) */
  int exit_code;       /* exit status of the failing RUN, 0 when unknown */

  /* SOLVER_EV_WARNING (`vertex` may be NULL; `text` is its line in the
     Podman-compatible stream) */
  int64_t level;
  char *warning;       /* the short message */
  char **details;      /* NULL-terminated detail lines, may be NULL */
  char *url;           /* more about it, may be NULL */
};

#endif
