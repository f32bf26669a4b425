/* tunnel.c — Control.Session: a session's HTTP/2 inside BytesMessages
 * (see tunnel.h). */
#define _GNU_SOURCE
#include "session/tunnel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "control.pb-c.h"
#include "session/session.h"

#define CONTROL_SESSION_CHUNK (64 * 1024)
/* How often the call side looks whether the session side has ended. */
#define CONTROL_SESSION_POLL_MS 250

struct tunnel
{
  grpc_call *call;
  int fd;                   /* our end of the socketpair */
  atomic_bool session_done; /* the session side ended (EOF or error on fd) */
};

/* The session's end: closed by the session code when it lets go; the
   handler may be gone by then, so it carries only the fd. */
static void
tunnel_release (void *ud)
{
  close ((int) (intptr_t) ud);
}

/* Session -> client: what podsolved's HTTP/2 client writes, as BytesMessages. */
static void *
tunnel_to_client (void *arg)
{
  struct tunnel *t = arg;
  cleanup_free uint8_t *buf = xmalloc (CONTROL_SESSION_CHUNK);
  cleanup_free uint8_t *out = xmalloc (CONTROL_SESSION_CHUNK + 16);
  for (;;)
    {
      ssize_t n = read (t->fd, buf, CONTROL_SESSION_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      Moby__Buildkit__V1__BytesMessage m = MOBY__BUILDKIT__V1__BYTES_MESSAGE__INIT;
      m.data.data = buf;
      m.data.len = (size_t) n;
      size_t len = moby__buildkit__v1__bytes_message__pack (&m, out);
      ps_error *err = NULL;
      if (grpc_call_send (t->call, out, len, &err) < 0)
        {
          ps_error_free (err);
          break;
        }
    }
  atomic_store (&t->session_done, true);
  return NULL;
}

/* Client -> session, on the handler thread, until the client half-closes,
   the call dies or the session side ended. */
static void
tunnel_to_session (struct tunnel *t)
{
  for (;;)
    {
      if (atomic_load (&t->session_done))
        return;
      void *msg = NULL;
      size_t len = 0;
      ps_error *err = NULL;
      int r = grpc_call_recv (t->call, &msg, &len, CONTROL_SESSION_POLL_MS, &err);
      if (r < 0)
        {
          bool timeout = err->status == 504 && !grpc_call_cancelled (t->call) && grpc_call_status (t->call) < 0;
          ps_error_free (err);
          if (timeout)
            continue;
          return;
        }
      if (r == 0)
        return;
      Moby__Buildkit__V1__BytesMessage *m = moby__buildkit__v1__bytes_message__unpack (NULL, len, msg);
      free (msg);
      if (m == NULL)
        return;
      const uint8_t *p = m->data.data;
      size_t left = m->data.len;
      bool ok = true;
      while (left > 0 && ok)
        {
          struct pollfd pfd = { .fd = t->fd, .events = POLLOUT };
          ssize_t w = send (t->fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w > 0)
            {
              p += w;
              left -= (size_t) w;
            }
          else if (w < 0 && (errno == EAGAIN || errno == EINTR))
            {
              /* the session is slow: wait, but notice it ending */
              if (atomic_load (&t->session_done))
                ok = false;
              else
                poll (&pfd, 1, CONTROL_SESSION_POLL_MS);
            }
          else
            ok = false;
        }
      moby__buildkit__v1__bytes_message__free_unpacked (m, NULL);
      if (!ok)
        return;
    }
}

void
session_tunnel_pump (grpc_call *call, int fd)
{
  struct tunnel t = { .call = call, .fd = fd };
  pthread_t th;
  bool have_thread = ps_thread_start (&th, tunnel_to_client, &t, 0, false) == 0;
  if (have_thread)
    tunnel_to_session (&t);
  shutdown (fd, SHUT_RDWR);
  if (have_thread)
    pthread_join (th, NULL);
}

void
session_tunnel_serve (grpc_call *call)
{
  const char **methods = NULL;
  size_t n_methods = grpc_call_metadata_all (call, "x-docker-expose-session-grpc-method", &methods);
  const char *key = grpc_call_metadata (call, "x-docker-expose-session-sharedkey");
  const char *name = grpc_call_metadata (call, "x-docker-expose-session-name");
  struct session_info info = {
    .uuid = grpc_call_metadata (call, "x-docker-expose-session-uuid"),
    .shared_key = key ? key : "",
    .name = name ? name : "",
    .methods = methods,
    .n_methods = n_methods,
  };
  ps_error *err = NULL;
  if (session_info_validate (&info, &err) < 0)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err->msg);
      ps_error_free (err);
      return;
    }
  if (session_registry_has (info.uuid))
    {
      grpc_call_finish (call, GRPC_STATUS_ALREADY_EXISTS, "session %s is open already", info.uuid);
      return;
    }
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    {
      grpc_call_finish (call, GRPC_STATUS_INTERNAL, "socketpair: %s", strerror (errno));
      return;
    }
  /* From here the session code owns sv[0]: it closes it (tunnel_release)
     when the session ends, which ends the pump's reads. */
  session_serve_upgraded (sv[0], NULL, 0, &info, tunnel_release, (void *) (intptr_t) sv[0]);
  ps_info ("session %s: tunnelled over Control.Session", info.uuid);
  /* Either side ends: the session sees EOF and leaves the registry. */
  session_tunnel_pump (call, sv[1]);
  close (sv[1]);
  if (grpc_call_cancelled (call))
    grpc_call_finish (call, GRPC_STATUS_CANCELLED, "the client cancelled the session");
  else
    grpc_call_finish (call, GRPC_STATUS_OK, "%s", "");
  ps_info ("session %s: Control.Session ended", info.uuid);
}
