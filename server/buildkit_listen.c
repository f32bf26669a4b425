/* buildkit_listen.c — the accept loops of --buildkit-listen. */
#define _GNU_SOURCE
#include "server/buildkit_listen.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "handlers/grpc.h"
#include "server/listen.h"

struct accept_loop
{
  struct ps_listener *l;
  pthread_t th;
  bool started;
  unsigned max;
  unsigned open; /* atomic: connections being served */
};

static struct ps_listener *listeners;
static size_t nlisteners;
static struct accept_loop *loops;
static bool stopping; /* atomic */

struct conn
{
  int fd;
  struct accept_loop *loop;
};

static void
conn_release (void *ud)
{
  struct conn *c = ud;
  close (c->fd);
  __atomic_sub_fetch (&c->loop->open, 1, __ATOMIC_RELAXED);
  free (c);
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
      handlers_grpc_serve (fd, NULL, 0, a->l->uri, conn_release, c);
    }
  return NULL;
}

int
buildkit_listen_start (const ps_strv *uris, const char *group, unsigned max_connections, ps_error **err)
{
  if (uris->n == 0)
    return 0;
  if (listeners_open_uris (uris, group, &listeners, &nlisteners, err) < 0)
    return ps_error_wrap (err, "--buildkit-listen");
  loops = xcalloc (nlisteners, sizeof *loops);
  for (size_t i = 0; i < nlisteners; i++)
    {
      loops[i].l = &listeners[i];
      loops[i].max = max_connections;
      int r = ps_thread_start (&loops[i].th, accept_main, &loops[i], 0, false);
      if (r != 0)
        {
          buildkit_listen_stop ();
          return ps_error_set (err, 500, "--buildkit-listen %s: cannot start its thread: %s", uris->v[i],
                               strerror (r));
        }
      loops[i].started = true;
      ps_info ("serving BuildKit's gRPC API on %s", listeners[i].uri);
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
  /* `loops` stays: connections still being served (grpc_serve_shutdown
     ends them afterwards) count themselves out of loop->open when they
     end.  Nothing accepts any more, and the sockets close now. */
  listeners_close (listeners, nlisteners);
  listeners = NULL;
  nlisteners = 0;
}
