/* process.h — child processes: spawn, pump, wait, terminate. */
#ifndef COMMON_PROCESS_H
#define COMMON_PROCESS_H

#include <pthread.h>
#include <sys/types.h>

#include "common/ps.h"

struct ps_below;

/* A process as it was seen: its start time (clock ticks after boot, field
   22 of /proc/PID/stat) tells a recycled pid apart. */
struct ps_proc_id
{
  pid_t pid;
  unsigned long long start;
};

struct ps_child
{
  pid_t pid;   /* also the process group id */
  int out_fd;  /* read end of the child's stdout, or -1 */
  int err_fd;  /* read end of the child's stderr, or -1 */
  struct ps_below *below; /* ps_child_watch_below's list, or NULL */
};

/* Spawn argv in a new process group with stdin from /dev/null and
   stdout/stderr on pipes. */
int ps_child_spawn (char *const *argv, struct ps_child *child, ps_error **err);
/* The same with "NAME=value" entries added to (or replacing in) the
   daemon's environment; `env` may be NULL. */
int ps_child_spawn_env (char *const *argv, char *const *env, struct ps_child *child, ps_error **err);
/* The same with the child's stdin and stdout both on `stdio_fd` (a
   connected socket the child speaks a protocol over; the caller keeps its
   own copy) when it is >= 0: child->out_fd is then -1. */
int ps_child_spawn_stdio (char *const *argv, char *const *env, int stdio_fd, struct ps_child *child,
                          ps_error **err);
/* Wait for the child; returns its exit status (128+signal if killed).
   A watched child (ps_child_watch_below) killed by a signal: what ran
   below it at the last look and still runs is killed (SIGKILL). */
int ps_child_wait (struct ps_child *child);
/* Keep a list of the processes below the child, refreshed while
   ps_child_pump runs (PS_CHILD_BELOW_REFRESH_MS), so that if the child is
   killed from outside, what it ran does not live on under init: a RUN
   step's container outliving a SIGKILLed buildah.  (Our own cancels
   already do this: ps_children_terminate.) */
void ps_child_watch_below (struct ps_child *child);
/* Called by ps_child_wait when a watched child died of a signal, once what
   still ran below it was killed: `procs` is the last look at what ran
   below it (borrowed for the call), e.g. to find the runtime's records of
   containers whose init was among them. */
typedef void (*ps_child_killed_fn) (void *ud, const struct ps_proc_id *procs, size_t n);
/* ps_child_watch_below, then `fn` if the child dies of a signal. */
void ps_child_watch_below_then (struct ps_child *child, ps_child_killed_fn fn, void *ud);
/* What ps_child_wait's status means, for an error a user reads: "exit
   status 3", or "killed by signal 9 (SIGKILL)" for 128+N (a process killed
   from outside, e.g. by the OOM killer, is told apart from one that failed).
   malloc'd. */
char *ps_exit_text (int status);
/* Ask the child to stop (SIGTERM to the leader: inside a RUN step buildah
   then removes its working container, see orphans.h for elsewhere), then
   SIGKILL the whole group after grace_ms. */
void ps_child_terminate (pid_t pid, int grace_ms);
/* The same for several children at once (one grace period for all). */
void ps_children_terminate (const pid_t *pids, size_t n, int grace_ms);

/* Called with each chunk a child writes; stream 1 = stdout, 2 = stderr;
   data NULL and len 0 once when that stream reaches EOF. */
typedef void (*ps_child_chunk_fn) (void *ud, int stream, const char *data, size_t len);
/* Read the child's stdout and stderr until both close, handing every
   chunk to on_chunk as it arrives.  Returns 0, or -1 if poll failed. */
int ps_child_pump (struct ps_child *child, ps_child_chunk_fn on_chunk, void *ud);

/* The first executable `name` in the directories of $PATH (default_path
   when PATH is unset or empty; empty elements are skipped), malloc'd, or
   NULL when there is none. */
char *ps_find_in_path (const char *name, const char *default_path);

/* Run argv to completion, capturing stdout and stderr (each bounded). */
int ps_run_capture (char *const *argv, char **out, char **errout, int *status, ps_error **err);

/* Start a thread running fn(arg): detached (nobody joins it) or joinable
   into *th; `stack` bytes of stack, 0 for the default.  Returns
   pthread_create's result (0, or an errno value). */
int ps_thread_start (pthread_t *th, void *(*fn) (void *), void *arg, size_t stack, bool detached);

#endif
