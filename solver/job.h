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
#include "schema/event.h"

enum solver_job_state
{
  SOLVER_JOB_QUEUED,
  SOLVER_JOB_RUNNING,
  SOLVER_JOB_SUCCEEDED,
  SOLVER_JOB_FAILED,
  SOLVER_JOB_CANCELLED,
  SOLVER_JOB_INTERRUPTED, /* podsolved stopped (or crashed) while it ran */
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

/* A job whose first part is waiting on someone else (a client-side gateway
   build waits for its client's LLBBridge calls, and buildx's capability
   probe never sends one) takes its running slot (--max-parallel) only when
   it has work: call before solver_job_start; the job function then calls
   solver_job_take_slot before it runs anything.  Without this a probe, and
   every build behind it, queue behind builds that do run. */
void solver_job_defer_slot (solver_job *job);
/* On the job's thread: wait for a running slot unless the job holds one
   (once taken it is kept until the job function returns; a job that did
   not defer holds one already).  -1 with *err set (499) when the job was
   cancelled while it waited. */
int solver_job_take_slot (solver_job *job, ps_error **err);

/* Append an event; the log takes ownership of every pointer in `ev`
   (ev itself is copied).  Wakes every reader. */
void solver_job_emit (solver_job *job, struct solver_event *ev);

/* Convenience emitters. */
void solver_job_emit_log (solver_job *job, const char *vertex, int stream, const char *data,
                          size_t len, const char *text);
/* A SOLVER_EV_VERTEX; every string is copied.  `inputs` is NULL-terminated
   (NULL or empty: none); `error` and `text` may be NULL. */
void solver_job_emit_vertex (solver_job *job, const char *vertex, const char *name, const char *const *inputs,
                             int64_t started_ns, int64_t completed_ns, bool cached, const char *error,
                             const char *text);

/* A SOLVER_EV_WARNING (BuildKit's VertexWarning; "WARNING: msg" in the
   Podman-compatible stream); `vertex`, `details` (NULL-terminated) and
   `url` may be NULL; every string is copied. */
void solver_job_emit_warning (solver_job *job, const char *vertex, int64_t level, const char *short_msg,
                              const char *const *details, const char *url);

/* Wait until the log holds an event at index `idx`, or the job is done and
   has no more events, or `timeout_ms` passes.  Returns a borrowed pointer to
   the event (valid while the caller holds a job reference: events are never
   freed before the job), or NULL on timeout / end (then *done says which). */
const struct solver_event *solver_job_next (solver_job *job, size_t idx, int timeout_ms,
                                            bool *done);

/* Number of events in the log so far. */
size_t solver_job_event_count (solver_job *job);

/* Ask the job to stop: sets the cancelled flag and runs the registered
   cancel hook (which kills the builder).  Safe from any thread. */
void solver_job_cancel (solver_job *job, const char *why);
bool solver_job_cancelled (solver_job *job);

/* The worker registers how to interrupt what it is running now (e.g. the
   buildah child); NULL clears it.  The hook runs with the job lock NOT held. */
void solver_job_set_cancel_hook (solver_job *job, void (*hook) (void *), void *data);

/* Block until the worker thread returned. */
void solver_job_wait (solver_job *job);

/* ---- what a finished job leaves behind -------------------------------------- */

/* A short description shown by GET /solve ("dockerfile.v0"). */
void solver_job_set_kind (solver_job *job, const char *kind);
/* Keep the directory after the job ends (outputs live there until the job
   expires); by default it is removed when the worker returns. */
void solver_job_keep_dir (solver_job *job, bool keep);

struct solver_output
{
  size_t exporter; /* index of the exporter in the request */
  char *type;  /* exporter type: "tar", "local", "oci", "docker" */
  char *path;  /* file kept for GET /solve/{ref}/outputs/{n} */
  uint64_t size;
};
/* Record an output kept for download; the job owns the strings. */
void solver_job_add_output (solver_job *job, size_t exporter, const char *type, const char *path, uint64_t size);

/* A consistent copy of a job's state for listings (free with
   solver_job_summary_free). */
struct solver_job_summary
{
  char *ref;
  char *kind;
  enum solver_job_state state;
  int64_t created_ns, started_ns, finished_ns;
  char *error;           /* final error, NULL on success */
  char **response;       /* final exporter response (key, value, ..., NULL) */
  struct solver_output *outputs;
  size_t n_outputs;
};
void solver_job_summarize (solver_job *job, struct solver_job_summary *out);
void solver_job_summary_free (struct solver_job_summary *s);
const char *solver_job_state_name (enum solver_job_state s);

/* ---- the registry of jobs by ref --------------------------------------------- */

/* Jobs are registered by ref from creation until `ttl_ms` after they end;
   a duplicate live ref is refused (409). */
int solver_jobs_register (solver_job *job, ps_error **err);
/* Take a job out of the registry (a job that could not be started). */
void solver_jobs_unregister (solver_job *job);
/* Look up a registered job (returns a new reference) or NULL. */
solver_job *solver_jobs_lookup (const char *ref);
/* The same, waiting up to `timeout_ms` for a job with `ref` to be
   registered (woken by solver_jobs_register, not polling); NULL when none
   came in time. */
solver_job *solver_jobs_wait_for (const char *ref, int timeout_ms);
/* Every registered job, newest first (each a new reference); free the
   array with solver_jobs_list_free. */
solver_job **solver_jobs_list (size_t *n);
void solver_jobs_list_free (solver_job **jobs, size_t n);
/* Forget (and remove the kept directories of) jobs that ended more than
   ttl_ms ago. */
void solver_jobs_expire (int64_t ttl_ms);

/* At most `n` jobs run at once; the others wait in SOLVER_JOB_QUEUED and
   say so with a status event.  0 = unbounded. */
void solver_jobs_set_max_parallel (unsigned n);
/* The --max-parallel value (0 = unlimited). */
unsigned solver_jobs_max_parallel (void);
/* At most `n` jobs wait for a slot; solver_job_start refuses more (429). */
void solver_jobs_set_max_queued (unsigned n);

/* Every running job holds a shared flock on `lock_path` while its function
   runs, after passing `gate_path` (a shared flock taken and dropped): a
   cache prune holds the gate and then the lock exclusively, so it waits for
   running jobs and new jobs wait for it (see solver/cache_lock.h).  A job
   waiting says so with a status event.  NULL paths: no locking (unit tests). */
void solver_jobs_set_cache_lock (const char *lock_path, const char *gate_path);

/* Registered jobs leave a record in `dir` (<state>/jobs): written when they
   start and when they end, removed when they expire.  At start-up,
   records of jobs that never ended become "interrupted" jobs in the
   registry.  Returns how many were interrupted. */
void solver_jobs_set_records_dir (const char *dir);
size_t solver_jobs_restore_records (void);

/* Cancel every running job and wait for all of them (used at shutdown). */
void solver_jobs_cancel_all (const char *why);
size_t solver_jobs_running (void);

#endif
