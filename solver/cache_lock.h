/* cache_lock.h — builds and a cache prune exclude each other with two
 * flock files in the state directory: every running job holds
 * CACHE_LOCK_FILE shared; a prune first takes CACHE_PRUNE_GATE_FILE
 * exclusively, which new jobs wait for before taking their shared lock (so
 * a stream of builds cannot starve a prune), then CACHE_LOCK_FILE
 * exclusively, waiting for running jobs to end. */
#ifndef SOLVER_CACHE_LOCK_H
#define SOLVER_CACHE_LOCK_H

#include "common/ps.h"

#define CACHE_LOCK_FILE "cache.lock"
#define CACHE_PRUNE_GATE_FILE "cache-prune.lock"

/* How often a waiting side tries again. */
#define CACHE_LOCK_POLL_MS 200

/* ---- the builds' side ---- */

/* The two files builds use (NULL: no locking, as in the unit tests). */
void cache_lock_configure (const char *lock_path, const char *gate_path);

/* Take the shared lock for one build, after passing the gate (a shared
   flock taken and dropped).  While a prune holds the gate, `waiting(ud)`
   is called once and `cancelled(ud)` is polled.  Returns -2 when no lock
   is configured (or its files cannot be opened: a warning
   "<who>: cache lock: <why>", and the build goes on), -1 when cancelled,
   else the fd to close when the build ends. */
int cache_lock_shared (const char *who, bool (*cancelled) (void *ud), void (*waiting) (void *ud), void *ud);

/* ---- the prune's side ---- */

/* Take the gate, then the lock, both exclusively, for a prune of the cache
   in `state_dir`: a 409 when running builds did not end within wait_ms, a
   499 when give_up(give_up_data) said the client went away.  On success
   *gate and *lock are the fds to close when the prune is done. */
int cache_lock_exclusive (const char *state_dir, bool (*give_up) (void *data), void *give_up_data, int64_t wait_ms,
                          int *gate, int *lock, ps_error **err);

#endif
