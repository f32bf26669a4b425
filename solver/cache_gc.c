/* cache_gc.c — the build cache's garbage collection (see cache_gc.h). */
#define _GNU_SOURCE
#include "solver/cache_gc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "solver/cache_prune.h"

static struct
{
  pthread_mutex_t lock;
  pthread_cond_t wake;
  pthread_t thread;
  bool running, stop, kicked;
  char *state_dir;
  struct cache_gc_policy policy;
} gc = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER };

const struct cache_gc_policy *
cache_gc_policy (void)
{
  return gc.state_dir ? &gc.policy : NULL;
}

/* Remove what `o` selects, down to `budget` bytes (0: all of it), when a
   listing with the same options finds more than that; the bytes freed. */
static uint64_t
collect_with (struct cache_prune_opts *o, uint64_t budget, const char *why)
{
  ps_error *err = NULL;
  struct cache_prune_report usage = { 0 };
  if (cache_usage (gc.state_dir, o, &usage, &err) < 0)
    {
      ps_warn ("cache gc: %s", err->msg);
      ps_error_free (err);
      return 0;
    }
  uint64_t total = usage.reclaimed;
  size_t n = usage.n_deleted;
  cache_prune_report_free (&usage);
  if (n == 0 || (budget > 0 && total <= budget))
    return 0;
  o->max_used_bytes = budget;
  o->wait_ms = 0; /* never wait for builds: the next look tries again */
  struct cache_prune_report rep = { 0 };
  if (cache_prune (gc.state_dir, o, &rep, &err) < 0)
    {
      ps_debug ("cache gc: not now: %s", err->msg);
      ps_error_free (err);
      return 0;
    }
  uint64_t freed = rep.reclaimed;
  if (rep.n_deleted)
    ps_info ("cache gc: %zu entries, %llu bytes reclaimed (%s)", rep.n_deleted, (unsigned long long) freed, why);
  cache_prune_report_free (&rep);
  return freed;
}

uint64_t
cache_gc_collect (void)
{
  if (gc.state_dir == NULL)
    return 0;
  uint64_t freed = 0;
  if (gc.policy.keep_duration_ns > 0)
    {
      /* everything unused for longer than the duration (a budget of 0) */
      struct cache_prune_opts o = { .all = true, .keep_duration_ns = gc.policy.keep_duration_ns };
      freed += collect_with (&o, 0, "unused for longer than --gc-keep-duration");
      cache_prune_opts_free (&o);
    }
  if (gc.policy.keep_bytes > 0)
    {
      /* the least recently used first, down to the budget */
      struct cache_prune_opts o = { .all = true };
      freed += collect_with (&o, gc.policy.keep_bytes, "over --gc-keep-storage");
      cache_prune_opts_free (&o);
    }
  return freed;
}

static void *
gc_thread (void *arg)
{
  (void) arg;
  pthread_mutex_lock (&gc.lock);
  while (!gc.stop)
    {
      if (!gc.kicked)
        {
          struct timespec until;
          clock_gettime (CLOCK_REALTIME, &until);
          until.tv_sec += CACHE_GC_INTERVAL_S;
          while (!gc.kicked && !gc.stop)
            if (pthread_cond_timedwait (&gc.wake, &gc.lock, &until) == ETIMEDOUT)
              break;
        }
      if (gc.stop)
        break;
      gc.kicked = false;
      pthread_mutex_unlock (&gc.lock);
      cache_gc_collect ();
      pthread_mutex_lock (&gc.lock);
    }
  pthread_mutex_unlock (&gc.lock);
  return NULL;
}

int
cache_gc_start (const char *state_dir, const struct cache_gc_policy *policy, ps_error **err)
{
  if (policy->keep_bytes == 0 && policy->keep_duration_ns <= 0)
    return 0;
  gc.state_dir = xstrdup (state_dir);
  gc.policy = *policy;
  gc.kicked = true; /* a first look at start-up */
  int e = pthread_create (&gc.thread, NULL, gc_thread, NULL);
  if (e)
    return ps_error_set_errno (err, 500, e, "start the cache gc thread");
  gc.running = true;
  ps_info ("cache gc: on (keep at most %llu bytes, 0 = no bound; drop what is unused for %lld s, 0 = never)",
           (unsigned long long) policy->keep_bytes, (long long) (policy->keep_duration_ns / 1000000000));
  return 0;
}

void
cache_gc_kick (void)
{
  pthread_mutex_lock (&gc.lock);
  gc.kicked = true;
  pthread_cond_signal (&gc.wake);
  pthread_mutex_unlock (&gc.lock);
}

void
cache_gc_stop (void)
{
  if (!gc.running)
    return;
  pthread_mutex_lock (&gc.lock);
  gc.stop = true;
  pthread_cond_signal (&gc.wake);
  pthread_mutex_unlock (&gc.lock);
  pthread_join (gc.thread, NULL);
  gc.running = false;
}
