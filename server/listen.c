/* listen.c — creating the listening sockets. */
#define _GNU_SOURCE
#include "server/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"

#define SD_LISTEN_FDS_START 3

static int
open_unix (const char *path, const char *group, ps_error **err)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  if (strlen (path) >= sizeof sun.sun_path)
    return ps_error_set (err, 400, "socket path %s is too long", path);
  strcpy (sun.sun_path, path);

  cleanup_free char *dir = xstrdup (path);
  char *slash = strrchr (dir, '/');
  if (slash && slash != dir)
    {
      *slash = '\0';
      if (ps_mkdir_p (dir, 0755, err) < 0)
        return -1;
    }

  struct stat st;
  if (lstat (path, &st) == 0)
    {
      if (!S_ISSOCK (st.st_mode))
        return ps_error_set (err, 400, "%s exists and is not a socket", path);
      /* A socket file: live if something accepts on it. */
      int probe = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (probe >= 0)
        {
          int r = connect (probe, (struct sockaddr *) &sun, sizeof sun);
          close (probe);
          if (r == 0)
            return ps_error_set (err, 400, "%s is in use by a running server", path);
        }
      ps_info ("replacing stale socket %s", path);
      unlink (path);
    }

  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "socket");
  /* Never world-accessible, even for the instant before chmod. */
  mode_t old = umask (0117);
  int r = bind (fd, (struct sockaddr *) &sun, sizeof sun);
  umask (old);
  if (r < 0)
    {
      int e = errno;
      close (fd);
      return ps_error_set_errno (err, 500, e, "bind %s", path);
    }
  chmod (path, 0660);
  if (group)
    {
      struct group *g = getgrnam (group);
      if (g == NULL || chown (path, (uid_t) -1, g->gr_gid) < 0)
        {
          int e = g ? errno : ENOENT;
          close (fd);
          unlink (path);
          return ps_error_set_errno (err, 400, e, "--group %s", group);
        }
    }
  if (listen (fd, 128) < 0)
    {
      int e = errno;
      close (fd);
      unlink (path);
      return ps_error_set_errno (err, 500, e, "listen %s", path);
    }
  return fd;
}

static int
open_tcp (const char *hostport, ps_error **err)
{
  cleanup_free char *copy = xstrdup (hostport);
  char *host = copy, *port;
  if (host[0] == '[')
    {
      char *close_br = strchr (host, ']');
      if (close_br == NULL || close_br[1] != ':')
        return ps_error_set (err, 400, "tcp://%s: expected [HOST]:PORT", hostport);
      *close_br = '\0';
      host++;
      port = close_br + 2;
    }
  else
    {
      port = strrchr (host, ':');
      if (port == NULL)
        return ps_error_set (err, 400, "tcp://%s: expected HOST:PORT", hostport);
      *port++ = '\0';
    }
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
  struct addrinfo *res = NULL;
  int gai = getaddrinfo (*host ? host : NULL, port, &hints, &res);
  if (gai != 0)
    return ps_error_set (err, 400, "tcp://%s: %s", hostport, gai_strerror (gai));
  int fd = -1, e = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
    {
      fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0)
        continue;
      int one = 1;
      setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind (fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen (fd, 128) == 0)
        break;
      e = errno;
      close (fd);
      fd = -1;
    }
  freeaddrinfo (res);
  if (fd < 0)
    return ps_error_set_errno (err, 500, e ? e : EADDRNOTAVAIL, "listen tcp://%s", hostport);
  return fd;
}

/* Append a listener for each of `uris` to *l (count entries so far). */
static int
open_uris (const ps_strv *uris, const char *group, struct ps_listener **lp, size_t *countp, ps_error **err)
{
  struct ps_listener *l = *lp;
  size_t count = *countp;
  for (size_t i = 0; i < uris->n; i++)
    {
      const char *uri = uris->v[i];
      int fd;
      const char *unix_path = NULL;
      if (ps_str_has_prefix (uri, "unix://"))
        {
          unix_path = uri + 7;
          fd = open_unix (unix_path, group, err);
        }
      else
        fd = open_tcp (uri + 6, err);
      if (fd < 0)
        {
          listeners_close (l, count);
          *lp = NULL;
          *countp = 0;
          return ps_error_wrap (err, "listen %s", uri);
        }
      l = xrealloc (l, (count + 1) * sizeof *l);
      l[count].fd = fd;
      l[count].uri = xstrdup (uri);
      l[count].unix_path = unix_path ? xstrdup (unix_path) : NULL;
      l[count].tcp = unix_path == NULL;
      count++;
    }
  *lp = l;
  *countp = count;
  return 0;
}

int
listeners_open_uris (const ps_strv *uris, const char *group, struct ps_listener **out, size_t *n, ps_error **err)
{
  *out = NULL;
  *n = 0;
  return open_uris (uris, group, out, n, err);
}

int
listeners_open (const ps_strv *uris, const char *group, struct ps_listener **out, size_t *n, ps_error **err)
{
  struct ps_listener *l = NULL;
  size_t count = 0;

  /* systemd socket activation: fds 3.. handed to us when LISTEN_PID is ours. */
  const char *pid_s = getenv ("LISTEN_PID");
  const char *fds_s = getenv ("LISTEN_FDS");
  if (fds_s && (pid_s == NULL || atol (pid_s) == (long) getpid ()))
    {
      int nfds = atoi (fds_s);
      for (int i = 0; i < nfds; i++)
        {
          int fd = SD_LISTEN_FDS_START + i;
          fcntl (fd, F_SETFD, FD_CLOEXEC);
          l = xrealloc (l, (count + 1) * sizeof *l);
          l[count].fd = fd;
          l[count].uri = xasprintf ("systemd fd %d", fd);
          l[count].unix_path = NULL;
          l[count].tcp = false;
          count++;
        }
      unsetenv ("LISTEN_PID");
      unsetenv ("LISTEN_FDS");
      unsetenv ("LISTEN_FDNAMES");
    }

  if (open_uris (uris, group, &l, &count, err) < 0)
    return -1;
  if (count == 0)
    return ps_error_set (err, 400, "nothing to listen on");
  *out = l;
  *n = count;
  return 0;
}

void
listeners_close (struct ps_listener *l, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      if (l[i].fd >= 0)
        close (l[i].fd);
      if (l[i].unix_path)
        unlink (l[i].unix_path);
      free (l[i].uri);
      free (l[i].unix_path);
    }
  free (l);
}
