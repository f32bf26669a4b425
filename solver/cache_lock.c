/* cache_lock.c — the build cache lock (see cache_lock.h). */
#include "solver/cache_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

static char *cache_lock_path, *cache_gate_path;

static void
poll_sleep (void)
{
  struct timespec ts = { 0, CACHE_LOCK_POLL_MS * 1000000L };
  nanosleep (&ts, NULL);
}

void
cache_lock_configure (const char *lock_path, const char *gate_path)
{
  free (cache_lock_path);
  free (cache_gate_path);
  cache_lock_path = lock_path ? xstrdup (lock_path) : NULL;
  cache_gate_path = gate_path ? xstrdup (gate_path) : NULL;
}

int
cache_lock_shared (const char *who, bool (*cancelled) (void *ud), void (*waiting) (void *ud), void *ud)
{
  if (cache_lock_path == NULL || cache_gate_path == NULL)
    return -2;
  int gate = open (cache_gate_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int lock = open (cache_lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (gate < 0 || lock < 0)
    {
      /* An unusable state dir fails the build elsewhere, loudly; a lock
         that cannot be had must not stop builds on its own. */
      ps_warn ("%s: cache lock: %s", who, strerror (errno));
      if (gate >= 0)
        close (gate);
      if (lock >= 0)
        close (lock);
      return -2;
    }
  bool announced = false;
  while (flock (gate, LOCK_SH | LOCK_NB) < 0)
    {
      if (errno != EWOULDBLOCK && errno != EINTR)
        break;
      if (cancelled && cancelled (ud))
        {
          close (gate);
          close (lock);
          return -1;
        }
      if (!announced)
        {
          if (waiting)
            waiting (ud);
          announced = true;
        }
      poll_sleep ();
    }
  /* With the gate held shared no prune holds the lock: this never waits. */
  while (flock (lock, LOCK_SH) < 0 && errno == EINTR)
    ;
  close (gate);
  return lock;
}

static int
lock_exclusive (int fd, const char *what, bool (*give_up) (void *data), void *give_up_data, int64_t wait_ms,
                int64_t deadline, ps_error **err)
{
  while (flock (fd, LOCK_EX | LOCK_NB) < 0)
    {
      if (errno != EWOULDBLOCK && errno != EINTR)
        return ps_error_set_errno (err, 500, errno, "lock %s", what);
      if (give_up && give_up (give_up_data))
        return ps_error_set (err, 499, "the client went away while the prune waited for %s", what);
      if (ps_deadline_passed (deadline))
        return ps_error_set (err, 409, "%s did not end within %lld s; prune again when they have",
                             what, (long long) (wait_ms / 1000));
      poll_sleep ();
    }
  return 0;
}

int
cache_lock_exclusive (const char *state_dir, bool (*give_up) (void *data), void *give_up_data, int64_t wait_ms,
                      int *gate_out, int *lock_out, ps_error **err)
{
  cleanup_free char *gate_path = xasprintf ("%s/%s", state_dir, CACHE_PRUNE_GATE_FILE);
  cleanup_free char *lock_path = xasprintf ("%s/%s", state_dir, CACHE_LOCK_FILE);
  cleanup_close int gate = open (gate_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (gate < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", gate_path);
  cleanup_close int lock = open (lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", lock_path);
  int64_t deadline = ps_deadline_ns_after_ms (wait_ms);
  if (lock_exclusive (gate, "another prune", give_up, give_up_data, wait_ms, deadline, err) < 0
      || lock_exclusive (lock, "running builds", give_up, give_up_data, wait_ms, deadline, err) < 0)
    return -1;
  *gate_out = gate;
  *lock_out = lock;
  gate = lock = -1;
  return 0;
}
