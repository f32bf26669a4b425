/* sshforward.c — SSH agent forwarding over the session (see sshforward.h). */
#define _GNU_SOURCE
#include "session/sshforward.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "schema/sshforward.pb-c.h"
#include "session/session_limits.h"

#define SSH_CHECK_AGENT "/moby.sshforward.v1.SSH/CheckAgent"
#define SSH_FORWARD_AGENT "/moby.sshforward.v1.SSH/ForwardAgent"
/* sshforward.KeySSHID: the metadata key naming the agent of a ForwardAgent call. */
#define SSH_ID_METADATA "buildkit.ssh.id"

/* The id BuildKit sends for an empty one. */
static const char *
ssh_id (const char *id)
{
  return id && *id ? id : SESSION_SSH_DEFAULT_ID;
}

int
session_ssh_check (ps_session *s, const char *id, ps_error **err)
{
  id = ssh_id (id);
  if (strlen (id) > 1024)
    return ps_error_set (err, 400, "ssh: invalid ssh id");
  if (!session_has_method (s, SSH_CHECK_AGENT) || !session_has_method (s, SSH_FORWARD_AGENT))
    return ps_error_set (err, 404, "no SSH key \"%s\" forwarded from the client", id);

  Moby__Sshforward__V1__CheckAgentRequest req = MOBY__SSHFORWARD__V1__CHECK_AGENT_REQUEST__INIT;
  req.id = (char *) id;
  size_t reqlen = moby__sshforward__v1__check_agent_request__get_packed_size (&req);
  cleanup_free uint8_t *buf = xmalloc (reqlen + 1);
  moby__sshforward__v1__check_agent_request__pack (&req, buf);
  cleanup_free void *resp = NULL;
  size_t resp_len = 0;
  int status = -1;
  if (grpc_unary (session_conn (s), SSH_CHECK_AGENT, NULL, 0, buf, reqlen, &resp, &resp_len,
                  PS_SESSION_UNARY_TIMEOUT_MS, &status, err)
      == 0)
    return 0;
  if (status == GRPC_STATUS_UNIMPLEMENTED)
    {
      ps_error_free (*err);
      *err = NULL;
      return ps_error_set (err, 404, "no SSH key \"%s\" forwarded from the client", id);
    }
  if (status > 0 && status != GRPC_STATUS_CANCELLED && status != GRPC_STATUS_DEADLINE_EXCEEDED
      && status != GRPC_STATUS_UNAVAILABLE)
    {
      /* The client answered: it has no agent under that id (buildx says
         "unset ssh forward key <id>", with status UNKNOWN). */
      cleanup_free char *why = xstrdup ((*err)->msg);
      ps_error_free (*err);
      *err = NULL;
      return ps_error_set (err, 404, "no SSH key \"%s\" forwarded from the client: %s", id, why);
    }
  return ps_error_wrap (err, "ssh %s: session %s", id, session_uuid (s));
}

/* ---- the forwarder -------------------------------------------------------------- */

/* One connection to the socket and its ForwardAgent stream.  The fd and
   the call are released only by whoever joins `up` (the accept thread or
   session_ssh_forward_stop), so shutdown() from another thread never
   meets a reused fd. */
struct ssh_conn
{
  session_ssh_forward *f;
  int fd;
  grpc_call *call;
  pthread_t up; /* socket -> stream; starts and joins `down` */
  atomic_bool done;
  struct ssh_conn *next;
};

struct session_ssh_forward
{
  ps_session *sess;
  char *id;
  char *path;
  int listen_fd;
  int wake_fd; /* eventfd: stop, or a connection ended */
  pthread_t accept_th;
  pthread_mutex_t lock;
  struct ssh_conn *conns; /* under lock */
  size_t n_conns;         /* open (not yet reaped) */
  size_t accepted;        /* under lock */
  atomic_bool stopping;
};

static void
wake (session_ssh_forward *f)
{
  uint64_t one = 1;
  ssize_t r = write (f->wake_fd, &one, sizeof one);
  (void) r; /* a full counter is still a wakeup */
}

/* Stream -> socket, until the stream ends. */
static void *
pump_down (void *arg)
{
  struct ssh_conn *c = arg;
  for (;;)
    {
      void *msg = NULL;
      size_t len = 0;
      cleanup_error ps_error *err = NULL;
      int r = grpc_call_recv (c->call, &msg, &len, -1, &err);
      if (r == 0)
        {
          /* The client's end closed (its agent answered and hung up): EOF
             for the reader, which may still be sending. */
          shutdown (c->fd, SHUT_WR);
          return NULL;
        }
      if (r < 0)
        {
          ps_debug ("ssh %s: ForwardAgent: %s", c->f->id, err->msg);
          shutdown (c->fd, SHUT_RDWR);
          return NULL;
        }
      Moby__Sshforward__V1__BytesMessage *m = moby__sshforward__v1__bytes_message__unpack (NULL, len, msg);
      free (msg);
      int w = m == NULL ? -1 : ps_send_all (c->fd, m->data.data, m->data.len);
      if (m)
        moby__sshforward__v1__bytes_message__free_unpacked (m, NULL);
      if (w < 0)
        {
          if (m == NULL)
            ps_warn ("ssh %s: ForwardAgent: undecodable BytesMessage from the client", c->f->id);
          grpc_call_cancel (c->call);
          shutdown (c->fd, SHUT_RDWR);
          return NULL;
        }
    }
}

/* Socket -> stream, until the connection's EOF; then waits for the
   other direction. */
static void *
pump_up (void *arg)
{
  struct ssh_conn *c = arg;
  pthread_t down;
  if (pthread_create (&down, NULL, pump_down, c) != 0)
    {
      grpc_call_cancel (c->call);
      shutdown (c->fd, SHUT_RDWR);
      goto out;
    }
  uint8_t *buf = xmalloc (PS_SSH_CHUNK);
  uint8_t *packed = xmalloc (PS_SSH_CHUNK + 16);
  for (;;)
    {
      ssize_t n = read (c->fd, buf, PS_SSH_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      cleanup_error ps_error *err = NULL;
      if (n == 0)
        {
          /* The process is done asking; the answer may still be coming. */
          if (grpc_call_close_send (c->call, &err) < 0)
            grpc_call_cancel (c->call);
          break;
        }
      Moby__Sshforward__V1__BytesMessage m = MOBY__SSHFORWARD__V1__BYTES_MESSAGE__INIT;
      m.data.data = buf;
      m.data.len = (size_t) n;
      size_t len = n > 0 ? moby__sshforward__v1__bytes_message__pack (&m, packed) : 0;
      if (n < 0 || grpc_call_send (c->call, packed, len, &err) < 0)
        {
          if (err)
            ps_debug ("ssh %s: ForwardAgent: %s", c->f->id, err->msg);
          grpc_call_cancel (c->call);
          shutdown (c->fd, SHUT_RDWR);
          break;
        }
    }
  free (buf);
  free (packed);
  pthread_join (down, NULL);
out:
  atomic_store (&c->done, true);
  wake (c->f);
  return NULL;
}

static void
conn_release (struct ssh_conn *c)
{
  pthread_join (c->up, NULL);
  grpc_call_free (c->call);
  close (c->fd);
  free (c);
}

/* Join the connections that have ended (lock held). */
static void
reap_locked (session_ssh_forward *f)
{
  for (struct ssh_conn **pp = &f->conns; *pp;)
    {
      struct ssh_conn *c = *pp;
      if (!atomic_load (&c->done))
        {
          pp = &c->next;
          continue;
        }
      *pp = c->next;
      f->n_conns--;
      conn_release (c);
    }
}

static void
serve_conn (session_ssh_forward *f, int fd)
{
  pthread_mutex_lock (&f->lock);
  reap_locked (f);
  bool full = f->n_conns >= PS_SSH_MAX_CONNECTIONS;
  pthread_mutex_unlock (&f->lock);
  if (full)
    {
      ps_warn ("ssh %s: %d connections open already; one refused", f->id, PS_SSH_MAX_CONNECTIONS);
      close (fd);
      return;
    }
  const struct grpc_metadata md[] = { { SSH_ID_METADATA, f->id } };
  cleanup_error ps_error *err = NULL;
  grpc_call *call = grpc_call_start (session_conn (f->sess), SSH_FORWARD_AGENT, md, ARRAY_SIZE (md), &err);
  if (call == NULL)
    {
      ps_warn ("ssh %s: %s", f->id, err->msg);
      close (fd);
      return;
    }
  struct ssh_conn *c = xcalloc (1, sizeof *c);
  c->f = f;
  c->fd = fd;
  c->call = call;
  if (pthread_create (&c->up, NULL, pump_up, c) != 0)
    {
      ps_warn ("ssh %s: cannot start a thread for a connection", f->id);
      grpc_call_free (call);
      close (fd);
      free (c);
      return;
    }
  pthread_mutex_lock (&f->lock);
  c->next = f->conns;
  f->conns = c;
  f->n_conns++;
  f->accepted++;
  pthread_mutex_unlock (&f->lock);
}

static void *
accept_loop (void *arg)
{
  session_ssh_forward *f = arg;
  while (!atomic_load (&f->stopping))
    {
      struct pollfd p[2] = { { .fd = f->listen_fd, .events = POLLIN }, { .fd = f->wake_fd, .events = POLLIN } };
      if (poll (p, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          ps_warn ("ssh %s: poll: %s", f->id, strerror (errno));
          break;
        }
      if (p[1].revents & POLLIN)
        {
          uint64_t n;
          ssize_t r = read (f->wake_fd, &n, sizeof n);
          (void) r;
          pthread_mutex_lock (&f->lock);
          reap_locked (f);
          pthread_mutex_unlock (&f->lock);
        }
      if (atomic_load (&f->stopping))
        break;
      if (p[0].revents & POLLIN)
        {
          int fd = accept4 (f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
          if (fd >= 0)
            serve_conn (f, fd);
          else if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
            ps_warn ("ssh %s: accept: %s", f->id, strerror (errno));
        }
    }
  return NULL;
}

session_ssh_forward *
session_ssh_forward_start (ps_session *s, const char *id, const char *sock_path, const struct session_ssh_socket *opt,
                           ps_error **err)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  if (strlen (sock_path) >= sizeof sa.sun_path)
    {
      ps_error_set (err, 500, "ssh socket path %s is too long", sock_path);
      return NULL;
    }
  strcpy (sa.sun_path, sock_path);
  cleanup_close int lfd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (lfd < 0 || bind (lfd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      ps_error_set_errno (err, 500, errno, "ssh socket %s", sa.sun_path);
      return NULL;
    }
  mode_t mode = opt && opt->mode ? opt->mode & 0777 : 0600;
  if (listen (lfd, 16) < 0 || chown (sa.sun_path, opt ? opt->uid : 0, opt ? opt->gid : 0) < 0
      || chmod (sa.sun_path, mode) < 0)
    {
      ps_error_set_errno (err, 500, errno, "ssh socket %s", sa.sun_path);
      unlink (sa.sun_path);
      return NULL;
    }
  int wfd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wfd < 0)
    {
      ps_error_set_errno (err, 500, errno, "ssh socket %s: eventfd", sa.sun_path);
      unlink (sa.sun_path);
      return NULL;
    }
  session_ssh_forward *f = xcalloc (1, sizeof *f);
  session_ref (s);
  f->sess = s;
  f->id = xstrdup (ssh_id (id));
  f->path = xstrdup (sock_path);
  f->listen_fd = lfd;
  lfd = -1;
  f->wake_fd = wfd;
  pthread_mutex_init (&f->lock, NULL);
  if (pthread_create (&f->accept_th, NULL, accept_loop, f) != 0)
    {
      ps_error_set (err, 500, "ssh socket %s: cannot start its thread", sock_path);
      close (f->listen_fd);
      close (f->wake_fd);
      unlink (f->path);
      pthread_mutex_destroy (&f->lock);
      session_unref (f->sess);
      free (f->id);
      free (f->path);
      free (f);
      return NULL;
    }
  return f;
}

const char *
session_ssh_forward_path (const session_ssh_forward *f)
{
  return f->path;
}

size_t
session_ssh_forward_connections (session_ssh_forward *f)
{
  pthread_mutex_lock (&f->lock);
  size_t n = f->accepted;
  pthread_mutex_unlock (&f->lock);
  return n;
}

void
session_ssh_forward_stop (session_ssh_forward *f)
{
  if (f == NULL)
    return;
  atomic_store (&f->stopping, true);
  wake (f);
  pthread_join (f->accept_th, NULL);
  close (f->listen_fd);
  unlink (f->path);
  /* No new connection now; end the open ones. */
  pthread_mutex_lock (&f->lock);
  for (struct ssh_conn *c = f->conns; c; c = c->next)
    {
      grpc_call_cancel (c->call);
      shutdown (c->fd, SHUT_RDWR);
    }
  while (f->conns)
    {
      struct ssh_conn *c = f->conns;
      f->conns = c->next;
      conn_release (c);
    }
  pthread_mutex_unlock (&f->lock);
  close (f->wake_fd);
  pthread_mutex_destroy (&f->lock);
  session_unref (f->sess);
  free (f->id);
  free (f->path);
  free (f);
}
