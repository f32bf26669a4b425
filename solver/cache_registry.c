/* cache_registry.c — a loopback registry over a local cache directory. */
#define _GNU_SOURCE
#include "solver/cache_registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "solver/buildah.h"
#include "common/limits.h"

/* How long a fresh registry may take to answer. */
#define CACHE_REGISTRY_START_MS 10000

static int
free_loopback_port (ps_error **err)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "socket");
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  if (bind (fd, (struct sockaddr *) &a, sizeof a) < 0 || getsockname (fd, (struct sockaddr *) &a, &len) < 0)
    {
      int e = errno;
      close (fd);
      return ps_error_set_errno (err, 500, e, "find a free port");
    }
  close (fd);
  return ntohs (a.sin_port);
}

/* GET /v2/ answers 200 once the registry serves. */
static bool
registry_answers (int port)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  bool ok = false;
  if (connect (fd, (struct sockaddr *) &a, sizeof a) == 0)
    {
      const char req[] = "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
      char buf[64] = "";
      if (write (fd, req, sizeof req - 1) == (ssize_t) (sizeof req - 1) && read (fd, buf, sizeof buf - 1) > 12)
        ok = strncmp (buf + 9, "200", 3) == 0;
    }
  close (fd);
  return ok;
}

int
cache_registry_start (const char *storage_dir, const char *work_dir, struct cache_registry *r, ps_error **err)
{
  memset (r, 0, sizeof *r);
  if (ps_mkdir_p (storage_dir, 0755, err) < 0)
    return -1;
  int port = free_loopback_port (err);
  if (port < 0)
    return -1;
  cleanup_free char *conf = xasprintf ("%s/cache-registry-%d.yml", work_dir, port);
  cleanup_free char *yaml = xasprintf ("version: 0.1\n"
                                       "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                                       "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
                                       "http:\n  addr: 127.0.0.1:%d\n",
                                       storage_dir, port);
  if (ps_write_file (conf, yaml, strlen (yaml), 0600, err) < 0)
    return -1;
  char *argv[] = { (char *) "docker-registry", (char *) "serve", conf, NULL };
  struct ps_child c;
  if (ps_child_spawn (argv, &c, err) < 0)
    return ps_error_wrap (err, "local cache needs Debian's docker-registry");
  /* Its output is not needed; closing the pipes would SIGPIPE it. */
  r->pid = c.pid;
  r->port = port;
  for (int waited = 0; waited < CACHE_REGISTRY_START_MS; waited += 50)
    {
      if (registry_answers (port))
        {
          r->out_fd = c.out_fd;
          r->err_fd = c.err_fd;
          r->repo = xasprintf ("127.0.0.1:%d/podsolve-cache", port);
          return 0;
        }
      if (waitpid (c.pid, NULL, WNOHANG) == c.pid)
        {
          r->pid = 0;
          break;
        }
      struct timespec ts = { 0, 50 * 1000000L };
      nanosleep (&ts, NULL);
    }
  close (c.out_fd);
  close (c.err_fd);
  cache_registry_stop (r);
  return ps_error_set (err, 500, "the local cache registry for %s did not start", storage_dir);
}

void
cache_registry_stop (struct cache_registry *r)
{
  if (r->pid > 0)
    {
      kill (r->pid, SIGTERM);
      waitpid (r->pid, NULL, 0);
    }
  r->pid = 0;
  if (r->out_fd > 0)
    close (r->out_fd);
  if (r->err_fd > 0)
    close (r->err_fd);
  r->out_fd = r->err_fd = -1;
  free (r->repo);
  r->repo = NULL;
}

int
cache_registry_write_conf (const char *path, const ps_strv *insecure, ps_error **err)
{
  ps_buf b = { 0 };
  cleanup_free char *sys = NULL;
  size_t len = 0;
  /* The daemon's own (--insecure-registry) when it has one, else the system's. */
  const char *base = getenv ("CONTAINERS_REGISTRIES_CONF");
  if (base == NULL || *base == '\0')
    base = "/etc/containers/registries.conf";
  if (ps_read_file (base, PS_MAX_REGISTRIES_CONF_BYTES, &sys, &len, NULL) == 0)
    {
      ps_buf_append (&b, sys, len);
      ps_buf_puts (&b, "\n");
    }
  for (size_t i = 0; i < insecure->n; i++)
    ps_buf_printf (&b, "[[registry]]\nlocation = \"%s\"\ninsecure = true\n", insecure->v[i]);
  int r = ps_write_file (path, b.data, b.len, 0644, err);
  ps_buf_free (&b);
  return r;
}
