/* job.c — jobs, their event logs and the registry of live jobs. */
#define _GNU_SOURCE
#include "solver/job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/process.h"
#include "solver/cache_gc.h"
#include "solver/cache_lock.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

struct solver_job
{
  pthread_mutex_t lock;
  pthread_cond_t changed;
  int refs;

  char *id;
  char *dir;
  enum solver_job_state state;
  bool finished;  /* worker returned and the final event is in the log */
  bool cancelled;
  char *cancel_reason;

  struct solver_event **events; /* each event has a stable address */
  size_t n_events;
  size_t cap_events;

  void (*cancel_hook) (void *);
  void *cancel_data;

  solver_job_fn fn;
  void *fn_data;
  void (*fn_free) (void *);

  solver_job *next_live; /* live list */

  char *kind;
  bool slot_deferred; /* solver_job_defer_slot: fn takes its slot itself */
  bool holds_slot;    /* only the job's thread reads and writes it */
  bool keep_dir;
  struct solver_output *outputs;
  size_t n_outputs;
  int64_t created_ns, started_ns, finished_ns;
  char *final_error;
  char **final_response;
  bool registered;
  solver_job *next_reg;  /* ref registry list */
};

/* Registry of started, unfinished jobs: the shutdown path cancels them. */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t live_changed = PTHREAD_COND_INITIALIZER;
static solver_job *live_head;
static size_t live_count;

/* Registry by ref: live jobs and finished ones until they expire. */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_changed = PTHREAD_COND_INITIALIZER; /* a job was registered */
static solver_job *reg_head;

/* Where job records live (NULL: not persisted). */
static char *records_dir;

/* The bound on concurrently running jobs. */
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_changed = PTHREAD_COND_INITIALIZER;
static unsigned max_parallel;
static unsigned max_queued = 64;
static unsigned running;

static void
event_clear (struct solver_event *ev)
{
  free (ev->text);
  free (ev->vertex);
  free (ev->name);
  ps_strv_free_raw (ev->inputs);
  free (ev->error);
  free (ev->data);
  free (ev->status_id);
  free (ev->image_id);
  ps_strv_free_raw (ev->tags);
  ps_strv_free_raw (ev->response);
  free (ev->warning);
  ps_strv_free_raw (ev->details);
  free (ev->url);
}

static char **
strv_copy (char **v)
{
  if (v == NULL)
    return NULL;
  size_t n = 0;
  while (v[n])
    n++;
  char **c = xcalloc (n + 1, sizeof (char *));
  for (size_t i = 0; i < n; i++)
    c[i] = xstrdup (v[i]);
  return c;
}

solver_job *
solver_job_new (const char *id, const char *dir)
{
  solver_job *job = xcalloc (1, sizeof *job);
  pthread_mutex_init (&job->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&job->changed, &ca);
  pthread_condattr_destroy (&ca);
  job->refs = 1;
  if (id != NULL)
    job->id = xstrdup (id);
  else
    {
      char hex[33];
      ps_random_hex (hex, 16);
      job->id = xstrdup (hex);
    }
  job->dir = xstrdup (dir ? dir : "");
  job->state = SOLVER_JOB_QUEUED;
  job->created_ns = ps_now_ns ();
  return job;
}

void
solver_job_ref (solver_job *job)
{
  pthread_mutex_lock (&job->lock);
  job->refs++;
  pthread_mutex_unlock (&job->lock);
}

void
solver_job_unref (solver_job *job)
{
  if (job == NULL)
    return;
  pthread_mutex_lock (&job->lock);
  int refs = --job->refs;
  pthread_mutex_unlock (&job->lock);
  if (refs > 0)
    return;
  for (size_t i = 0; i < job->n_events; i++)
    {
      event_clear (job->events[i]);
      free (job->events[i]);
    }
  free (job->events);
  free (job->id);
  free (job->dir);
  free (job->cancel_reason);
  free (job->kind);
  for (size_t i = 0; i < job->n_outputs; i++)
    {
      free (job->outputs[i].type);
      free (job->outputs[i].path);
    }
  free (job->outputs);
  free (job->final_error);
  ps_strv_free_raw (job->final_response);
  pthread_mutex_destroy (&job->lock);
  pthread_cond_destroy (&job->changed);
  free (job);
}

const char *
solver_job_id (const solver_job *job)
{
  return job->id;
}

const char *
solver_job_dir (const solver_job *job)
{
  return job->dir;
}

enum solver_job_state
solver_job_state (solver_job *job)
{
  pthread_mutex_lock (&job->lock);
  enum solver_job_state s = job->state;
  pthread_mutex_unlock (&job->lock);
  return s;
}

static char **strv_copy (char **v);

/* Called with the lock held. */
static void
record_outcome (solver_job *job, const struct solver_event *last)
{
  if (last->kind == SOLVER_EV_ERROR)
    {
      free (job->final_error);
      job->final_error = xstrdup (last->error ? last->error : "failed");
      job->state = job->cancelled ? SOLVER_JOB_CANCELLED : SOLVER_JOB_FAILED;
    }
  else
    {
      ps_strv_free_raw (job->final_response);
      job->final_response = strv_copy (last->response);
      job->state = SOLVER_JOB_SUCCEEDED;
    }
  job->finished_ns = ps_now_ns ();
}

static void
emit_locked (solver_job *job, struct solver_event *ev)
{
  if (job->n_events == job->cap_events)
    {
      job->cap_events = job->cap_events ? job->cap_events * 2 : 64;
      job->events = xrealloc (job->events, job->cap_events * sizeof *job->events);
    }
  if (ev->time_ns == 0)
    ev->time_ns = ps_now_ns ();
  struct solver_event *copy = xmalloc (sizeof *copy);
  *copy = *ev;
  job->events[job->n_events++] = copy;
  memset (ev, 0, sizeof *ev);
  /* The final event carries the outcome: a client that reads it and asks
     GET /solve/{ref} at once must see the job ended. */
  if (copy->kind == SOLVER_EV_RESULT || copy->kind == SOLVER_EV_ERROR)
    record_outcome (job, copy);
  pthread_cond_broadcast (&job->changed);
}

void
solver_job_emit (solver_job *job, struct solver_event *ev)
{
  pthread_mutex_lock (&job->lock);
  if (job->finished)
    {
      /* A late event after the final one (e.g. a straggling log line) is
         dropped: readers may already have ended their streams. */
      pthread_mutex_unlock (&job->lock);
      event_clear (ev);
      memset (ev, 0, sizeof *ev);
      return;
    }
  emit_locked (job, ev);
  pthread_mutex_unlock (&job->lock);
}

void
solver_job_emit_log (solver_job *job, const char *vertex, int stream, const char *data, size_t len,
                     const char *text)
{
  struct solver_event ev = { .kind = SOLVER_EV_LOG };
  ev.vertex = vertex ? xstrdup (vertex) : NULL;
  ev.stream = stream;
  ev.data = xmalloc (len + 1);
  memcpy (ev.data, data, len);
  ev.data[len] = '\0';
  ev.len = len;
  ev.text = text ? xstrdup (text) : NULL;
  solver_job_emit (job, &ev);
}

void
solver_job_emit_warning (solver_job *job, const char *vertex, int64_t level, const char *short_msg,
                         const char *const *details, const char *url)
{
  struct solver_event ev = { .kind = SOLVER_EV_WARNING };
  ev.vertex = vertex && *vertex ? xstrdup (vertex) : NULL;
  ev.level = level;
  ev.warning = xstrdup (short_msg ? short_msg : "");
  ps_strv d = { 0 };
  for (const char *const *p = details; p && *p; p++)
    ps_strv_push (&d, *p);
  ev.details = d.v;
  ev.url = url && *url ? xstrdup (url) : NULL;
  ev.text = xasprintf ("WARNING: %s\n", ev.warning);
  solver_job_emit (job, &ev);
}

void
solver_job_emit_vertex (solver_job *job, const char *vertex, const char *name, const char *const *inputs,
                        int64_t started_ns, int64_t completed_ns, bool cached, const char *error, const char *text)
{
  struct solver_event ev = { .kind = SOLVER_EV_VERTEX };
  ev.vertex = vertex ? xstrdup (vertex) : NULL;
  ev.name = name ? xstrdup (name) : NULL;
  if (inputs && inputs[0])
    {
      size_t n = 0;
      while (inputs[n])
        n++;
      ev.inputs = xcalloc (n + 1, sizeof (char *));
      for (size_t i = 0; i < n; i++)
        ev.inputs[i] = xstrdup (inputs[i]);
    }
  ev.started_ns = started_ns;
  ev.completed_ns = completed_ns;
  ev.cached = cached;
  ev.error = error ? xstrdup (error) : NULL;
  ev.text = text ? xstrdup (text) : NULL;
  solver_job_emit (job, &ev);
}

const struct solver_event *
solver_job_next (solver_job *job, size_t idx, int timeout_ms, bool *done)
{
  struct timespec deadline = ps_deadline_after_ms (CLOCK_MONOTONIC, timeout_ms);

  const struct solver_event *ev = NULL;
  pthread_mutex_lock (&job->lock);
  *done = false;
  while (idx >= job->n_events && !job->finished)
    if (pthread_cond_timedwait (&job->changed, &job->lock, &deadline) == ETIMEDOUT)
      break;
  if (idx < job->n_events)
    ev = job->events[idx];
  else if (job->finished)
    *done = true;
  pthread_mutex_unlock (&job->lock);
  return ev;
}

size_t
solver_job_event_count (solver_job *job)
{
  pthread_mutex_lock (&job->lock);
  size_t n = job->n_events;
  pthread_mutex_unlock (&job->lock);
  return n;
}

void
solver_job_set_cancel_hook (solver_job *job, void (*hook) (void *), void *data)
{
  pthread_mutex_lock (&job->lock);
  job->cancel_hook = hook;
  job->cancel_data = data;
  bool run_now = hook != NULL && job->cancelled;
  pthread_mutex_unlock (&job->lock);
  /* Cancelled before the worker got as far as registering: stop at once. */
  if (run_now)
    hook (data);
}

void
solver_job_cancel (solver_job *job, const char *why)
{
  pthread_mutex_lock (&job->lock);
  if (job->cancelled || job->finished)
    {
      pthread_mutex_unlock (&job->lock);
      return;
    }
  job->cancelled = true;
  job->cancel_reason = xstrdup (why ? why : "cancelled");
  void (*hook) (void *) = job->cancel_hook;
  void *data = job->cancel_data;
  pthread_mutex_unlock (&job->lock);
  ps_info ("job %s: cancelling: %s", job->id, why ? why : "cancelled");
  if (hook)
    hook (data);
}

bool
solver_job_cancelled (solver_job *job)
{
  pthread_mutex_lock (&job->lock);
  bool c = job->cancelled;
  pthread_mutex_unlock (&job->lock);
  return c;
}

static void write_record (solver_job *job);
static void remove_record (solver_job *job);

static void
live_add (solver_job *job)
{
  pthread_mutex_lock (&live_lock);
  job->next_live = live_head;
  live_head = job;
  live_count++;
  pthread_mutex_unlock (&live_lock);
}

static void
live_remove (solver_job *job)
{
  pthread_mutex_lock (&live_lock);
  for (solver_job **p = &live_head; *p; p = &(*p)->next_live)
    if (*p == job)
      {
        *p = job->next_live;
        live_count--;
        break;
      }
  pthread_cond_broadcast (&live_changed);
  pthread_mutex_unlock (&live_lock);
}

void
solver_jobs_set_max_queued (unsigned n)
{
  pthread_mutex_lock (&slot_lock);
  max_queued = n;
  pthread_mutex_unlock (&slot_lock);
}

void
solver_jobs_set_max_parallel (unsigned n)
{
  pthread_mutex_lock (&slot_lock);
  max_parallel = n;
  pthread_cond_broadcast (&slot_changed);
  pthread_mutex_unlock (&slot_lock);
}

unsigned
solver_jobs_max_parallel (void)
{
  pthread_mutex_lock (&slot_lock);
  unsigned n = max_parallel;
  pthread_mutex_unlock (&slot_lock);
  return n;
}

/* Wait for a running slot; says once that the job is queued.  Returns -1
   when the job was cancelled while waiting. */
static int
acquire_slot (solver_job *job)
{
  bool announced = false;
  pthread_mutex_lock (&slot_lock);
  while (max_parallel > 0 && running >= max_parallel)
    {
      if (!announced)
        {
          struct solver_event ev = { .kind = SOLVER_EV_STATUS };
          ev.status_id = xasprintf ("waiting for a build slot (%u running, --max-parallel %u)", running,
                                    max_parallel);
          ev.started_ns = ps_now_ns ();
          pthread_mutex_unlock (&slot_lock);
          solver_job_emit (job, &ev);
          pthread_mutex_lock (&slot_lock);
          announced = true;
          continue;
        }
      if (solver_job_cancelled (job))
        {
          pthread_mutex_unlock (&slot_lock);
          return -1;
        }
      struct timespec ts = ps_deadline_after_ms (CLOCK_REALTIME, 200);
      pthread_cond_timedwait (&slot_changed, &slot_lock, &ts);
    }
  running++;
  pthread_mutex_unlock (&slot_lock);
  return 0;
}

void
solver_job_defer_slot (solver_job *job)
{
  job->slot_deferred = true;
}

int
solver_job_take_slot (solver_job *job, ps_error **err)
{
  if (job->holds_slot)
    return 0;
  if (acquire_slot (job) < 0)
    return ps_error_set (err, 499, "build cancelled while waiting for a build slot");
  job->holds_slot = true;
  return 0;
}

static void
release_slot (void)
{
  pthread_mutex_lock (&slot_lock);
  running--;
  pthread_cond_broadcast (&slot_changed);
  pthread_mutex_unlock (&slot_lock);
}

/* ---- the cache lock (see solver_jobs_set_cache_lock) ------------------------ */

void
solver_jobs_set_cache_lock (const char *lock_path, const char *gate_path)
{
  cache_lock_configure (lock_path, gate_path);
}

static bool
cache_lock_cancelled (void *ud)
{
  return solver_job_cancelled (ud);
}

static void
cache_lock_waiting (void *ud)
{
  struct solver_event ev = { .kind = SOLVER_EV_STATUS };
  ev.status_id = xstrdup ("waiting for a build cache prune to finish");
  ev.started_ns = ps_now_ns ();
  solver_job_emit (ud, &ev);
}

/* Take the shared cache lock for the job's run: -2 when no lock is
   configured, -1 when the job was cancelled while a prune held the gate,
   else the fd to close when the job ends. */
static int
hold_cache_lock (solver_job *job)
{
  cleanup_free char *who = xasprintf ("job %s", job->id);
  return cache_lock_shared (who, cache_lock_cancelled, cache_lock_waiting, job);
}

static void *
job_thread (void *arg)
{
  solver_job *job = arg;
  ps_error *err = NULL;

  int ret;
  int cache_lock = -2;
  if (!job->slot_deferred && solver_job_take_slot (job, &err) < 0)
    ret = -1;
  else if ((cache_lock = hold_cache_lock (job)) == -1)
    {
      ret = -1;
      if (job->holds_slot)
        release_slot ();
    }
  else
    {
      pthread_mutex_lock (&job->lock);
      job->state = SOLVER_JOB_RUNNING;
      job->started_ns = ps_now_ns ();
      pthread_mutex_unlock (&job->lock);
      ret = job->fn (job, job->fn_data, &err);
      if (cache_lock >= 0)
        close (cache_lock);
      if (job->holds_slot)
        release_slot ();
    }
  if (job->fn_free)
    job->fn_free (job->fn_data);
  job->fn_data = NULL;

  pthread_mutex_lock (&job->lock);
  job->cancel_hook = NULL;
  bool have_final = job->n_events > 0
                    && (job->events[job->n_events - 1]->kind == SOLVER_EV_RESULT
                        || job->events[job->n_events - 1]->kind == SOLVER_EV_ERROR);
  if (ret < 0 && !have_final)
    {
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      if (job->cancelled)
        ev.error = xasprintf ("build cancelled: %s", job->cancel_reason);
      else
        ev.error = xstrdup (err ? err->msg : "build failed");
      emit_locked (job, &ev);
    }
  if (!have_final && ret == 0)
    {
      /* A worker that returned success without a RESULT event. */
      struct solver_event ev = { .kind = SOLVER_EV_RESULT };
      emit_locked (job, &ev);
    }
  job->state = ret < 0 ? (job->cancelled ? SOLVER_JOB_CANCELLED : SOLVER_JOB_FAILED) : SOLVER_JOB_SUCCEEDED;
  job->finished = true;
  bool keep = job->keep_dir;
  pthread_cond_broadcast (&job->changed);
  pthread_mutex_unlock (&job->lock);

  /* A failed build is something an operator looks for: warn, with the
     word and the reason; one the client cancelled is not. */
  if (ret == 0)
    ps_info ("job %s: succeeded", job->id);
  else if (job->cancelled)
    ps_info ("job %s: cancelled%s%s", job->id, err ? ": " : "", err ? err->msg : "");
  else
    ps_warn ("job %s: failed: %s", job->id, err ? err->msg : "no reason given");
  ps_error_free (err);
  err = NULL;
  write_record (job);
  /* The job's directory (context, credentials, secrets) dies with it. */
  if (!keep && job->dir[0] != '\0' && ps_rm_rf (job->dir, &err) < 0)
    {
      ps_warn ("job %s: cannot remove %s: %s", job->id, job->dir, err->msg);
      ps_error_free (err);
    }
  live_remove (job);
  cache_gc_kick (); /* a build ended: the cache may be over its bound */
  solver_job_unref (job);
  return NULL;
}

int
solver_job_start (solver_job *job, solver_job_fn fn, void *userdata, void (*free_fn) (void *),
                  ps_error **err)
{
  /* Live jobs are the running ones plus those queued for a slot. */
  pthread_mutex_lock (&slot_lock);
  unsigned cap = max_parallel ? max_parallel + max_queued : 0;
  pthread_mutex_unlock (&slot_lock);
  pthread_mutex_lock (&live_lock);
  size_t live = live_count;
  pthread_mutex_unlock (&live_lock);
  if (cap && live >= cap)
    return ps_error_set (err, 429, "too many builds: %zu running or queued (--max-parallel %u, --max-queued %u); "
                                   "retry later", live, max_parallel, max_queued);
  job->fn = fn;
  job->fn_data = userdata;
  job->fn_free = free_fn;
  solver_job_ref (job);
  live_add (job);
  int r = ps_thread_start (NULL, job_thread, job, 0, true);
  if (r != 0)
    {
      live_remove (job);
      solver_job_unref (job);
      return ps_error_set_errno (err, 500, r, "start build thread");
    }
  return 0;
}

void
solver_job_wait (solver_job *job)
{
  pthread_mutex_lock (&job->lock);
  while (!job->finished)
    pthread_cond_wait (&job->changed, &job->lock);
  pthread_mutex_unlock (&job->lock);
}

void
solver_jobs_cancel_all (const char *why)
{
  pthread_mutex_lock (&live_lock);
  size_t n = live_count, i = 0;
  solver_job **snapshot = xcalloc (n, sizeof *snapshot);
  for (solver_job *j = live_head; j && i < n; j = j->next_live)
    {
      solver_job_ref (j);
      snapshot[i++] = j;
    }
  pthread_mutex_unlock (&live_lock);

  for (size_t k = 0; k < i; k++)
    {
      solver_job_cancel (snapshot[k], why);
      solver_job_unref (snapshot[k]);
    }
  free (snapshot);

  pthread_mutex_lock (&live_lock);
  while (live_count > 0)
    pthread_cond_wait (&live_changed, &live_lock);
  pthread_mutex_unlock (&live_lock);
}

size_t
solver_jobs_running (void)
{
  pthread_mutex_lock (&live_lock);
  size_t n = live_count;
  pthread_mutex_unlock (&live_lock);
  return n;
}

/* ---- summaries --------------------------------------------------------------- */

void
solver_job_set_kind (solver_job *job, const char *kind)
{
  pthread_mutex_lock (&job->lock);
  free (job->kind);
  job->kind = xstrdup (kind);
  pthread_mutex_unlock (&job->lock);
}

void
solver_job_keep_dir (solver_job *job, bool keep)
{
  pthread_mutex_lock (&job->lock);
  job->keep_dir = keep;
  pthread_mutex_unlock (&job->lock);
}

void
solver_job_add_output (solver_job *job, size_t exporter, const char *type, const char *path, uint64_t size)
{
  pthread_mutex_lock (&job->lock);
  job->outputs = xrealloc (job->outputs, (job->n_outputs + 1) * sizeof *job->outputs);
  job->outputs[job->n_outputs].exporter = exporter;
  job->outputs[job->n_outputs].type = xstrdup (type);
  job->outputs[job->n_outputs].path = xstrdup (path);
  job->outputs[job->n_outputs].size = size;
  job->n_outputs++;
  pthread_mutex_unlock (&job->lock);
}

const char *
solver_job_state_name (enum solver_job_state s)
{
  switch (s)
    {
    case SOLVER_JOB_QUEUED:
      return "queued";
    case SOLVER_JOB_RUNNING:
      return "running";
    case SOLVER_JOB_SUCCEEDED:
      return "succeeded";
    case SOLVER_JOB_FAILED:
      return "failed";
    case SOLVER_JOB_CANCELLED:
      return "cancelled";
    case SOLVER_JOB_INTERRUPTED:
      return "interrupted";
    }
  return "unknown";
}

void
solver_job_summarize (solver_job *job, struct solver_job_summary *out)
{
  memset (out, 0, sizeof *out);
  pthread_mutex_lock (&job->lock);
  out->ref = xstrdup (job->id);
  out->kind = xstrdup (job->kind ? job->kind : "");
  out->state = job->state;
  out->created_ns = job->created_ns;
  out->started_ns = job->started_ns;
  out->finished_ns = job->finished ? job->finished_ns : 0;
  out->error = job->final_error ? xstrdup (job->final_error) : NULL;
  out->response = strv_copy (job->final_response);
  out->n_outputs = job->n_outputs;
  out->outputs = xcalloc (job->n_outputs + 1, sizeof *out->outputs);
  for (size_t i = 0; i < job->n_outputs; i++)
    {
      out->outputs[i].exporter = job->outputs[i].exporter;
      out->outputs[i].type = xstrdup (job->outputs[i].type);
      out->outputs[i].path = xstrdup (job->outputs[i].path);
      out->outputs[i].size = job->outputs[i].size;
    }
  pthread_mutex_unlock (&job->lock);
}

void
solver_job_summary_free (struct solver_job_summary *s)
{
  free (s->ref);
  free (s->kind);
  free (s->error);
  ps_strv_free_raw (s->response);
  for (size_t i = 0; i < s->n_outputs; i++)
    {
      free (s->outputs[i].type);
      free (s->outputs[i].path);
    }
  free (s->outputs);
  memset (s, 0, sizeof *s);
}

/* ---- registry by ref ------------------------------------------------------------ */

int
solver_jobs_register (solver_job *job, ps_error **err)
{
  pthread_mutex_lock (&reg_lock);
  for (solver_job *j = reg_head; j; j = j->next_reg)
    if (strcmp (j->id, job->id) == 0)
      {
        bool live = !j->finished;
        pthread_mutex_unlock (&reg_lock);
        if (live)
          return ps_error_set (err, 409, "a solve with ref \"%s\" is already running", job->id);
        /* A finished job with the same ref is replaced. */
        pthread_mutex_lock (&reg_lock);
        for (solver_job **p = &reg_head; *p; p = &(*p)->next_reg)
          if (*p == j)
            {
              *p = j->next_reg;
              j->registered = false;
              break;
            }
        pthread_mutex_unlock (&reg_lock);
        if (j->keep_dir && j->dir[0])
          ps_rm_rf (j->dir, NULL);
        solver_job_unref (j);
        pthread_mutex_lock (&reg_lock);
        break;
      }
  solver_job_ref (job);
  job->registered = true;
  job->next_reg = reg_head;
  reg_head = job;
  pthread_cond_broadcast (&reg_changed);
  pthread_mutex_unlock (&reg_lock);
  write_record (job);
  return 0;
}

void
solver_jobs_unregister (solver_job *job)
{
  bool found = false;
  pthread_mutex_lock (&reg_lock);
  for (solver_job **p = &reg_head; *p; p = &(*p)->next_reg)
    if (*p == job)
      {
        *p = job->next_reg;
        job->registered = false;
        found = true;
        break;
      }
  pthread_mutex_unlock (&reg_lock);
  if (found)
    {
      remove_record (job);
      solver_job_unref (job);
    }
}

/* The registered job with `ref`, a new reference; reg_lock held. */
static solver_job *
find_locked (const char *ref)
{
  for (solver_job *j = reg_head; j; j = j->next_reg)
    if (strcmp (j->id, ref) == 0)
      {
        solver_job_ref (j);
        return j;
      }
  return NULL;
}

solver_job *
solver_jobs_lookup (const char *ref)
{
  pthread_mutex_lock (&reg_lock);
  solver_job *found = find_locked (ref);
  pthread_mutex_unlock (&reg_lock);
  return found;
}

solver_job *
solver_jobs_wait_for (const char *ref, int timeout_ms)
{
  struct timespec deadline = ps_deadline_after_ms (CLOCK_REALTIME, timeout_ms);
  pthread_mutex_lock (&reg_lock);
  solver_job *found;
  while ((found = find_locked (ref)) == NULL)
    if (pthread_cond_timedwait (&reg_changed, &reg_lock, &deadline) == ETIMEDOUT)
      {
        found = find_locked (ref);
        break;
      }
  pthread_mutex_unlock (&reg_lock);
  return found;
}

solver_job **
solver_jobs_list (size_t *n)
{
  pthread_mutex_lock (&reg_lock);
  size_t count = 0;
  for (solver_job *j = reg_head; j; j = j->next_reg)
    count++;
  solver_job **v = xcalloc (count + 1, sizeof *v);
  size_t i = 0;
  for (solver_job *j = reg_head; j; j = j->next_reg)
    {
      solver_job_ref (j);
      v[i++] = j;
    }
  pthread_mutex_unlock (&reg_lock);
  *n = count;
  return v;
}

void
solver_jobs_list_free (solver_job **jobs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    solver_job_unref (jobs[i]);
  free (jobs);
}

void
solver_jobs_expire (int64_t ttl_ms)
{
  int64_t now = ps_now_ns ();
  for (;;)
    {
      solver_job *victim = NULL;
      pthread_mutex_lock (&reg_lock);
      for (solver_job **p = &reg_head; *p; p = &(*p)->next_reg)
        {
          solver_job *j = *p;
          pthread_mutex_lock (&j->lock);
          bool expired = j->finished && (now - j->finished_ns) / 1000000 > ttl_ms;
          pthread_mutex_unlock (&j->lock);
          if (expired)
            {
              *p = j->next_reg;
              j->registered = false;
              victim = j;
              break;
            }
        }
      pthread_mutex_unlock (&reg_lock);
      if (victim == NULL)
        return;
      if (victim->keep_dir && victim->dir[0])
        {
          ps_error *err = NULL;
          if (ps_rm_rf (victim->dir, &err) < 0)
            {
              ps_warn ("job %s: cannot remove %s: %s", victim->id, victim->dir, err->msg);
              ps_error_free (err);
            }
        }
      remove_record (victim);
      ps_debug ("job %s: expired", victim->id);
      solver_job_unref (victim);
    }
}

/* ---- job records ---------------------------------------------------------------- */

void
solver_jobs_set_records_dir (const char *dir)
{
  free (records_dir);
  records_dir = dir ? xstrdup (dir) : NULL;
  if (records_dir)
    ps_mkdir_p (records_dir, 0700, NULL);
}

static char *
record_path (const char *ref)
{
  return xasprintf ("%s/%s.json", records_dir, ref);
}

/* Write the job's record (temp + rename, so a crash leaves the old one or
   the new one, never half of either). */
static void
write_record (solver_job *job)
{
  if (records_dir == NULL || !job->registered)
    return;
  struct solver_job_summary sum;
  solver_job_summarize (job, &sum);
  cJSON *o = cJSON_CreateObject ();
  cJSON_AddStringToObject (o, "ref", sum.ref);
  cJSON_AddStringToObject (o, "kind", sum.kind);
  cJSON_AddStringToObject (o, "state", solver_job_state_name (sum.state));
  cJSON_AddNumberToObject (o, "created", (double) sum.created_ns);
  cJSON_AddNumberToObject (o, "started", (double) sum.started_ns);
  cJSON_AddNumberToObject (o, "finished", (double) sum.finished_ns);
  if (sum.error)
    cJSON_AddStringToObject (o, "error", sum.error);
  cJSON *resp = cJSON_AddArrayToObject (o, "response");
  for (char **p = sum.response; p && *p; p++)
    cJSON_AddItemToArray (resp, cJSON_CreateString (*p));
  char *text = cJSON_PrintUnformatted (o);
  cJSON_Delete (o);
  cleanup_free char *path = record_path (sum.ref);
  cleanup_free char *tmp = xasprintf ("%s.tmp", path);
  if (ps_write_file (tmp, text, strlen (text), 0600, NULL) == 0 && rename (tmp, path) < 0)
    unlink (tmp);
  cJSON_free (text);
  solver_job_summary_free (&sum);
}

static void
remove_record (solver_job *job)
{
  if (records_dir == NULL)
    return;
  cleanup_free char *path = record_path (job->id);
  unlink (path);
}

size_t
solver_jobs_restore_records (void)
{
  if (records_dir == NULL)
    return 0;
  DIR *d = opendir (records_dir);
  if (d == NULL)
    return 0;
  size_t interrupted = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (!ps_str_has_suffix (de->d_name, ".json"))
        continue;
      cleanup_free char *path = xasprintf ("%s/%s", records_dir, de->d_name);
      cleanup_free char *text = NULL;
      if (ps_read_file (path, PS_MAX_JOB_RECORD_BYTES, &text, NULL, NULL) < 0)
        continue;
      cJSON *o = cJSON_Parse (text);
      const cJSON *ref = cJSON_GetObjectItemCaseSensitive (o, "ref");
      const cJSON *state = cJSON_GetObjectItemCaseSensitive (o, "state");
      if (!cJSON_IsString (ref) || !cJSON_IsString (state))
        {
          cJSON_Delete (o);
          unlink (path);
          continue;
        }
      solver_job *job = solver_job_new (ref->valuestring, NULL);
      const cJSON *kind = cJSON_GetObjectItemCaseSensitive (o, "kind");
      job->kind = xstrdup (cJSON_IsString (kind) ? kind->valuestring : "");
      const cJSON *c = cJSON_GetObjectItemCaseSensitive (o, "created");
      const cJSON *st = cJSON_GetObjectItemCaseSensitive (o, "started");
      const cJSON *f = cJSON_GetObjectItemCaseSensitive (o, "finished");
      job->created_ns = cJSON_IsNumber (c) ? (int64_t) c->valuedouble : 0;
      job->started_ns = cJSON_IsNumber (st) ? (int64_t) st->valuedouble : 0;
      struct solver_event ev = { 0 };
      bool ended = strcmp (state->valuestring, "succeeded") == 0 || strcmp (state->valuestring, "failed") == 0
                   || strcmp (state->valuestring, "cancelled") == 0 || strcmp (state->valuestring, "interrupted") == 0;
      if (!ended)
        {
          interrupted++;
          ev.kind = SOLVER_EV_ERROR;
          ev.error = xstrdup ("interrupted: podsolved stopped while this job ran");
        }
      else if (strcmp (state->valuestring, "succeeded") == 0)
        {
          ev.kind = SOLVER_EV_RESULT;
          const cJSON *resp = cJSON_GetObjectItemCaseSensitive (o, "response");
          size_t n = (size_t) cJSON_GetArraySize (resp);
          ev.response = xcalloc (n + 1, sizeof (char *));
          size_t k = 0;
          const cJSON *it;
          cJSON_ArrayForEach (it, resp)
            if (cJSON_IsString (it))
              ev.response[k++] = xstrdup (it->valuestring);
        }
      else
        {
          ev.kind = SOLVER_EV_ERROR;
          const cJSON *e = cJSON_GetObjectItemCaseSensitive (o, "error");
          ev.error = xstrdup (cJSON_IsString (e) ? e->valuestring : state->valuestring);
        }
      pthread_mutex_lock (&job->lock);
      emit_locked (job, &ev);
      if (!ended)
        job->state = SOLVER_JOB_INTERRUPTED;
      else if (strcmp (state->valuestring, "cancelled") == 0)
        job->state = SOLVER_JOB_CANCELLED;
      else if (strcmp (state->valuestring, "interrupted") == 0)
        job->state = SOLVER_JOB_INTERRUPTED;
      /* An interrupted job's clock for expiry starts now. */
      job->finished_ns = !ended || !cJSON_IsNumber (f) ? ps_now_ns () : (int64_t) f->valuedouble;
      job->finished = true;
      pthread_mutex_unlock (&job->lock);
      cJSON_Delete (o);
      pthread_mutex_lock (&reg_lock);
      job->registered = true;
      job->next_reg = reg_head;
      reg_head = job; /* the registry keeps the creator's reference */
      pthread_mutex_unlock (&reg_lock);
      write_record (job);
    }
  closedir (d);
  return interrupted;
}
