/* job.h — a build job and its append-only event log.
 *
 * Every state change of a build is one event appended to its job's log.
 * Readers (a /build response, later /solve watchers) keep an index into the
 * log and encode each event in their own wire shape: JSONMessage text for
 * /build v1, SolveStatus NDJSON for /solve, protobuf trace records for
 * /build v2.  The log is never edited, so a late reader replays exactly
 * what an early one saw.  This is podsolve's single progress path. */
#ifndef SOLVER_JOB_H
#define SOLVER_JOB_H

#include <pthread.h>
#include <sys/types.h>

#include "common/ps.h"

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

  /* SOLVER_EV_ERROR (message in `error`) */
  int exit_code;       /* exit status of the failing RUN, 0 when unknown */
};

enum solver_job_state
{
  SOLVER_JOB_QUEUED,
  SOLVER_JOB_RUNNING,
  SOLVER_JOB_SUCCEEDED,
  SOLVER_JOB_FAILED,
  SOLVER_JOB_CANCELLED,
};

typedef struct solver_job solver_job;

/* Called on the job's worker thread to do the work.  It appends events with
   solver_job_emit() and returns 0 on success or -1 with *err set; the job
   appends the final RESULT or ERROR event itself from the return value
   unless the worker already did. */
typedef int (*solver_job_fn) (solver_job *job, void *userdata, ps_error **err);

/* Create a job; `id` may be NULL to generate one.  The job holds one
   reference for its creator. */
solver_job *solver_job_new (const char *id, const char *dir);
void solver_job_ref (solver_job *job);
void solver_job_unref (solver_job *job);

const char *solver_job_id (const solver_job *job);
/* The job's private directory (context, auth files, temp outputs). */
const char *solver_job_dir (const solver_job *job);
enum solver_job_state solver_job_state (solver_job *job);

/* Run `fn` on a new detached thread.  `free_fn` releases userdata after fn
   returns.  The thread holds its own job reference. */
int solver_job_start (solver_job *job, solver_job_fn fn, void *userdata, void (*free_fn) (void *),
                      ps_error **err);

/* Append an event; the log takes ownership of every pointer in `ev`
   (ev itself is copied).  Wakes every reader. */
void solver_job_emit (solver_job *job, struct solver_event *ev);

/* Convenience emitters. */
void solver_job_emit_log (solver_job *job, const char *vertex, int stream, const char *data,
                          size_t len, const char *text);

/* Wait until the log holds an event at index `idx`, or the job is done and
   has no more events, or `timeout_ms` passes.  Returns a borrowed pointer to
   the event (valid while the caller holds a job reference: events are never
   freed before the job), or NULL on timeout / end (then *done says which). */
const struct solver_event *solver_job_next (solver_job *job, size_t idx, int timeout_ms,
                                            bool *done);

/* Ask the job to stop: sets the cancelled flag and runs the registered
   cancel hook (which kills the builder).  Safe from any thread. */
void solver_job_cancel (solver_job *job, const char *why);
bool solver_job_cancelled (solver_job *job);

/* The worker registers how to interrupt what it is running now (e.g. the
   buildah child); NULL clears it.  The hook runs with the job lock NOT held. */
void solver_job_set_cancel_hook (solver_job *job, void (*hook) (void *), void *data);

/* Block until the worker thread returned. */
void solver_job_wait (solver_job *job);

/* ---- the registry of live jobs ------------------------------------------ */

/* Cancel every running job and wait for all of them (used at shutdown). */
void solver_jobs_cancel_all (const char *why);
size_t solver_jobs_running (void);

#endif
