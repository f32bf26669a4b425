/* upstream.c — the Podman API service itself (see upstream.h): small
 * buffered calls to it (for merging /_ping, /version and /info), and the
 * --spawn-upstream child and its supervisor. */
#define _GNU_SOURCE
#include "server/upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "server/config.h"
#include "server/http1.h"

/* ---- buffered calls ------------------------------------------------------------ */

static size_t
fetch_write_cb (char *data, size_t size, size_t n, void *userp)
{
  ps_buf *b = userp;
  size_t len = size * n;
  if (b->len + len > PS_PROXY_MAX_MERGE_BODY)
    return 0;
  ps_buf_append (b, data, len);
  return len;
}

int
upstream_fetch (const char *method, const char *path, long timeout_ms, struct ps_upstream_reply *out,
                   ps_error **err)
{
  memset (out, 0, sizeof *out);
  if (ps_cfg.upstream == NULL)
    return ps_error_set (err, 502, "no upstream configured");
  CURL *c = curl_easy_init ();
  if (c == NULL)
    return ps_error_set (err, 500, "cannot start an upstream transfer");
  struct response_head head = { 0 };
  char errbuf[CURL_ERROR_SIZE] = "";
  cleanup_free char *url = xasprintf ("http://d%s", path);
  struct curl_slist *hdrs = curl_slist_append (NULL, "Accept:");
  curl_easy_setopt (c, CURLOPT_URL, url);
  curl_easy_setopt (c, CURLOPT_UNIX_SOCKET_PATH, ps_cfg.upstream);
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT_MS, (long) PS_PROXY_CONNECT_TIMEOUT_MS);
  curl_easy_setopt (c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, http1_curl_head_cb);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, &head);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, fetch_write_cb);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, &out->body);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, errbuf);
  if (strcmp (method, "HEAD") == 0)
    curl_easy_setopt (c, CURLOPT_NOBODY, 1L);
  CURLcode rc = curl_easy_perform (c);
  curl_easy_cleanup (c);
  curl_slist_free_all (hdrs);
  if (rc != CURLE_OK || !head.complete)
    {
      ps_strv_free (&head.headers);
      ps_buf_free (&out->body);
      return ps_error_set (err, 502, "Podman API service at unix://%s: %s %s: %s", ps_cfg.upstream, method, path,
                           errbuf[0] ? errbuf : curl_easy_strerror (rc));
    }
  out->status = head.status;
  out->headers = head.headers;
  return 0;
}

const char *
upstream_reply_header (const struct ps_upstream_reply *r, const char *name)
{
  return http1_header_get (&r->headers, name);
}

void
upstream_reply_free (struct ps_upstream_reply *r)
{
  ps_strv_free (&r->headers);
  ps_buf_free (&r->body);
}

/* ---- --spawn-upstream -------------------------------------------------------- */

/* The supervised `podman system service`.  One supervisor thread forks it,
   waits for it and restarts it with backoff; stop() tells the thread to
   quit and signals the child.  The thread forks because PR_SET_PDEATHSIG
   follows the forking thread: if podsolved dies, Podman gets SIGTERM. */
static struct
{
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t thread;
  bool started;
  bool stop;
  pid_t pid;      /* running child (not yet reaped), 0 when none */
  char *podman;   /* resolved path of the podman binary */
} spawned = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

/* Restart delays: start small (a crash right after start-up is usually
   permanent, but a one-off death should cost little), cap at 30 s. */
#define UPSTREAM_RESTART_MIN_MS 500
#define UPSTREAM_RESTART_MAX_MS 30000

/* Our environment minus what belongs to podsolved's own service manager:
   with LISTEN_FDS Podman would look for inherited sockets, with
   NOTIFY_SOCKET it would tell systemd that it is the main process. */
static char **
service_environ (void)
{
  extern char **environ;
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = xcalloc (n + 1, sizeof *env);
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!ps_str_has_prefix (environ[i], "LISTEN_") && !ps_str_has_prefix (environ[i], "NOTIFY_SOCKET="))
      env[k++] = environ[i];
  return env;
}

static pid_t
fork_service (void)
{
  cleanup_free char *uri = xasprintf ("unix://%s", ps_cfg.upstream);
  char *argv[] = { spawned.podman, (char *) "system", (char *) "service", (char *) "--time=0", uri, NULL };
  cleanup_free char **env = service_environ ();
  pid_t parent = getpid ();
  pid_t pid = fork ();
  if (pid != 0)
    return pid;
  /* Child: async-signal-safe calls only until exec. */
  sigset_t none;
  sigemptyset (&none);
  sigprocmask (SIG_SETMASK, &none, NULL);
  signal (SIGPIPE, SIG_DFL);
  setpgid (0, 0); /* a terminal's ^C is for podsolved, which stops Podman in order */
  prctl (PR_SET_PDEATHSIG, SIGTERM);
  if (getppid () != parent)
    _exit (1);
  int devnull = open ("/dev/null", O_RDONLY);
  if (devnull >= 0)
    dup2 (devnull, 0);
  dup2 (2, 1); /* its log goes where ours goes */
  close_range (3, ~0U, 0);
  execve (argv[0], argv, env);
  _exit (127);
}

static void *
supervise (void *arg)
{
  int delay_ms = UPSTREAM_RESTART_MIN_MS;
  pthread_mutex_lock (&spawned.lock);
  while (!spawned.stop)
    {
      pid_t pid = fork_service ();
      if (pid < 0)
        {
          ps_error_log ("cannot start the Podman API service: fork: %s", strerror (errno));
        }
      else
        {
          spawned.pid = pid;
          ps_info ("started the Podman API service (pid %d) on unix://%s", (int) pid, ps_cfg.upstream);
          pthread_mutex_unlock (&spawned.lock);
          int64_t started = ps_monotonic_ns ();
          /* Wait without reaping, so stop() never signals a recycled pid. */
          siginfo_t si = { 0 };
          while (waitid (P_PID, (id_t) pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
            ;
          pthread_mutex_lock (&spawned.lock);
          spawned.pid = 0;
          waitpid (pid, NULL, 0);
          if (spawned.stop)
            break;
          if (ps_monotonic_ns () - started > (int64_t) UPSTREAM_RESTART_MAX_MS * 1000000)
            delay_ms = UPSTREAM_RESTART_MIN_MS;
          ps_warn ("the Podman API service (pid %d) %s %d; restarting it in %d ms", (int) pid,
                   si.si_code == CLD_EXITED ? "exited with status" : "was killed by signal", si.si_status,
                   delay_ms);
        }
      struct timespec until = ps_deadline_after_ms (CLOCK_REALTIME, delay_ms);
      while (!spawned.stop && pthread_cond_timedwait (&spawned.cond, &spawned.lock, &until) != ETIMEDOUT)
        ;
      delay_ms = delay_ms * 2 > UPSTREAM_RESTART_MAX_MS ? UPSTREAM_RESTART_MAX_MS : delay_ms * 2;
    }
  pthread_mutex_unlock (&spawned.lock);
  return NULL;
}

static bool
socket_accepts (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  if (strlen (path) >= sizeof sun.sun_path)
    return false;
  strcpy (sun.sun_path, path);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  bool ok = connect (fd, (struct sockaddr *) &sun, sizeof sun) == 0;
  close (fd);
  return ok;
}

int
upstream_spawn_start (ps_error **err)
{
  spawned.podman = ps_find_in_path ("podman", "/usr/local/bin:/usr/bin:/bin");
  if (spawned.podman == NULL)
    return ps_error_set (err, 500, "--spawn-upstream: podman is not in PATH");
  cleanup_free char *dir = xstrdup (ps_cfg.upstream);
  char *slash = strrchr (dir, '/');
  if (slash && slash != dir)
    {
      *slash = '\0';
      if (ps_mkdir_p (dir, 0700, err) < 0)
        return ps_error_wrap (err, "--spawn-upstream");
    }
  if (socket_accepts (ps_cfg.upstream))
    return ps_error_set (err, 500, "--spawn-upstream: something already listens on unix://%s", ps_cfg.upstream);
  int r = pthread_create (&spawned.thread, NULL, supervise, NULL);
  if (r != 0)
    return ps_error_set_errno (err, 500, r, "--spawn-upstream: cannot start the supervisor thread");
  spawned.started = true;
  return 0;
}

void
upstream_spawn_wait_ready (void)
{
  if (!spawned.started)
    return;
  int64_t deadline = ps_deadline_ns_after_ms (PS_UPSTREAM_START_TIMEOUT_MS);
  while (!socket_accepts (ps_cfg.upstream))
    {
      if (ps_deadline_passed (deadline))
        {
          ps_warn ("the Podman API service is not answering on unix://%s after %d s; builds work, other "
                   "requests get 502 until it does",
                   ps_cfg.upstream, PS_UPSTREAM_START_TIMEOUT_MS / 1000);
          break;
        }
      struct timespec ts = { 0, 50 * 1000000L };
      nanosleep (&ts, NULL);
    }
}

void
upstream_spawn_stop (void)
{
  if (!spawned.started)
    return;
  pthread_mutex_lock (&spawned.lock);
  spawned.stop = true;
  pid_t pid = spawned.pid;
  if (pid > 0)
    kill (pid, SIGTERM);
  pthread_cond_broadcast (&spawned.cond);
  pthread_mutex_unlock (&spawned.lock);

  struct timespec until = ps_deadline_after_ms (CLOCK_REALTIME, PS_UPSTREAM_STOP_GRACE_MS);
  if (pthread_timedjoin_np (spawned.thread, NULL, &until) != 0)
    {
      pthread_mutex_lock (&spawned.lock);
      if (spawned.pid > 0)
        {
          ps_warn ("the Podman API service (pid %d) ignored SIGTERM for %d s; killing it", (int) spawned.pid,
                   PS_UPSTREAM_STOP_GRACE_MS / 1000);
          kill (spawned.pid, SIGKILL);
        }
      pthread_mutex_unlock (&spawned.lock);
      pthread_join (spawned.thread, NULL);
    }
  spawned.started = false;
  free (spawned.podman);
  spawned.podman = NULL;
  ps_info ("stopped the Podman API service");
}
