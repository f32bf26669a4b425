/* cache_gc.h — keeping the build cache under a bound by itself, as
 * BuildKit's garbage collection does (its worker's gcpolicy): entries not
 * used for longer than keep_duration go, and while the cache holds more
 * than keep_bytes the least recently used entries go.  Every type of entry
 * counts (cache_prune.h), untagged images that are the leftovers of builds
 * (image.intermediate, image.dangling) included; tagged images never go.
 *
 * A thread looks after each build ends (cache_gc_kick) and every
 * CACHE_GC_INTERVAL_S; a look that finds nothing to remove takes no lock,
 * and a collection never waits for running builds: it is tried again at
 * the next look. */
#ifndef SOLVER_CACHE_GC_H
#define SOLVER_CACHE_GC_H

#include "common/ps.h"

#define CACHE_GC_INTERVAL_S 300

struct cache_gc_policy
{
  uint64_t keep_bytes;      /* 0: no size bound */
  int64_t keep_duration_ns; /* 0: no age bound */
};

/* Start collecting under `state_dir` with `policy` (copied); nothing is
   started when the policy bounds nothing. */
int cache_gc_start (const char *state_dir, const struct cache_gc_policy *policy, ps_error **err);
/* Stop the thread (if any) and wait for it. */
void cache_gc_stop (void);
/* A build ended: look soon. */
void cache_gc_kick (void);
/* The policy in force, NULL when there is none (ListWorkers' GCPolicy). */
const struct cache_gc_policy *cache_gc_policy (void);
/* One look, now, in the calling thread: what a kick leads to.  Returns the
   bytes reclaimed (0 when nothing was due or the builds held the cache). */
uint64_t cache_gc_collect (void);

#endif
