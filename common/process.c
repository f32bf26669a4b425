/* process.c — child processes: spawn in their own process group with the
 * daemon's death signal, pump their output, wait, and stop them (and what
 * runs below them) with a grace period. */
#define _GNU_SOURCE
#include "common/process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"

extern char **environ;

/* environ with `extra` entries replacing same-named ones. */
static char **
merged_env (char *const *extra)
{
  size_t n = 0, m = 0;
  while (environ[n])
    n++;
  while (extra && extra[m])
    m++;
  char **env = xcalloc (n + m + 1, sizeof (char *));
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    {
      size_t name_len = strcspn (environ[i], "=");
      bool replaced = false;
      for (size_t j = 0; j < m && !replaced; j++)
        replaced = strncmp (extra[j], environ[i], name_len) == 0 && extra[j][name_len] == '=';
      if (!replaced)
        env[k++] = environ[i];
    }
  for (size_t j = 0; j < m; j++)
    env[k++] = extra[j];
  return env;
}

int
ps_child_spawn (char *const *argv, struct ps_child *child, ps_error **err)
{
  return ps_child_spawn_env (argv, NULL, child, err);
}

int
ps_child_spawn_env (char *const *argv, char *const *extra_env, struct ps_child *child, ps_error **err)
{
  return ps_child_spawn_stdio (argv, extra_env, -1, child, err);
}

int
ps_child_spawn_stdio (char *const *argv, char *const *extra_env, int stdio_fd, struct ps_child *child,
                      ps_error **err)
{
  int out[2] = { -1, -1 }, errp[2] = { -1, -1 };
  if ((stdio_fd < 0 && pipe2 (out, O_CLOEXEC) < 0) || pipe2 (errp, O_CLOEXEC) < 0)
    {
      int e = errno;
      if (out[0] >= 0)
        {
          close (out[0]);
          close (out[1]);
        }
      return ps_error_set_errno (err, 500, e, "pipe");
    }

  /* fork + exec rather than posix_spawn: the child must ask for SIGTERM
     when podsolved dies (PR_SET_PDEATHSIG), so a killed daemon never
     leaves buildah running and buildah removes its working containers.
     Between fork and exec only async-signal-safe calls are made. */
  cleanup_free char **env = extra_env ? merged_env (extra_env) : NULL;
  char *const *envp = env ? env : environ;
  int devnull = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t parent = getpid ();
  sigset_t all, old;
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  pid_t pid = fork ();
  if (pid == 0)
    {
      prctl (PR_SET_PDEATHSIG, SIGTERM);
      if (getppid () != parent)
        _exit (127); /* the parent died before prctl: behave as if signalled */
      setpgid (0, 0);
      for (int sig = 1; sig < NSIG; sig++)
        signal (sig, SIG_DFL);
      dup2 (stdio_fd >= 0 ? stdio_fd : devnull, 0);
      dup2 (stdio_fd >= 0 ? stdio_fd : out[1], 1);
      dup2 (errp[1], 2);
      sigset_t none;
      sigemptyset (&none);
      sigprocmask (SIG_SETMASK, &none, NULL);
      execvpe (argv[0], argv, envp);
      _exit (127);
    }
  int fork_errno = errno;
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (devnull >= 0)
    close (devnull);
  if (out[1] >= 0)
    close (out[1]);
  close (errp[1]);
  if (pid < 0)
    {
      if (out[0] >= 0)
        close (out[0]);
      close (errp[0]);
      return ps_error_set_errno (err, 500, fork_errno, "cannot run %s", argv[0]);
    }
  if (ps_log_enabled (PS_LOG_DEBUG))
    {
      ps_buf line = { 0 };
      for (char *const *a = argv; *a; a++)
        {
          ps_buf_puts (&line, *a);
          ps_buf_puts (&line, " ");
        }
      ps_debug ("spawned pid %d: %s", (int) pid, line.data);
      ps_buf_free (&line);
    }
  child->pid = pid;
  child->out_fd = out[0];
  child->err_fd = errp[0];
  child->below = NULL;
  return 0;
}

static void below_kill_survivors (struct ps_child *child);
static void below_free (struct ps_child *child);

int
ps_child_wait (struct ps_child *child)
{
  int status = 0;
  int ret = -1;
  while (waitpid (child->pid, &status, 0) < 0)
    if (errno != EINTR)
      goto out;
  if (child->out_fd >= 0)
    close (child->out_fd);
  if (child->err_fd >= 0)
    close (child->err_fd);
  child->out_fd = child->err_fd = -1;
  if (WIFEXITED (status))
    ret = WEXITSTATUS (status);
  else if (WIFSIGNALED (status))
    {
      ret = 128 + WTERMSIG (status);
      below_kill_survivors (child);
    }
out:
  below_free (child);
  return ret;
}

char *
ps_exit_text (int status)
{
  if (status > 128 && status < 128 + NSIG)
    {
      const char *abbrev = sigabbrev_np (status - 128);
      if (abbrev)
        return xasprintf ("killed by signal %d (SIG%s)", status - 128, abbrev);
      return xasprintf ("killed by signal %d", status - 128);
    }
  return xasprintf ("exit status %d", status);
}

/* A process as /proc shows it: the start time tells a recycled pid apart. */
struct proc_ref
{
  pid_t pid;
  pid_t ppid;
  char state; /* R, S, Z, ... */
  unsigned long long start;
};

static bool
read_proc_stat (pid_t pid, struct proc_ref *out)
{
  char path[64];
  snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
  cleanup_free char *stat = NULL;
  if (ps_read_file (path, 4096, &stat, NULL, NULL) < 0)
    return false;
  const char *rp = strrchr (stat, ')');
  if (rp == NULL)
    return false;
  /* after "pid (comm) ": state ppid ... starttime is field 22 */
  char state = 0;
  int ppid = 0;
  unsigned long long start = 0;
  const char *f = rp + 2;
  if (sscanf (f, "%c %d", &state, &ppid) != 2)
    return false;
  for (int field = 3; field < 22 && f; field++)
    {
      f = strchr (f, ' ');
      if (f)
        f++;
    }
  if (f == NULL || sscanf (f, "%llu", &start) != 1)
    return false;
  out->pid = pid;
  out->ppid = ppid;
  out->state = state;
  out->start = start;
  return true;
}

/* True while `pid` runs (a zombie counts as gone: it has exited, and its
   waiter in the job thread will reap it). */
static bool
process_running (pid_t pid)
{
  struct proc_ref p;
  return read_proc_stat (pid, &p) && p.state != 'Z';
}

/* Every process below `roots` now.  buildah makes itself the subreaper of
   what it runs, so the container's processes are among them. */
static void
descendants (const pid_t *roots, size_t n, struct proc_ref **out, size_t *n_out)
{
  *out = NULL;
  *n_out = 0;
  DIR *d = opendir ("/proc");
  if (d == NULL)
    return;
  struct proc_ref *all = NULL;
  size_t n_all = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      char *end;
      long pid = strtol (de->d_name, &end, 10);
      if (*end || pid <= 0)
        continue;
      if (n_all == cap)
        all = xrealloc (all, (cap = cap ? 2 * cap : 256) * sizeof *all);
      if (read_proc_stat ((pid_t) pid, &all[n_all]))
        n_all++;
    }
  closedir (d);
  /* A breadth-first walk down from the roots. */
  bool *taken = xcalloc (n_all ? n_all : 1, sizeof *taken);
  struct proc_ref *found = NULL;
  size_t n_found = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < n_all; k++)
      if (!taken[k] && all[k].ppid == roots[i] && roots[i] > 0)
        {
          taken[k] = true;
          found = xrealloc (found, (n_found + 1) * sizeof *found);
          found[n_found++] = all[k];
        }
  for (size_t q = 0; q < n_found; q++)
    for (size_t k = 0; k < n_all; k++)
      if (!taken[k] && all[k].ppid == found[q].pid)
        {
          taken[k] = true;
          found = xrealloc (found, (n_found + 1) * sizeof *found);
          found[n_found++] = all[k];
        }
  free (taken);
  free (all);
  *out = found;
  *n_out = n_found;
}

/* ---- what runs below a watched child -------------------------------------- */

struct ps_below
{
  struct proc_ref *procs; /* at the last look */
  size_t n;
  struct timespec at;     /* when that was */
  ps_child_killed_fn then; /* or NULL */
  void *then_ud;
};

void
ps_child_watch_below (struct ps_child *child)
{
  if (child->below == NULL)
    child->below = xcalloc (1, sizeof *child->below);
}

void
ps_child_watch_below_then (struct ps_child *child, ps_child_killed_fn fn, void *ud)
{
  ps_child_watch_below (child);
  child->below->then = fn;
  child->below->then_ud = ud;
}

/* Every process below `root`, by its tasks' children lists: unlike
   descendants(), it reads only the subtree (a few files for a build), so
   it can be done often.  A process that exits meanwhile may be missed;
   one that started before the look is not. */
static void
subtree (pid_t root, struct proc_ref **out, size_t *n_out)
{
  struct proc_ref *found = NULL;
  size_t n_found = 0;
  pid_t parent = root;
  for (size_t q = 0;; q++)
    {
      char path[64];
      snprintf (path, sizeof path, "/proc/%d/task", (int) parent);
      DIR *d = opendir (path);
      struct dirent *de;
      while (d && (de = readdir (d)) != NULL)
        {
          if (de->d_name[0] == '.')
            continue;
          cleanup_free char *kids_path = xasprintf ("/proc/%d/task/%s/children", (int) parent, de->d_name);
          cleanup_free char *kids = NULL;
          if (ps_read_file (kids_path, 64 * 1024, &kids, NULL, NULL) < 0)
            continue;
          for (char *p = kids, *end; *p; p = end)
            {
              long pid = strtol (p, &end, 10);
              if (end == p)
                break;
              struct proc_ref r;
              if (pid > 0 && read_proc_stat ((pid_t) pid, &r) && r.ppid == parent)
                {
                  found = xrealloc (found, (n_found + 1) * sizeof *found);
                  found[n_found++] = r;
                }
            }
        }
      if (d)
        closedir (d);
      if (q >= n_found)
        break;
      parent = found[q].pid;
    }
  *out = found;
  *n_out = n_found;
}

static long long
ms_since (const struct timespec *t)
{
  struct timespec now;
  clock_gettime (CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t->tv_sec) * 1000LL + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* Look again, unless the last look is recent.  An empty look (the child
   is exiting, its processes already handed to init) keeps the previous
   list: it is the one that names them. */
static void
below_refresh (struct ps_child *child, bool force)
{
  struct ps_below *b = child->below;
  if (b == NULL || (!force && b->at.tv_sec != 0 && ms_since (&b->at) < PS_CHILD_BELOW_REFRESH_MS))
    return;
  struct proc_ref *procs;
  size_t n;
  subtree (child->pid, &procs, &n);
  clock_gettime (CLOCK_MONOTONIC, &b->at);
  if (n == 0)
    {
      free (procs);
      return;
    }
  free (b->procs);
  b->procs = procs;
  b->n = n;
}

static void
below_free (struct ps_child *child)
{
  if (child->below)
    free (child->below->procs);
  free (child->below);
  child->below = NULL;
}

static void
below_kill_survivors (struct ps_child *child)
{
  struct ps_below *b = child->below;
  if (b == NULL)
    return;
  size_t killed = 0;
  for (size_t i = 0; i < b->n; i++)
    {
      struct proc_ref now;
      if (read_proc_stat (b->procs[i].pid, &now) && now.start == b->procs[i].start && now.state != 'Z'
          && kill (b->procs[i].pid, SIGKILL) == 0)
        killed++;
    }
  if (killed > 0)
    ps_warn ("pid %d was killed by a signal and left %zu process(es) running below it: killed them", (int) child->pid,
             killed);
  if (b->then && b->n > 0)
    {
      struct ps_proc_id *ids = xcalloc (b->n, sizeof *ids);
      for (size_t i = 0; i < b->n; i++)
        ids[i] = (struct ps_proc_id) { b->procs[i].pid, b->procs[i].start };
      b->then (b->then_ud, ids, b->n);
      free (ids);
    }
}

void
ps_children_terminate (const pid_t *pids, size_t n, int grace_ms)
{
  /* What runs below the children now: a buildah killed before it stopped
     its container would leave the container's processes to init. */
  struct proc_ref *below = NULL;
  size_t n_below = 0;
  descendants (pids, n, &below, &n_below);
  bool any = false;
  for (size_t i = 0; i < n; i++)
    any |= pids[i] > 0 && kill (pids[i], SIGTERM) == 0;
  if (!any)
    {
      free (below);
      return;
    }
  for (int waited = 0; waited < grace_ms; waited += 50)
    {
      bool running = false;
      for (size_t i = 0; i < n && !running; i++)
        running = pids[i] > 0 && process_running (pids[i]);
      if (!running)
        break;
      struct timespec ts = { 0, 50 * 1000000L };
      nanosleep (&ts, NULL);
    }
  /* buildah has cleaned up (or ran out of time): nothing of the groups,
     nor anything they started, may outlive it. */
  for (size_t i = 0; i < n; i++)
    if (pids[i] > 0)
      kill (-pids[i], SIGKILL);
  for (size_t i = 0; i < n_below; i++)
    {
      struct proc_ref now;
      if (read_proc_stat (below[i].pid, &now) && now.start == below[i].start)
        kill (below[i].pid, SIGKILL);
    }
  free (below);
}

void
ps_child_terminate (pid_t pid, int grace_ms)
{
  ps_children_terminate (&pid, 1, grace_ms);
}

int
ps_child_pump (struct ps_child *child, ps_child_chunk_fn on_chunk, void *ud)
{
  struct pollfd pfd[2] = { { child->out_fd, POLLIN, 0 }, { child->err_fd, POLLIN, 0 } };
  int open_fds = (child->out_fd >= 0) + (child->err_fd >= 0);
  char buf[16384];
  while (open_fds > 0)
    {
      below_refresh (child, false);
      int ready = poll (pfd, 2, child->below ? PS_CHILD_BELOW_REFRESH_MS : -1);
      if (ready < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      for (int i = 0; i < 2; i++)
        {
          if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
          ssize_t r = read (pfd[i].fd, buf, sizeof buf);
          if (r < 0 && errno == EINTR)
            continue;
          if (r <= 0)
            {
              on_chunk (ud, i + 1, NULL, 0);
              pfd[i].fd = -1; /* closed by ps_child_wait */
              open_fds--;
              continue;
            }
          on_chunk (ud, i + 1, buf, (size_t) r);
        }
    }
  return 0;
}

struct capture
{
  ps_buf b[2];
};

static void
capture_chunk (void *ud, int stream, const char *data, size_t len)
{
  ps_buf *b = &((struct capture *) ud)->b[stream - 1];
  if (len > 0 && b->len < PS_MAX_CAPTURE_BYTES)
    ps_buf_append (b, data, len);
}

int
ps_run_capture (char *const *argv, char **out, char **errout, int *status, ps_error **err)
{
  struct ps_child c;
  if (ps_child_spawn (argv, &c, err) < 0)
    return -1;
  struct capture cap = { 0 };
  ps_child_pump (&c, capture_chunk, &cap);
  int st = ps_child_wait (&c);
  if (status)
    *status = st;
  if (out)
    *out = ps_buf_steal (&cap.b[0]);
  else
    ps_buf_free (&cap.b[0]);
  if (errout)
    *errout = ps_buf_steal (&cap.b[1]);
  else
    ps_buf_free (&cap.b[1]);
  return 0;
}

char *
ps_find_in_path (const char *name, const char *default_path)
{
  const char *path = getenv ("PATH");
  if (path == NULL || *path == '\0')
    path = default_path;
  for (const char *p = path; *p;)
    {
      size_t len = strcspn (p, ":");
      cleanup_free char *cand = xasprintf ("%.*s/%s", (int) len, p, name);
      if (len > 0 && access (cand, X_OK) == 0)
        return steal_pointer (&cand);
      p += len;
      if (*p == ':')
        p++;
    }
  return NULL;
}

int
ps_thread_start (pthread_t *th, void *(*fn) (void *), void *arg, size_t stack, bool detached)
{
  pthread_t local;
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  if (detached)
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  if (stack > 0)
    pthread_attr_setstacksize (&attr, stack);
  int r = pthread_create (th ? th : &local, &attr, fn, arg);
  pthread_attr_destroy (&attr);
  return r;
}
