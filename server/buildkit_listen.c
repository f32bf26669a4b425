/* buildkit_listen.c — the accept loops of --buildkit-listen.
 *
 * Each accepted connection gets a thread of its own: on tcp:// it first
 * runs the TLS handshake (bounded by PS_GRPC_TLS_HANDSHAKE_MS, and cut
 * short at shutdown), then serves gRPC through handlers/grpc.c. */
#define _GNU_SOURCE
#include "server/buildkit_listen.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "handlers/grpc.h"
#include "server/listen.h"
#include "session/grpc_tls.h"
#include "session/session_limits.h"

struct accept_loop
{
  struct ps_listener *l;
  pthread_t th;
  bool started;
  unsigned max;
  unsigned open; /* atomic: connections being served (or in their handshake) */
};

static struct ps_listener *listeners;
static size_t nlisteners;
static struct accept_loop *loops;
static bool stopping; /* atomic */

/* TLS for the tcp:// sockets.  Handshakes poll `wake_fd` too, which
   buildkit_listen_stop makes readable; `tls` is freed once `handshakes`
   (counted from the accept, before the connection's thread starts) is 0. */
static grpc_tls_server *tls;
static int wake_fd = -1;
static pthread_mutex_t handshakes_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t handshakes_cond = PTHREAD_COND_INITIALIZER;
static unsigned handshakes;

/* A connection's own copy of what it needs from its listener: the
   listeners are freed at buildkit_listen_stop, connections may outlive it. */
struct conn
{
  int fd;
  struct accept_loop *loop; /* kept until the process ends */
  char *uri;
  bool tls;
};

static void
handshake_done (void)
{
  pthread_mutex_lock (&handshakes_mu);
  if (--handshakes == 0)
    pthread_cond_broadcast (&handshakes_cond);
  pthread_mutex_unlock (&handshakes_mu);
}

static void
conn_release (struct conn *c)
{
  close (c->fd);
  __atomic_sub_fetch (&c->loop->open, 1, __ATOMIC_RELAXED);
  free (c->uri);
  free (c);
}

/* "127.0.0.1:41234", for the log. */
static void
peer_name (int fd, char *buf, size_t len)
{
  struct sockaddr_storage sa;
  socklen_t salen = sizeof sa;
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getpeername (fd, (struct sockaddr *) &sa, &salen) < 0
      || getnameinfo ((struct sockaddr *) &sa, salen, host, sizeof host, port, sizeof port,
                      NI_NUMERICHOST | NI_NUMERICSERV)
             != 0)
    snprintf (buf, len, "?");
  else
    snprintf (buf, len, sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static void *
conn_main (void *arg)
{
  struct conn *c = arg;
  const char *uri = c->uri;
  grpc_tls_conn *t = NULL;
  if (c->tls)
    {
      cleanup_error ps_error *err = NULL;
      char peer[NI_MAXHOST + NI_MAXSERV + 4];
      peer_name (c->fd, peer, sizeof peer);
      ps_debug ("%s: connection from %s: TLS handshake", uri, peer);
      t = grpc_tls_accept (tls, c->fd, PS_GRPC_TLS_HANDSHAKE_MS, wake_fd, &err);
      handshake_done (); /* `tls` is not used past this */
      if (t == NULL)
        {
          ps_info ("%s: %s: %s", uri, peer, err->msg);
          conn_release (c);
          return NULL;
        }
      if (ps_log_enabled (PS_LOG_DEBUG))
        {
          cleanup_free char *what = grpc_tls_describe (t);
          ps_debug ("%s: %s: TLS: %s", uri, peer, what);
        }
    }
  handlers_grpc_serve_here (c->fd, t ? grpc_tls_transport (t) : NULL, uri);
  grpc_tls_close (t);
  conn_release (c);
  return NULL;
}

static void *
accept_main (void *arg)
{
  struct accept_loop *a = arg;
  while (!__atomic_load_n (&stopping, __ATOMIC_RELAXED))
    {
      struct pollfd p = { .fd = a->l->fd, .events = POLLIN };
      int r = poll (&p, 1, 250); /* wakes to notice buildkit_listen_stop */
      if (r <= 0)
        continue;
      int fd = accept4 (a->l->fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0)
        {
          if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
            {
              ps_warn ("%s: accept: %s", a->l->uri, strerror (errno));
              usleep (100 * 1000);
            }
          continue;
        }
      if (__atomic_add_fetch (&a->open, 1, __ATOMIC_RELAXED) > a->max)
        {
          __atomic_sub_fetch (&a->open, 1, __ATOMIC_RELAXED);
          ps_info ("%s: too many connections (at most %u at once, --max-connections): closing a new one",
                   a->l->uri, a->max);
          close (fd);
          continue;
        }
      struct conn *c = xmalloc (sizeof *c);
      c->fd = fd;
      c->loop = a;
      c->uri = xstrdup (a->l->uri);
      c->tls = a->l->tcp;
      if (c->tls)
        {
          pthread_mutex_lock (&handshakes_mu);
          handshakes++;
          pthread_mutex_unlock (&handshakes_mu);
        }
      int e = ps_thread_start (NULL, conn_main, c, 0, true);
      if (e != 0)
        {
          ps_warn ("%s: cannot start a connection's thread: %s", a->l->uri, strerror (e));
          if (c->tls)
            handshake_done ();
          conn_release (c);
        }
    }
  return NULL;
}

static bool
any_tcp (const ps_strv *uris)
{
  for (size_t i = 0; i < uris->n; i++)
    if (ps_str_has_prefix (uris->v[i], "tcp://"))
      return true;
  return false;
}

int
buildkit_listen_start (const struct buildkit_listen_config *cfg, ps_error **err)
{
  if (cfg->tls_cert && !any_tcp (cfg->uris))
    ps_warn ("--buildkit-tlscert: no --buildkit-listen tcp:// to use it on (unix sockets are never TLS, as "
             "buildkitd's)");
  if (cfg->uris->n == 0)
    return 0;
  if (any_tcp (cfg->uris))
    {
      /* Before any socket opens: bad TLS files are a start-up error. */
      tls = grpc_tls_server_new (cfg->tls_cert, cfg->tls_key, cfg->tls_ca, err);
      if (tls == NULL)
        return ps_error_wrap (err, "--buildkit-listen TLS");
      wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (wake_fd < 0)
        {
          grpc_tls_server_free (tls);
          tls = NULL;
          return ps_error_set_errno (err, 500, errno, "--buildkit-listen: eventfd");
        }
    }
  if (listeners_open_uris (cfg->uris, cfg->group, &listeners, &nlisteners, err) < 0)
    {
      buildkit_listen_stop ();
      return ps_error_wrap (err, "--buildkit-listen");
    }
  loops = xcalloc (nlisteners, sizeof *loops);
  for (size_t i = 0; i < nlisteners; i++)
    {
      loops[i].l = &listeners[i];
      loops[i].max = cfg->max_connections;
      int r = ps_thread_start (&loops[i].th, accept_main, &loops[i], 0, false);
      if (r != 0)
        {
          buildkit_listen_stop ();
          return ps_error_set (err, 500, "--buildkit-listen %s: cannot start its thread: %s", cfg->uris->v[i],
                               strerror (r));
        }
      loops[i].started = true;
      ps_info ("serving BuildKit's gRPC API on %s%s", listeners[i].uri,
               !listeners[i].tcp  ? ""
               : cfg->tls_ca ? " (TLS; client certificates signed by --buildkit-tlscacert)"
                             : " (TLS; no client certificates asked for: give --buildkit-tlscacert for that)");
    }
  return 0;
}

void
buildkit_listen_stop (void)
{
  __atomic_store_n (&stopping, true, __ATOMIC_RELAXED);
  for (size_t i = 0; i < nlisteners; i++)
    if (loops[i].started)
      pthread_join (loops[i].th, NULL);
  /* Handshakes under way end at once, and nothing starts a new one. */
  if (wake_fd >= 0)
    {
      uint64_t one = 1;
      ssize_t r = write (wake_fd, &one, sizeof one);
      (void) r;
    }
  pthread_mutex_lock (&handshakes_mu);
  while (handshakes > 0)
    pthread_cond_wait (&handshakes_cond, &handshakes_mu);
  pthread_mutex_unlock (&handshakes_mu);
  grpc_tls_server_free (tls); /* connections being served hold their own reference */
  tls = NULL;
  if (wake_fd >= 0)
    close (wake_fd);
  wake_fd = -1;
  /* `loops` stays: connections still being served (grpc_serve_shutdown
     ends them afterwards) count themselves out of loop->open when they
     end.  Nothing accepts any more, and the sockets close now. */
  listeners_close (listeners, nlisteners);
  listeners = NULL;
  nlisteners = 0;
}
