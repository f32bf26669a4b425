/* buildah.c — spawning buildah, the isolation probe and version probe. */
#define _GNU_SOURCE
#include "solver/buildah.h"
#include "solver/orphans.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

extern char **environ;

static struct buildah_config config = { .buildah = "buildah" };
static char *chosen_isolation;
static char *chosen_runtime;
static char *version_string;

void
buildah_configure (const struct buildah_config *cfg)
{
  config = *cfg;
  if (config.buildah == NULL)
    config.buildah = "buildah";
}

void
buildah_argv_init (ps_strv *argv)
{
  ps_strv_push (argv, config.buildah);
  if (config.root)
    {
      ps_strv_push (argv, "--root");
      ps_strv_push (argv, config.root);
    }
  if (config.runroot)
    {
      ps_strv_push (argv, "--runroot");
      ps_strv_push (argv, config.runroot);
    }
  if (config.storage_driver)
    {
      ps_strv_push (argv, "--storage-driver");
      ps_strv_push (argv, config.storage_driver);
    }
}

const char *
buildah_isolation (void)
{
  return chosen_isolation ? chosen_isolation : "oci";
}

const char *
buildah_runtime (void)
{
  return chosen_runtime;
}

void
buildah_argv_isolation (ps_strv *argv, const char *override_isolation)
{
  const char *iso = override_isolation ? override_isolation : buildah_isolation ();
  ps_strv_pushf (argv, "--isolation=%s", iso);
  if (strcmp (iso, "oci") == 0 && chosen_runtime)
    ps_strv_pushf (argv, "--runtime=%s", chosen_runtime);
}

const char *
buildah_version (void)
{
  return version_string ? version_string : "unknown";
}

/* ---- children --------------------------------------------------------- */

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
  int out[2] = { -1, -1 }, errp[2] = { -1, -1 };
  if (pipe2 (out, O_CLOEXEC) < 0 || pipe2 (errp, O_CLOEXEC) < 0)
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
      dup2 (devnull, 0);
      dup2 (out[1], 1);
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
  close (out[1]);
  close (errp[1]);
  if (pid < 0)
    {
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
  return 0;
}

int
ps_child_wait (struct ps_child *child)
{
  int status = 0;
  while (waitpid (child->pid, &status, 0) < 0)
    if (errno != EINTR)
      return -1;
  if (child->out_fd >= 0)
    close (child->out_fd);
  if (child->err_fd >= 0)
    close (child->err_fd);
  child->out_fd = child->err_fd = -1;
  if (WIFEXITED (status))
    return WEXITSTATUS (status);
  if (WIFSIGNALED (status))
    return 128 + WTERMSIG (status);
  return -1;
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
      if (poll (pfd, 2, -1) < 0)
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
  if (len > 0 && b->len < 4 * 1024 * 1024)
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

int
buildah_call (const char *const *args, char **out, ps_error **err)
{
  ps_strv argv = { 0 };
  buildah_argv_init (&argv);
  for (const char *const *a = args; *a; a++)
    ps_strv_push (&argv, *a);
  cleanup_free char *o = NULL, *e = NULL;
  int status = -1;
  int r = ps_run_capture (argv.v, &o, &e, &status, err);
  ps_strv_free (&argv);
  if (r < 0)
    return -1;
  if (status != 0)
    {
      size_t n = e ? strlen (e) : 0;
      while (n > 0 && (e[n - 1] == '\n' || e[n - 1] == ' '))
        e[--n] = '\0';
      return ps_error_set (err, 500, "buildah %s: exit status %d: %s", args[0], status, e && *e ? e : "failed");
    }
  if (out)
    *out = steal_pointer (&o);
  return 0;
}

int
buildah_call_line (const char *const *args, char **out, ps_error **err)
{
  char *all = NULL;
  if (buildah_call (args, out ? &all : NULL, err) < 0)
    return -1;
  if (out)
    {
      *out = xstrndup (all ? all : "", strcspn (all ? all : "", "\n"));
      free (all);
    }
  return 0;
}

int
buildah_from (const char *image, const char *const *extra, char **ctr, ps_error **err)
{
  cleanup_free char *name = orphans_container_name ();
  ps_strv args = { 0 };
  ps_strv_push (&args, "from");
  ps_strv_push (&args, "--quiet");
  ps_strv_push (&args, "--pull=never");
  ps_strv_pushf (&args, "--name=%s", name);
  for (const char *const *a = extra; a && *a; a++)
    ps_strv_push (&args, *a);
  ps_strv_push (&args, image ? image : "scratch");
  int r = buildah_call_line ((const char *const *) args.v, ctr, err);
  ps_strv_free (&args);
  if (r < 0)
    {
      const char *rm[] = { "rm", name, NULL };
      buildah_call (rm, NULL, NULL); /* usually "no such container" */
    }
  return r;
}

/* ---- start-up probes ----------------------------------------------------- */

static char *
first_line (const char *s)
{
  const char *nl = strchr (s, '\n');
  return nl ? xstrndup (s, (size_t) (nl - s)) : xstrdup (s);
}

/* Try one isolation mode: returns 0 when a container ran, else -1 with a
   reason in *why. */
static int
probe_one (const char *iso, const char *runtime, char **why)
{
  ps_strv argv = { 0 };
  buildah_argv_init (&argv);
  ps_strv_push (&argv, "from");
  ps_strv_push (&argv, "--quiet");
  ps_strv_push (&argv, "--pull=never");
  ps_strv_push (&argv, "scratch");
  cleanup_free char *out = NULL, *errout = NULL;
  int status = -1;
  ps_error *err = NULL;
  if (ps_run_capture (argv.v, &out, &errout, &status, &err) < 0 || status != 0)
    {
      *why = xasprintf ("buildah from scratch failed: %s",
                        err ? err->msg : (errout && *errout ? errout : "unknown error"));
      ps_error_free (err);
      ps_strv_free (&argv);
      return -1;
    }
  ps_strv_free (&argv);
  cleanup_free char *ctr = first_line (out);

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "run");
  ps_strv_pushf (&argv, "--isolation=%s", iso);
  if (runtime)
    ps_strv_pushf (&argv, "--runtime=%s", runtime);
  const char *binds[] = { "/usr", "/lib", "/lib64", "/bin" };
  for (size_t i = 0; i < ARRAY_SIZE (binds); i++)
    {
      struct stat st;
      if (lstat (binds[i], &st) == 0)
        ps_strv_pushf (&argv, "--volume=%s:%s:ro", binds[i], binds[i]);
    }
  ps_strv_push (&argv, ctr);
  ps_strv_push (&argv, "/usr/bin/true");
  free (out);
  free (errout);
  out = errout = NULL;
  int rc = ps_run_capture (argv.v, &out, &errout, &status, &err);
  ps_strv_free (&argv);
  if (rc < 0 || status != 0)
    {
      /* The runtime's own complaint is the most useful line. */
      const char *e = err ? err->msg : errout;
      const char *pick = e ? strstr (e, "cgroups in hybrid mode") : NULL;
      *why = pick ? first_line (pick) : (e && *e ? first_line (e) : xstrdup ("container did not run"));
      ps_error_free (err);
      err = NULL;
    }

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "rm");
  ps_strv_push (&argv, ctr);
  ps_run_capture (argv.v, NULL, NULL, NULL, NULL);
  ps_strv_free (&argv);
  return rc < 0 || status != 0 ? -1 : 0;
}

static char *
find_in_path (const char *name)
{
  const char *path = getenv ("PATH");
  cleanup_free char *copy = xstrdup (path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  char *save = NULL;
  for (char *dir = strtok_r (copy, ":", &save); dir; dir = strtok_r (NULL, ":", &save))
    {
      char *full = xasprintf ("%s/%s", dir, name);
      if (access (full, X_OK) == 0)
        return full;
      free (full);
    }
  return NULL;
}

int
buildah_probe_isolation (const char *wanted, const char *runtime, ps_error **err)
{
  /* buildah's version doubles as the check that buildah runs at all. */
  ps_strv argv = { 0 };
  ps_strv_push (&argv, config.buildah);
  ps_strv_push (&argv, "version");
  ps_strv_push (&argv, "--json");
  cleanup_free char *out = NULL;
  int status = -1;
  if (ps_run_capture (argv.v, &out, NULL, &status, err) < 0)
    {
      ps_strv_free (&argv);
      return ps_error_wrap (err, "buildah is required");
    }
  ps_strv_free (&argv);
  const char *v = out ? strstr (out, "\"version\": \"") : NULL;
  if (v)
    {
      v += 12;
      const char *end = strchr (v, '"');
      version_string = end ? xstrndup (v, (size_t) (end - v)) : NULL;
    }

  if (strcmp (wanted, "chroot") == 0)
    {
      chosen_isolation = xstrdup ("chroot");
      ps_info ("isolation: chroot (as configured)");
      return 0;
    }
  if (strcmp (wanted, "oci") != 0)
    return ps_error_set (err, 400, "unknown isolation %s (use oci or chroot)", wanted);

  cleanup_free char *why = NULL;
  if (probe_one ("oci", runtime, &why) == 0)
    {
      chosen_isolation = xstrdup ("oci");
      chosen_runtime = runtime ? xstrdup (runtime) : NULL;
      ps_info ("isolation: oci with runtime %s (probe container ran)", runtime ? runtime : "buildah's default");
      return 0;
    }
  cleanup_free char *runc = find_in_path ("runc");
  if (runc && (runtime == NULL || strcmp (runtime, runc) != 0))
    {
      cleanup_free char *why2 = NULL;
      if (probe_one ("oci", runc, &why2) == 0)
        {
          chosen_isolation = xstrdup ("oci");
          chosen_runtime = xstrdup (runc);
          ps_info ("isolation: oci with runtime %s, because the %s runtime cannot run containers here: %s",
                   runc, runtime ? runtime : "default", why);
          return 0;
        }
      free (why);
      why = xasprintf ("%s; runc: %s", why ? why : "", why2);
    }
  chosen_isolation = xstrdup ("chroot");
  ps_info ("isolation: chroot, because OCI isolation cannot run containers here: %s", why);
  return 0;
}
