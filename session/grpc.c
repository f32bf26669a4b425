/* grpc.c — gRPC over HTTP/2, both roles: the client on an upgraded
 * /session socket, the server on POST /grpc and --buildkit-listen.
 *
 * Ownership and locking, in one place:
 *  - The I/O thread (the one in grpc_conn_run) is the only thread that calls
 *    nghttp2 or touches the socket.  It never holds conn->mu while calling
 *    into nghttp2; nghttp2's callbacks (which run inside mem_recv/mem_send on
 *    that thread) take conn->mu themselves when they touch call state.
 *  - Every other field of a call and of the connection is under conn->mu.
 *  - Other threads ask the I/O thread for work by putting the call on the
 *    connection's "dirty" list and writing the eventfd: open the stream,
 *    resume sending, return receive window, cancel.
 *  - References: a call is held by its user (until grpc_call_free), by the
 *    dirty list while queued, and by its HTTP/2 stream from submission to
 *    on_stream_close.  The connection is held by its owner and by every call,
 *    so a call outliving grpc_conn_free still has a (dead) connection to lock.
 *  - Server role: the I/O thread creates a call when a request stream begins
 *    (the stream's reference) and, once its headers are complete, starts the
 *    method's handler thread (the user's reference, dropped when the handler
 *    returns).  grpc_call_finish records the status and queues the call: the
 *    I/O thread sends the response HEADERS (trailers-only when no message was
 *    sent) and the data provider the trailers after the last message.
 */
#define _GNU_SOURCE
#include "session/grpc.h"

#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "session/session_limits.h"

/* gRPC message prefix: compressed flag (1 byte) + big-endian length (4). */
#define GRPC_PREFIX 5

struct grpc_msg
{
  struct grpc_msg *next;
  size_t len;  /* payload bytes */
  size_t wire; /* payload + prefix: what we return to the stream window */
  char data[]; /* len bytes + NUL */
};

struct grpc_call
{
  grpc_conn *conn;
  int refs;
  char *path;
  char label[128];
  struct grpc_metadata *md; /* copies, until submitted */
  size_t n_md;

  /* I/O thread bookkeeping. */
  int32_t stream_id;
  bool submitted;      /* the I/O thread has handled the start */
  bool stream_open;    /* holds the stream reference */
  bool in_dirty;
  struct grpc_call *dirty_next;
  struct grpc_call *prev, *next; /* conn->calls: calls holding a stream ref */

  /* Sending. */
  ps_buf out;
  size_t out_off;
  bool send_closed;  /* no more messages from the user */
  bool eof_sent;     /* END_STREAM handed to nghttp2 */
  bool deferred;     /* data provider returned DEFERRED; needs a resume */
  bool cancel_req;   /* user asked to cancel */
  bool cancel_sent;  /* RST_STREAM submitted */

  /* Receiving. */
  struct grpc_reassembly rx; /* the message arriving */
  struct grpc_msg *head, *tail;
  size_t unacked;    /* bytes the user took; to return to the stream window */
  int http_status;
  bool grpc_content_type;
  int status_hdr;    /* grpc-status as received, -1 none */
  char *message_hdr; /* grpc-message, decoded */

  /* Outcome: status >= 0 once the call is over (no more messages arrive). */
  int status;
  char *errmsg;      /* for a non-OK status: what recv reports after the label */
  size_t max_send;   /* largest message grpc_call_send takes */

  /* Server side: md holds the request metadata, status is ours to send. */
  bool server;
  bool method_post;   /* :method POST */
  size_t md_bytes;    /* request metadata received */
  bool recv_eof;      /* the client half-closed: no more request messages */
  bool resp_started;  /* response HEADERS (or trailers-only) submitted */
  bool cancelled;     /* the client reset the stream or the connection died */
  int resp_http;      /* :status of a refusal (405, 415), else 0 for 200 */
  char *wire_msg;     /* grpc-message to send with a non-OK status */
  const struct grpc_method *method;
  const char **md_values; /* grpc_call_metadata_all's answer */

  pthread_cond_t cond;
};

struct grpc_conn
{
  int refs; /* atomic */
  int fd;
  int efd;
  char *label;
  const char *kind; /* "session" (client role) or "grpc" (server): log and error prefix */
  bool server;
  const struct grpc_service_table *services;
  char *tag; /* grpc_serve_tagged's, for its calls (grpc_call_tag) */
  grpc_conn *srv_prev, *srv_next; /* the running servers (grpc_serve_shutdown) */
  /* The bytes go through this when set (TLS), else straight to fd. */
  const struct grpc_transport *transport;
  short read_wait, write_wait; /* what to poll fd for: POLLIN / POLLOUT, or crossed under TLS */
  ps_buf extra_in;

  pthread_mutex_t mu;
  bool dead;
  bool shutdown_req;
  bool goaway_recv;
  char *dead_reason;
  struct grpc_call *dirty;
  struct grpc_call *calls;

  /* I/O thread only. */
  nghttp2_session *h2;
  ps_buf wbuf;
  size_t wbuf_off;
  char *h2_error;     /* last nghttp2 error text, for the death reason */
  char *goaway_text;  /* GOAWAY we received or sent */
  bool goaway_error;  /* ... with an error code */
  bool client_goaway_quirk; /* see on_error */
  /* Idle policy (grpc_conn_set_idle); idle_since 0 while calls are open. */
  int idle_ms;
  bool (*idle_may_close) (void *ud);
  void *idle_ud;
  char *idle_why;
  int64_t idle_since;
  char *close_reason; /* why we ended the connection ourselves, or NULL */
};

static const char *const status_names[] = {
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *
grpc_status_name (int code)
{
  if (code >= 0 && (size_t) code < ARRAY_SIZE (status_names))
    return status_names[code];
  return "?";
}

int
grpc_status_http (int code)
{
  switch (code)
    {
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_OUT_OF_RANGE:
      return 400;
    case GRPC_STATUS_UNAUTHENTICATED:
      return 401;
    case GRPC_STATUS_PERMISSION_DENIED:
      return 403;
    case GRPC_STATUS_NOT_FOUND:
      return 404;
    case GRPC_STATUS_ALREADY_EXISTS:
    case GRPC_STATUS_ABORTED:
      return 409;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
      return 413;
    case GRPC_STATUS_CANCELLED:
      return 500; /* we cancelled it (the build was cancelled): not the client's fault */
    case GRPC_STATUS_UNIMPLEMENTED:
      return 501;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
      return 504;
    default:
      return 502; /* the client's side of the session failed: a bad gateway for us */
    }
}

const char *
grpc_method_label (const char *path, char *buf, size_t buflen)
{
  /* "/pkg.sub.Service/Method" -> "Service/Method" */
  const char *slash = path[0] == '/' ? strchr (path + 1, '/') : NULL;
  if (slash == NULL)
    return path;
  const char *start = slash;
  while (start > path + 1 && start[-1] != '.' && start[-1] != '/')
    start--;
  snprintf (buf, buflen, "%s", start);
  return buf;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

char *
grpc_percent_decode (const char *s, size_t len)
{
  char *out = xmalloc (len + 1);
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    {
      int hi, lo;
      if (s[i] == '%' && i + 2 < len && (hi = hexval (s[i + 1])) >= 0 && (lo = hexval (s[i + 2])) >= 0)
        {
          out[n++] = (char) (hi << 4 | lo);
          i += 2;
        }
      else
        out[n++] = s[i];
    }
  out[n] = '\0';
  return out;
}

char *
grpc_percent_encode (const char *s)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t len = strlen (s);
  char *out = xmalloc (len * 3 + 1);
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    {
      if (*p < 0x20 || *p > 0x7e || *p == '%')
        {
          out[n++] = '%';
          out[n++] = hex[*p >> 4];
          out[n++] = hex[*p & 0xf];
        }
      else
        out[n++] = (char) *p;
    }
  out[n] = '\0';
  return out;
}

/* ---- references ------------------------------------------------------------ */

static void
conn_ref (grpc_conn *c)
{
  __atomic_add_fetch (&c->refs, 1, __ATOMIC_RELAXED);
}

static void
conn_unref (grpc_conn *c)
{
  if (__atomic_sub_fetch (&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  if (c->efd >= 0)
    close (c->efd);
  pthread_mutex_destroy (&c->mu);
  free (c->label);
  free (c->tag);
  free (c->dead_reason);
  free (c->h2_error);
  free (c->goaway_text);
  free (c->idle_why);
  free (c->close_reason);
  ps_buf_free (&c->extra_in);
  ps_buf_free (&c->wbuf);
  free (c);
}

static void
call_destroy (grpc_call *call)
{
  for (struct grpc_msg *m = call->head, *next; m; m = next)
    {
      next = m->next;
      free (m);
    }
  for (size_t i = 0; i < call->n_md; i++)
    {
      free ((char *) call->md[i].key);
      free ((char *) call->md[i].value);
    }
  free (call->md);
  free (call->path);
  free (call->message_hdr);
  free (call->errmsg);
  free (call->wire_msg);
  free (call->md_values);
  ps_buf_free (&call->out);
  grpc_reassembly_free (&call->rx);
  pthread_cond_destroy (&call->cond);
  grpc_conn *c = call->conn;
  free (call);
  conn_unref (c);
}

/* Drop one reference; conn->mu is held and stays held.  Returns the call to
   destroy after unlocking (or NULL). */
static grpc_call *
call_unref_locked (grpc_call *call)
{
  if (--call->refs == 0)
    return call;
  return NULL;
}

/* A new call on `c` with one reference (its user's, or for a server call
   its stream's). */
static grpc_call *
call_new (grpc_conn *c)
{
  grpc_call *call = xcalloc (1, sizeof *call);
  call->status = -1;
  call->status_hdr = -1;
  call->refs = 1;
  call->max_send = PS_GRPC_MAX_SEND_MESSAGE;
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&call->cond, &ca);
  pthread_condattr_destroy (&ca);
  conn_ref (c);
  call->conn = c;
  return call;
}

static void
wake_io (grpc_conn *c)
{
  uint64_t one = 1;
  ssize_t r = write (c->efd, &one, sizeof one);
  (void) r; /* EAGAIN: the counter is already non-zero, the thread will wake */
}

/* Queue the call for the I/O thread; conn->mu held. */
static void
mark_dirty_locked (grpc_call *call)
{
  grpc_conn *c = call->conn;
  if (c->dead || call->in_dirty)
    return;
  call->in_dirty = true;
  call->refs++;
  call->dirty_next = c->dirty;
  c->dirty = call;
  wake_io (c);
}

/* The call is over: record the outcome once and wake its waiters; conn->mu
   held.  `errmsg` is NULL for OK. */
static void
finish_locked (grpc_call *call, int status, const char *fmt, ...) PS_PRINTF (3, 4);

static void
finish_locked (grpc_call *call, int status, const char *fmt, ...)
{
  if (call->status >= 0)
    return;
  call->status = status;
  if (fmt)
    {
      va_list ap;
      va_start (ap, fmt);
      if (vasprintf (&call->errmsg, fmt, ap) < 0)
        abort ();
      va_end (ap);
    }
  pthread_cond_broadcast (&call->cond);
}

/* A server call's outcome: record `status` and `msg` (the grpc-message to
   send, NULL for none) once, and queue the call so the I/O thread answers.
   conn->mu held. */
static void
server_end_locked (grpc_call *call, int status, int http, const char *msg)
{
  if (call->status >= 0)
    return;
  if (status == GRPC_STATUS_OK)
    finish_locked (call, status, NULL);
  else
    finish_locked (call, status, "grpc status %d (%s): %s", status, grpc_status_name (status),
                   msg && *msg ? msg : "(no message)");
  call->resp_http = http;
  /* Cut where a receiver would (and HTTP/2 header blocks stay small). */
  call->wire_msg = msg && status != GRPC_STATUS_OK ? xstrndup (msg, PS_GRPC_MAX_STATUS_MESSAGE) : NULL;
  /* A refusal of what is not a gRPC request (405, 415) is for a plain
     HTTP/2 client: it says why in a text body too, the status following
     in trailers (grpc-go answers such requests with headers alone). */
  if (http && call->wire_msg && call->out.len == call->out_off)
    {
      ps_buf_append (&call->out, call->wire_msg, strlen (call->wire_msg));
      ps_buf_append (&call->out, "\n", 1);
    }
  mark_dirty_locked (call);
}

/* ---- the I/O thread: nghttp2 callbacks -------------------------------------- */

static grpc_call *
stream_call (nghttp2_session *h2, int32_t stream_id)
{
  return nghttp2_session_get_stream_user_data (h2, stream_id);
}

/* A request header of a server call (I/O thread; the call is not yet
   shared, but its fields are conn->mu's all the same). */
static int
server_on_header (grpc_conn *c, grpc_call *call, const uint8_t *name, size_t namelen, const uint8_t *value,
                  size_t valuelen)
{
  int ret = 0;
  pthread_mutex_lock (&c->mu);
  if (namelen == 5 && memcmp (name, ":path", 5) == 0)
    {
      free (call->path);
      call->path = xstrndup ((const char *) value, valuelen);
      char lb[128];
      snprintf (call->label, sizeof call->label, "%s", grpc_method_label (call->path, lb, sizeof lb));
    }
  else if (namelen == 7 && memcmp (name, ":method", 7) == 0)
    call->method_post = valuelen == 4 && memcmp (value, "POST", 4) == 0;
  else if (namelen > 0 && name[0] != ':')
    {
      if (namelen == 12 && memcmp (name, "content-type", 12) == 0)
        call->grpc_content_type = valuelen >= 16 && memcmp (value, "application/grpc", 16) == 0
                                  && (valuelen == 16 || value[16] == '+' || value[16] == ';');
      call->md_bytes += namelen + valuelen;
      if (call->md_bytes > PS_GRPC_MAX_METADATA_BYTES)
        ret = NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream */
      else
        {
          call->md = xrealloc (call->md, (call->n_md + 1) * sizeof *call->md);
          call->md[call->n_md].key = xstrndup ((const char *) name, namelen);
          call->md[call->n_md].value = xstrndup ((const char *) value, valuelen);
          call->n_md++;
        }
    }
  pthread_mutex_unlock (&c->mu);
  return ret;
}

static int
on_header (nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
           const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
  grpc_conn *c = ud;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  grpc_call *call = stream_call (h2, frame->hd.stream_id);
  if (call == NULL)
    return 0;
  if (c->server)
    return frame->headers.cat == NGHTTP2_HCAT_REQUEST ? server_on_header (c, call, name, namelen, value, valuelen)
                                                      : 0;
  pthread_mutex_lock (&c->mu);
  if (namelen == 7 && memcmp (name, ":status", 7) == 0)
    {
      char tmp[8] = "";
      memcpy (tmp, value, valuelen < sizeof tmp - 1 ? valuelen : sizeof tmp - 1);
      call->http_status = atoi (tmp);
    }
  else if (namelen == 12 && memcmp (name, "content-type", 12) == 0)
    call->grpc_content_type = valuelen >= 16 && memcmp (value, "application/grpc", 16) == 0;
  else if (namelen == 11 && memcmp (name, "grpc-status", 11) == 0)
    {
      int code = 0;
      bool ok = valuelen > 0 && valuelen < 6;
      for (size_t i = 0; ok && i < valuelen; i++)
        {
          ok = value[i] >= '0' && value[i] <= '9';
          code = code * 10 + (value[i] - '0');
        }
      call->status_hdr = ok ? code : GRPC_STATUS_UNKNOWN;
    }
  else if (namelen == 12 && memcmp (name, "grpc-message", 12) == 0)
    {
      free (call->message_hdr);
      size_t n = valuelen < PS_GRPC_MAX_STATUS_MESSAGE ? valuelen : PS_GRPC_MAX_STATUS_MESSAGE;
      call->message_hdr = grpc_percent_decode ((const char *) value, n);
    }
  pthread_mutex_unlock (&c->mu);
  return 0;
}

/* The HTTP status a gRPC client maps to a code when a response is not gRPC
   at all (grpc-go's table). */
static int
http_to_grpc (int http)
{
  switch (http)
    {
    case 400:
      return GRPC_STATUS_INTERNAL;
    case 401:
      return GRPC_STATUS_UNAUTHENTICATED;
    case 403:
      return GRPC_STATUS_PERMISSION_DENIED;
    case 404:
      return GRPC_STATUS_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GRPC_STATUS_UNAVAILABLE;
    default:
      return GRPC_STATUS_UNKNOWN;
    }
}

/* The status block ended the stream (trailers, or a trailers-only
   response): the call's outcome is known.  conn->mu held. */
static void
finish_from_status_locked (grpc_call *call)
{
  if (call->status_hdr < 0)
    {
      finish_locked (call, GRPC_STATUS_INTERNAL, "grpc status %d (%s): response ended without grpc-status",
                     GRPC_STATUS_INTERNAL, grpc_status_name (GRPC_STATUS_INTERNAL));
      return;
    }
  size_t pending = grpc_reassembly_pending (&call->rx);
  if (call->status_hdr == GRPC_STATUS_OK && pending > 0 && call->rx.want == 0)
    {
      finish_locked (call, GRPC_STATUS_INTERNAL,
                     "grpc status %d (%s): stream ended inside a message prefix (%zu of %d bytes)",
                     GRPC_STATUS_INTERNAL, grpc_status_name (GRPC_STATUS_INTERNAL), pending, GRPC_PREFIX);
      return;
    }
  if (call->status_hdr == GRPC_STATUS_OK && pending > 0)
    {
      finish_locked (call, GRPC_STATUS_INTERNAL,
                     "grpc status %d (%s): stream ended inside a message (%zu of %zu bytes)", GRPC_STATUS_INTERNAL,
                     grpc_status_name (GRPC_STATUS_INTERNAL), pending, call->rx.want);
      return;
    }
  if (call->status_hdr == GRPC_STATUS_OK)
    finish_locked (call, GRPC_STATUS_OK, NULL);
  else
    finish_locked (call, call->status_hdr, "grpc status %d (%s): %s", call->status_hdr,
                   grpc_status_name (call->status_hdr),
                   call->message_hdr && call->message_hdr[0] ? call->message_hdr : "(no message)");
}

/* The peer ended the call while our side is still open (we never
   half-closed): wake the data provider so it sends END_STREAM and the
   stream closes instead of lingering (Go's server resets it; others may
   not). */
static void
resume_if_finished (nghttp2_session *h2, grpc_conn *c, grpc_call *call, int32_t stream_id)
{
  pthread_mutex_lock (&c->mu);
  bool resume = call->status >= 0 && call->deferred;
  if (resume)
    call->deferred = false;
  pthread_mutex_unlock (&c->mu);
  if (resume)
    nghttp2_session_resume_data (h2, stream_id);
}

/* A request stream begins (server): its call, held by the stream. */
static int
on_begin_headers (nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
  grpc_conn *c = ud;
  if (!c->server || frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  grpc_call *call = call_new (c);
  call->server = true;
  call->submitted = true;
  call->stream_id = frame->hd.stream_id;
  call->rx.max = PS_GRPC_SERVER_MAX_MESSAGE;
  call->max_send = PS_GRPC_SERVER_MAX_MESSAGE;
  snprintf (call->label, sizeof call->label, "stream %d", frame->hd.stream_id);
  pthread_mutex_lock (&c->mu);
  call->stream_open = true;
  call->next = c->calls;
  if (c->calls)
    c->calls->prev = call;
  c->calls = call;
  pthread_mutex_unlock (&c->mu);
  nghttp2_session_set_stream_user_data (h2, frame->hd.stream_id, call);
  return 0;
}

static size_t handlers_running; /* atomic: grpc_server_handlers_running */

size_t
grpc_server_handlers_running (void)
{
  return __atomic_load_n (&handlers_running, __ATOMIC_ACQUIRE);
}

static void *
handler_main (void *arg)
{
  grpc_call *call = arg;
  call->method->fn (call, call->method->ud);
  /* A handler that forgot its status: the client must not wait forever. */
  grpc_call_finish (call, GRPC_STATUS_UNKNOWN, "the handler of %s ended without a status", call->path);
  grpc_call_free (call);
  __atomic_sub_fetch (&handlers_running, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* The method `path` names in the service table, or NULL with *why (the
   UNIMPLEMENTED message, grpc-go's words). */
static const struct grpc_method *
find_method (const struct grpc_service_table *t, const char *path, char **why)
{
  const char *slash = path && path[0] == '/' ? strrchr (path, '/') : NULL;
  if (slash == NULL || slash == path)
    {
      *why = xasprintf ("malformed method name: \"%s\"", path ? path : "");
      return NULL;
    }
  bool service_known = false;
  for (size_t i = 0; t && i < t->n; i++)
    {
      if (strcmp (t->methods[i].path, path) == 0)
        return &t->methods[i];
      if (strncmp (t->methods[i].path, path, (size_t) (slash - path) + 1) == 0)
        service_known = true;
    }
  if (service_known)
    *why = xasprintf ("unknown method %s for service %.*s", slash + 1, (int) (slash - path - 1), path + 1);
  else
    *why = xasprintf ("unknown service %.*s", (int) (slash - path - 1), path + 1);
  return NULL;
}

/* The request's headers are complete (server): refuse it or start its
   handler.  I/O thread, conn->mu not held. */
static void
server_request (grpc_conn *c, grpc_call *call)
{
  cleanup_free char *why = NULL;
  pthread_mutex_lock (&c->mu);
  const struct grpc_method *m = NULL;
  if (!call->method_post)
    server_end_locked (call, GRPC_STATUS_INTERNAL, 405, "gRPC requires the POST method");
  else if (!call->grpc_content_type)
    {
      const char *ct = grpc_call_metadata (call, "content-type");
      why = xasprintf ("invalid gRPC request content-type \"%s\"", ct ? ct : "");
      server_end_locked (call, GRPC_STATUS_INTERNAL, 415, why);
    }
  else if ((m = find_method (c->services, call->path, &why)) == NULL)
    server_end_locked (call, GRPC_STATUS_UNIMPLEMENTED, 0, why);
  else
    {
      call->method = m;
      call->refs++; /* the handler's */
    }
  pthread_mutex_unlock (&c->mu);
  if (m == NULL)
    {
      ps_debug ("%s %s: stream %d %s refused: %s", c->kind, c->label, call->stream_id, call->path ? call->path : "",
                why ? why : "not a gRPC request");
      return;
    }
  ps_debug ("%s %s: stream %d %s", c->kind, c->label, call->stream_id, call->path);
  __atomic_add_fetch (&handlers_running, 1, __ATOMIC_ACQ_REL);
  int r = ps_thread_start (NULL, handler_main, call, 0, true);
  if (r != 0)
    {
      __atomic_sub_fetch (&handlers_running, 1, __ATOMIC_RELEASE);
      cleanup_free char *msg = xasprintf ("cannot start a handler thread: %s", strerror (r));
      ps_warn ("%s %s: %s", c->kind, c->label, msg);
      pthread_mutex_lock (&c->mu);
      server_end_locked (call, GRPC_STATUS_UNAVAILABLE, 0, msg);
      grpc_call *dead = call_unref_locked (call);
      pthread_mutex_unlock (&c->mu);
      if (dead)
        call_destroy (dead);
    }
}

/* The client half-closed a server call.  conn->mu held. */
static void
server_eof_locked (grpc_call *call)
{
  call->recv_eof = true;
  size_t pending = grpc_reassembly_pending (&call->rx);
  if (pending > 0 && call->status < 0)
    {
      cleanup_free char *msg = xasprintf ("the request ended inside a message (%zu bytes of it)", pending);
      server_end_locked (call, GRPC_STATUS_INTERNAL, 0, msg);
    }
  pthread_cond_broadcast (&call->cond);
}

static int
on_frame_recv (nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
  grpc_conn *c = ud;
  switch (frame->hd.type)
    {
    case NGHTTP2_HEADERS:
      {
        grpc_call *call = stream_call (h2, frame->hd.stream_id);
        if (call == NULL)
          return 0;
        bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        if (c->server)
          {
            if (frame->headers.cat == NGHTTP2_HCAT_REQUEST)
              server_request (c, call);
            if (end)
              {
                pthread_mutex_lock (&c->mu);
                server_eof_locked (call);
                pthread_mutex_unlock (&c->mu);
              }
            return 0;
          }
        pthread_mutex_lock (&c->mu);
        if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE)
          {
            if (call->http_status != 200 && call->status_hdr < 0)
              finish_locked (call, http_to_grpc (call->http_status),
                             "grpc status %d (%s): HTTP status %d instead of 200",
                             http_to_grpc (call->http_status), grpc_status_name (http_to_grpc (call->http_status)),
                             call->http_status);
            else if (!call->grpc_content_type && call->status_hdr < 0)
              finish_locked (call, GRPC_STATUS_INTERNAL, "grpc status %d (%s): response is not application/grpc",
                             GRPC_STATUS_INTERNAL, grpc_status_name (GRPC_STATUS_INTERNAL));
            else if (end)
              finish_from_status_locked (call); /* trailers-only */
          }
        else if (end)
          finish_from_status_locked (call); /* trailers */
        bool failed = call->status > 0;
        pthread_mutex_unlock (&c->mu);
        if (failed && !end)
          nghttp2_submit_rst_stream (h2, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_CANCEL);
        else if (end)
          resume_if_finished (h2, c, call, frame->hd.stream_id);
        return 0;
      }
    case NGHTTP2_DATA:
      if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        {
          /* END_STREAM on DATA: the peer ended without trailers. */
          grpc_call *call = stream_call (h2, frame->hd.stream_id);
          if (call == NULL)
            return 0;
          pthread_mutex_lock (&c->mu);
          if (c->server)
            {
              server_eof_locked (call);
              pthread_mutex_unlock (&c->mu);
              return 0;
            }
          finish_from_status_locked (call);
          pthread_mutex_unlock (&c->mu);
          resume_if_finished (h2, c, call, frame->hd.stream_id);
        }
      return 0;
    case NGHTTP2_GOAWAY:
      {
        const nghttp2_goaway *g = &frame->goaway;
        free (c->goaway_text);
        c->goaway_text = xasprintf ("the client sent GOAWAY (%s%s%.*s)", nghttp2_http2_strerror (g->error_code),
                                    g->opaque_data_len ? ": " : "", (int) g->opaque_data_len,
                                    (const char *) g->opaque_data);
        c->goaway_error = g->error_code != NGHTTP2_NO_ERROR;
        pthread_mutex_lock (&c->mu);
        c->goaway_recv = true;
        pthread_mutex_unlock (&c->mu);
        ps_debug ("%s %s: %s", c->kind, c->label, c->goaway_text);
        return 0;
      }
    default:
      return 0;
    }
}

static int
on_frame_send (nghttp2_session *h2, const nghttp2_frame *frame, void *ud)
{
  grpc_conn *c = ud;
  if (frame->hd.type == NGHTTP2_GOAWAY && c->client_goaway_quirk)
    {
      free (c->goaway_text);
      c->goaway_text = xstrdup ("the client sent GOAWAY (closing its transport)");
    }
  else if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
    {
      free (c->goaway_text);
      c->goaway_text = xasprintf ("HTTP/2 protocol error (%s%s%s)", nghttp2_http2_strerror (frame->goaway.error_code),
                                  c->h2_error ? ": " : "", c->h2_error ? c->h2_error : "");
      c->goaway_error = true;
    }
  return 0;
}

/* ---- message reassembly (§1) ------------------------------------------------- */

int
grpc_reassemble (struct grpc_reassembly *r, const void *data, size_t len, grpc_message_fn on_message, void *ud,
                 size_t *dropped, ps_error **err)
{
  const uint8_t *p = data;
  size_t max = r->max ? r->max : PS_GRPC_MAX_MESSAGE;
  while (len > 0)
    {
      if (r->partial.len < GRPC_PREFIX)
        {
          size_t take = GRPC_PREFIX - r->partial.len;
          if (take > len)
            take = len;
          ps_buf_append (&r->partial, p, take);
          p += take;
          len -= take;
          if (r->partial.len < GRPC_PREFIX)
            break;
          const unsigned char *h = (const unsigned char *) r->partial.data;
          uint32_t mlen = (uint32_t) h[1] << 24 | (uint32_t) h[2] << 16 | (uint32_t) h[3] << 8 | h[4];
          int code = GRPC_STATUS_OK;
          if (h[0] != 0)
            {
              code = GRPC_STATUS_INTERNAL;
              ps_error_set (err, grpc_status_http (code),
                            "grpc status %d (%s): compressed message (flag %u) but no compression was negotiated",
                            code, grpc_status_name (code), h[0]);
            }
          else if (mlen > max)
            {
              code = GRPC_STATUS_RESOURCE_EXHAUSTED;
              ps_error_set (err, grpc_status_http (code),
                            "grpc status %d (%s): received message larger than max (%u vs. %zu bytes)", code,
                            grpc_status_name (code), mlen, max);
            }
          if (code != GRPC_STATUS_OK)
            {
              if (dropped)
                *dropped = r->partial.len + len;
              ps_buf_reset (&r->partial);
              r->want = 0;
              return code;
            }
          r->want = GRPC_PREFIX + (size_t) mlen;
        }
      size_t take = r->want - r->partial.len;
      if (take > len)
        take = len;
      ps_buf_append (&r->partial, p, take);
      p += take;
      len -= take;
      if (r->partial.len == r->want)
        {
          on_message (ud, r->partial.data + GRPC_PREFIX, r->want - GRPC_PREFIX);
          ps_buf_reset (&r->partial);
          r->want = 0;
        }
    }
  return 0;
}

size_t
grpc_reassembly_pending (const struct grpc_reassembly *r)
{
  return r->partial.len;
}

void
grpc_reassembly_free (struct grpc_reassembly *r)
{
  ps_buf_free (&r->partial);
  r->want = 0;
}

/* on_message of a call's reassembly (conn->mu held): queue it for recv. */
static void
queue_message_locked (void *ud, const void *msg, size_t len)
{
  grpc_call *call = ud;
  struct grpc_msg *m = xmalloc (sizeof *m + len + 1);
  m->next = NULL;
  m->len = len;
  m->wire = GRPC_PREFIX + len;
  memcpy (m->data, msg, len);
  m->data[len] = '\0';
  if (call->tail)
    call->tail->next = m;
  else
    call->head = m;
  call->tail = m;
  pthread_cond_broadcast (&call->cond);
}

static int
on_data_chunk_recv (nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *ud)
{
  grpc_conn *c = ud;
  /* Connection-level credit goes back at once so one slow call never
     starves the others; stream credit waits for the user (recv). */
  nghttp2_session_consume_connection (h2, len);
  grpc_call *call = stream_call (h2, stream_id);
  if (call == NULL)
    {
      nghttp2_session_consume_stream (h2, stream_id, len);
      return 0;
    }
  bool reset = false;
  size_t discard = 0;
  pthread_mutex_lock (&c->mu);
  if (call->status >= 0)
    discard = len; /* over (cancelled, oversize...): drop */
  else
    {
      /* Bytes that will never be handed to the user (a refused message)
         get their window back now rather than on recv. */
      cleanup_error ps_error *rerr = NULL;
      int code = grpc_reassemble (&call->rx, data, len, queue_message_locked, call, &discard, &rerr);
      if (code != GRPC_STATUS_OK && call->server)
        {
          /* Answer with the status (trailers); the rest of the request is
             dropped as it comes.  The wire message is without our prefix. */
          const char *m = strstr (rerr->msg, "): ");
          server_end_locked (call, code, 0, m ? m + 3 : rerr->msg);
        }
      else if (code != GRPC_STATUS_OK)
        {
          finish_locked (call, code, "%s", rerr->msg);
          reset = true;
        }
    }
  pthread_mutex_unlock (&c->mu);
  if (discard)
    nghttp2_session_consume_stream (h2, stream_id, discard);
  if (reset)
    nghttp2_submit_rst_stream (h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
  return 0;
}

static int
on_stream_close (nghttp2_session *h2, int32_t stream_id, uint32_t error_code, void *ud)
{
  grpc_conn *c = ud;
  grpc_call *call = stream_call (h2, stream_id);
  if (call == NULL)
    return 0;
  nghttp2_session_set_stream_user_data (h2, stream_id, NULL);
  pthread_mutex_lock (&c->mu);
  if (call->server)
    {
      if (call->status < 0 || error_code != NGHTTP2_NO_ERROR)
        call->cancelled = true;
      if (call->cancel_req)
        finish_locked (call, GRPC_STATUS_CANCELLED, "grpc status %d (%s): cancelled", GRPC_STATUS_CANCELLED,
                       grpc_status_name (GRPC_STATUS_CANCELLED));
      else
        finish_locked (call, GRPC_STATUS_CANCELLED, "grpc status %d (%s): cancelled by the client (HTTP/2 %s)",
                       GRPC_STATUS_CANCELLED, grpc_status_name (GRPC_STATUS_CANCELLED),
                       nghttp2_http2_strerror (error_code));
    }
  else if (call->cancel_req)
    finish_locked (call, GRPC_STATUS_CANCELLED, "grpc status %d (%s): cancelled", GRPC_STATUS_CANCELLED,
                   grpc_status_name (GRPC_STATUS_CANCELLED));
  else if (c->goaway_error && c->goaway_text)
    finish_locked (call, GRPC_STATUS_UNAVAILABLE, "%s connection lost: %s", c->kind, c->goaway_text);
  else if (error_code == NGHTTP2_REFUSED_STREAM)
    finish_locked (call, GRPC_STATUS_UNAVAILABLE, "grpc status %d (%s): the client refused the stream%s%s",
                   GRPC_STATUS_UNAVAILABLE, grpc_status_name (GRPC_STATUS_UNAVAILABLE), c->goaway_text ? ": " : "",
                   c->goaway_text ? c->goaway_text : "");
  else if (error_code != NGHTTP2_NO_ERROR)
    finish_locked (call, GRPC_STATUS_UNAVAILABLE, "grpc status %d (%s): stream reset (HTTP/2 %s)",
                   GRPC_STATUS_UNAVAILABLE, grpc_status_name (GRPC_STATUS_UNAVAILABLE),
                   nghttp2_http2_strerror (error_code));
  else
    finish_locked (call, GRPC_STATUS_INTERNAL, "grpc status %d (%s): stream closed without grpc-status",
                   GRPC_STATUS_INTERNAL, grpc_status_name (GRPC_STATUS_INTERNAL));
  /* Unlink and drop the stream's reference. */
  if (call->stream_open)
    {
      call->stream_open = false;
      if (call->prev)
        call->prev->next = call->next;
      else
        c->calls = call->next;
      if (call->next)
        call->next->prev = call->prev;
      call->prev = call->next = NULL;
    }
  grpc_call *dead = call_unref_locked (call);
  pthread_mutex_unlock (&c->mu);
  if (dead)
    call_destroy (dead);
  return 0;
}

static int
on_error (nghttp2_session *h2, int lib_error_code, const char *msg, size_t len, void *ud)
{
  grpc_conn *c = ud;
  free (c->h2_error);
  c->h2_error = xstrndup (msg, len);
  ps_debug ("%s %s: nghttp2: %s", c->kind, c->label, c->h2_error);
  return 0;
}

/* grpc-go's client closes its transport with a GOAWAY naming its own last
   stream (an odd id); nghttp2 reads a client's last_stream_id as one of the
   server's (push) streams and ends the session with PROTOCOL_ERROR.  The
   client is leaving either way: that is its ordinary goodbye, not a fault
   to log or report. */
static int
on_invalid_frame_recv (nghttp2_session *h2, const nghttp2_frame *frame, int lib_error_code, void *ud)
{
  grpc_conn *c = ud;
  if (c->server && frame->hd.type == NGHTTP2_GOAWAY && (frame->goaway.last_stream_id & 1) == 1)
    c->client_goaway_quirk = true;
  else
    ps_debug ("%s %s: invalid frame of type %u: %s", c->kind, c->label, frame->hd.type,
              nghttp2_strerror (lib_error_code));
  return 0;
}

/* Send a server call's status: as trailers after the messages, or as a
   trailers-only response (HEADERS with :status and the status, ending the
   stream) when no message was sent.  I/O thread. */
static void
server_send_status (nghttp2_session *h2, grpc_conn *c, grpc_call *call, int32_t stream_id, bool trailers_only)
{
  char code[16], http[8];
  pthread_mutex_lock (&c->mu);
  snprintf (code, sizeof code, "%d", call->status);
  snprintf (http, sizeof http, "%d", call->resp_http ? call->resp_http : 200);
  cleanup_free char *msg = call->wire_msg ? grpc_percent_encode (call->wire_msg) : NULL;
  pthread_mutex_unlock (&c->mu);
  nghttp2_nv nva[4];
  size_t n = 0;
#define NV(k, v)                                                                                                      \
  nva[n++] = (nghttp2_nv) { (uint8_t *) (k), (uint8_t *) (v), strlen (k), strlen (v), NGHTTP2_NV_FLAG_NONE }
  if (trailers_only)
    {
      NV (":status", http);
      NV ("content-type", "application/grpc");
    }
  NV ("grpc-status", code);
  if (msg)
    NV ("grpc-message", msg);
#undef NV
  int rv = trailers_only ? nghttp2_submit_response (h2, stream_id, nva, n, NULL)
                         : nghttp2_submit_trailer (h2, stream_id, nva, n);
  if (rv != 0)
    {
      ps_debug ("%s %s: stream %d: cannot send the status: %s", c->kind, c->label, stream_id, nghttp2_strerror (rv));
      nghttp2_submit_rst_stream (h2, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
    }
}

/* Data provider: hand nghttp2 the call's queued bytes. */
static ssize_t
read_out (nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
          nghttp2_data_source *source, void *ud)
{
  grpc_conn *c = ud;
  grpc_call *call = source->ptr;
  pthread_mutex_lock (&c->mu);
  size_t avail = call->out.len - call->out_off;
  size_t n = avail < length ? avail : length;
  if (n)
    memcpy (buf, call->out.data + call->out_off, n);
  call->out_off += n;
  if (call->out_off == call->out.len)
    {
      ps_buf_reset (&call->out);
      call->out_off = 0;
    }
  else if (call->out_off > PS_GRPC_SEND_BUFFER)
    {
      memmove (call->out.data, call->out.data + call->out_off, call->out.len - call->out_off);
      call->out.len -= call->out_off;
      call->out_off = 0;
    }
  ssize_t ret = (ssize_t) n;
  bool trailers = false;
  if (call->out.len == call->out_off && ((call->send_closed && !call->server) || call->status >= 0))
    {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (call->server)
        {
          /* The status goes in trailers, which end the stream. */
          *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
          trailers = true;
        }
      call->eof_sent = true;
      pthread_cond_broadcast (&call->cond);
    }
  else if (n == 0)
    {
      call->deferred = true;
      ret = NGHTTP2_ERR_DEFERRED;
    }
  if (n)
    pthread_cond_broadcast (&call->cond); /* room for a blocked sender */
  pthread_mutex_unlock (&c->mu);
  if (trailers)
    server_send_status (h2, c, call, stream_id, false);
  return ret;
}

/* ---- the I/O thread: commands from other threads ---------------------------- */

static void
submit_call (grpc_conn *c, grpc_call *call)
{
  size_t n = 0;
  nghttp2_nv *nva = xcalloc (7 + call->n_md, sizeof *nva);
#define NV(k, v)                                                                                                      \
  do                                                                                                                  \
    {                                                                                                                 \
      nva[n].name = (uint8_t *) (k);                                                                                  \
      nva[n].namelen = strlen (k);                                                                                    \
      nva[n].value = (uint8_t *) (v);                                                                                 \
      nva[n].valuelen = strlen (v);                                                                                   \
      nva[n].flags = NGHTTP2_NV_FLAG_NONE;                                                                            \
      n++;                                                                                                            \
    }                                                                                                                 \
  while (0)
  NV (":method", "POST");
  NV (":scheme", "http");
  NV (":path", call->path);
  NV (":authority", "localhost");
  NV ("content-type", "application/grpc");
  NV ("te", "trailers");
#ifdef PODSOLVE_VERSION
  NV ("user-agent", "podsolve/" PODSOLVE_VERSION);
#endif
  for (size_t i = 0; i < call->n_md; i++)
    NV (call->md[i].key, call->md[i].value);
#undef NV
  nghttp2_data_provider prd = { .source.ptr = call, .read_callback = read_out };
  /* Take the stream's reference before submitting: callbacks for the new
     stream may run within the next mem_send. */
  pthread_mutex_lock (&c->mu);
  call->refs++;
  pthread_mutex_unlock (&c->mu);
  int32_t id = nghttp2_submit_request (c->h2, NULL, nva, n, &prd, call);
  free (nva);
  pthread_mutex_lock (&c->mu);
  call->submitted = true;
  grpc_call *dead = NULL;
  if (id < 0)
    {
      if (id == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED || id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
        finish_locked (call, GRPC_STATUS_UNAVAILABLE, "grpc status %d (%s): the session is closing%s%s",
                       GRPC_STATUS_UNAVAILABLE, grpc_status_name (GRPC_STATUS_UNAVAILABLE),
                       c->goaway_text ? ": " : "", c->goaway_text ? c->goaway_text : "");
      else
        finish_locked (call, GRPC_STATUS_INTERNAL, "grpc status %d (%s): cannot open a stream: %s",
                       GRPC_STATUS_INTERNAL, grpc_status_name (GRPC_STATUS_INTERNAL), nghttp2_strerror (id));
      dead = call_unref_locked (call);
    }
  else
    {
      call->stream_id = id;
      call->stream_open = true;
      call->next = c->calls;
      if (c->calls)
        c->calls->prev = call;
      c->calls = call;
      ps_debug ("%s %s: stream %d %s", c->kind, c->label, id, call->path);
    }
  pthread_mutex_unlock (&c->mu);
  if (dead)
    call_destroy (dead);
}

static void
process_dirty (grpc_conn *c)
{
  pthread_mutex_lock (&c->mu);
  grpc_call *list = c->dirty;
  c->dirty = NULL;
  pthread_mutex_unlock (&c->mu);

  /* The list is newest first; opening streams in submission order keeps
     their ids in the order the calls were made. */
  grpc_call *rev = NULL;
  while (list)
    {
      grpc_call *next = list->dirty_next;
      list->dirty_next = rev;
      rev = list;
      list = next;
    }

  for (grpc_call *call = rev, *next; call; call = next)
    {
      next = call->dirty_next;
      pthread_mutex_lock (&c->mu);
      call->in_dirty = false;
      call->dirty_next = NULL;
      bool need_submit = !call->submitted && !call->cancel_req && call->status < 0;
      if (!call->submitted && (call->cancel_req || call->status >= 0))
        {
          call->submitted = true;
          finish_locked (call, GRPC_STATUS_CANCELLED, "grpc status %d (%s): cancelled", GRPC_STATUS_CANCELLED,
                         grpc_status_name (GRPC_STATUS_CANCELLED));
        }
      bool open = call->stream_open;
      int32_t id = call->stream_id;
      bool cancel = open && call->cancel_req && !call->cancel_sent;
      if (cancel)
        call->cancel_sent = true;
      bool resume = open && call->deferred;
      if (resume)
        call->deferred = false;
      size_t ack = open ? call->unacked : 0;
      call->unacked = 0;
      /* Server: the response starts with the first message or the status. */
      bool respond = call->server && open && !cancel && !call->cancel_sent && !call->resp_started
                     && (call->out.len > call->out_off || call->status >= 0);
      bool trailers_only = respond && call->out.len == call->out_off;
      int resp_http = call->resp_http;
      if (respond)
        call->resp_started = true;
      pthread_mutex_unlock (&c->mu);

      if (need_submit)
        submit_call (c, call);
      if (cancel)
        nghttp2_submit_rst_stream (c->h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      else
        {
          if (trailers_only)
            server_send_status (c->h2, c, call, id, true);
          else if (respond)
            {
              static const nghttp2_nv head[] = {
                { (uint8_t *) ":status", (uint8_t *) "200", 7, 3, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) "content-type", (uint8_t *) "application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE },
              };
              char refused[8];
              snprintf (refused, sizeof refused, "%d", resp_http);
              const nghttp2_nv refusal[] = {
                { (uint8_t *) ":status", (uint8_t *) refused, 7, strlen (refused), NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *) "content-type", (uint8_t *) "text/plain; charset=utf-8", 12, 25, NGHTTP2_NV_FLAG_NONE },
              };
              nghttp2_data_provider prd = { .source.ptr = call, .read_callback = read_out };
              int rv = resp_http ? nghttp2_submit_response (c->h2, id, refusal, ARRAY_SIZE (refusal), &prd)
                                 : nghttp2_submit_response (c->h2, id, head, ARRAY_SIZE (head), &prd);
              if (rv != 0)
                nghttp2_submit_rst_stream (c->h2, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
            }
          if (resume)
            nghttp2_session_resume_data (c->h2, id);
          if (ack)
            nghttp2_session_consume_stream (c->h2, id, ack);
        }

      pthread_mutex_lock (&c->mu);
      grpc_call *dead = call_unref_locked (call);
      pthread_mutex_unlock (&c->mu);
      if (dead)
        call_destroy (dead);
    }
}

/* ---- the I/O thread: the loop ------------------------------------------------ */

grpc_conn *
grpc_conn_new (int fd, const void *extra_in, size_t extra_len, const char *label, ps_error **err)
{
  int efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0)
    return ps_error_set_errno (err, 500, errno, "eventfd"), NULL;
  int fl = fcntl (fd, F_GETFL);
  if (fl < 0 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) < 0)
    {
      close (efd);
      return ps_error_set_errno (err, 500, errno, "session socket: set non-blocking"), NULL;
    }
  grpc_conn *c = xcalloc (1, sizeof *c);
  c->refs = 1;
  c->fd = fd;
  c->efd = efd;
  c->label = xstrdup (label ? label : "?");
  c->kind = "session";
  c->read_wait = POLLIN;
  c->write_wait = POLLOUT;
  pthread_mutex_init (&c->mu, NULL);
  if (extra_len)
    ps_buf_append (&c->extra_in, extra_in, extra_len);
  return c;
}

bool
grpc_conn_alive (grpc_conn *c)
{
  pthread_mutex_lock (&c->mu);
  bool alive = !c->dead && !c->shutdown_req && !c->goaway_recv;
  pthread_mutex_unlock (&c->mu);
  return alive;
}

char *
grpc_conn_dead_reason (grpc_conn *c)
{
  pthread_mutex_lock (&c->mu);
  char *r = c->dead ? xstrdup (c->dead_reason) : NULL;
  pthread_mutex_unlock (&c->mu);
  return r;
}

void
grpc_conn_set_idle (grpc_conn *c, int idle_ms, bool (*may_close) (void *ud), void *ud, const char *why)
{
  c->idle_ms = idle_ms;
  c->idle_may_close = may_close;
  c->idle_ud = ud;
  free (c->idle_why);
  c->idle_why = xstrdup (why ? why : "no call open");
}

/* The poll timeout the idle policy allows (ms, -1 = none), or 0 after it
   decided to end the connection.  I/O thread. */
static int
idle_poll_timeout (grpc_conn *c)
{
  if (c->idle_ms <= 0 || c->close_reason)
    return -1;
  pthread_mutex_lock (&c->mu);
  bool busy = c->calls != NULL || c->dirty != NULL || c->shutdown_req;
  pthread_mutex_unlock (&c->mu);
  int64_t now = ps_monotonic_ns ();
  if (busy)
    {
      c->idle_since = 0;
      return -1;
    }
  if (c->idle_since == 0)
    c->idle_since = now;
  int64_t left = c->idle_since + (int64_t) c->idle_ms * 1000000 - now;
  if (left <= 0)
    {
      if (c->idle_may_close == NULL || c->idle_may_close (c->idle_ud))
        {
          c->close_reason = c->idle_ms % 1000
                                ? xasprintf ("idle for %d ms: %s", c->idle_ms, c->idle_why)
                                : xasprintf ("idle for %d s: %s", c->idle_ms / 1000, c->idle_why);
          ps_info ("%s %s: closing: %s", c->kind, c->label, c->close_reason);
          pthread_mutex_lock (&c->mu);
          c->shutdown_req = true;
          pthread_mutex_unlock (&c->mu);
          return 0;
        }
      c->idle_since = now;
      left = (int64_t) c->idle_ms * 1000000;
    }
  return (int) ((left + 999999) / 1000000);
}

void
grpc_conn_shutdown (grpc_conn *c)
{
  pthread_mutex_lock (&c->mu);
  c->shutdown_req = true;
  pthread_mutex_unlock (&c->mu);
  wake_io (c);
}

static void conn_die (grpc_conn *c, const char *reason);

void
grpc_conn_free (grpc_conn *c)
{
  if (c == NULL)
    return;
  /* Never ran: calls queued for an I/O thread that will not come. */
  conn_die (c, "the session was closed before it started");
  conn_unref (c);
}

/* Mark the connection dead and fail every call still running. */
static void
conn_die (grpc_conn *c, const char *reason)
{
  pthread_mutex_lock (&c->mu);
  if (!c->dead)
    {
      c->dead = true;
      c->dead_reason = xstrdup (reason);
    }
  grpc_call *calls = c->calls;
  c->calls = NULL;
  grpc_call *dirty = c->dirty;
  c->dirty = NULL;
  /* Calls holding a stream reference. */
  grpc_call *destroy = NULL;
  for (grpc_call *call = calls, *next; call; call = next)
    {
      next = call->next;
      call->prev = call->next = NULL;
      call->stream_open = false;
      call->cancelled = true;
      finish_locked (call, GRPC_STATUS_UNAVAILABLE, "%s connection lost: %s", c->kind, reason);
      if (call_unref_locked (call))
        {
          call->dirty_next = destroy;
          destroy = call;
        }
    }
  /* Calls queued for the I/O thread. */
  for (grpc_call *call = dirty, *next; call; call = next)
    {
      next = call->dirty_next;
      call->in_dirty = false;
      call->submitted = true;
      call->cancelled = true;
      finish_locked (call, GRPC_STATUS_UNAVAILABLE, "%s connection lost: %s", c->kind, reason);
      if (call_unref_locked (call))
        {
          call->dirty_next = destroy;
          destroy = call;
        }
    }
  pthread_mutex_unlock (&c->mu);
  for (grpc_call *call = destroy, *next; call; call = next)
    {
      next = call->dirty_next;
      call_destroy (call);
    }
}

/* One read or write on the connection's byte stream: the socket, or its
   transport, which says what the socket must be polled for before the
   next try (TLS may have to write to read, or read to write). */
static ssize_t
conn_read (grpc_conn *c, void *buf, size_t len)
{
  c->read_wait = POLLIN;
  if (c->transport)
    return c->transport->read (c->transport->ud, buf, len, &c->read_wait);
  return read (c->fd, buf, len);
}

static ssize_t
conn_write (grpc_conn *c, const void *buf, size_t len)
{
  c->write_wait = POLLOUT;
  if (c->transport)
    return c->transport->write (c->transport->ud, buf, len, &c->write_wait);
  ssize_t w = send (c->fd, buf, len, MSG_NOSIGNAL);
  if (w < 0 && errno == ENOTSOCK)
    w = write (c->fd, buf, len);
  return w;
}

/* Write what we can of wbuf.  0 ok (maybe partially), -1 with *reason;
   -2 with *reason when the peer has closed the connection.  A transport
   retried after EAGAIN gets the same bytes again, possibly more after
   them: wbuf only grows until all of it is written. */
static int
flush_out (grpc_conn *c, char **reason)
{
  while (c->wbuf_off < c->wbuf.len)
    {
      ssize_t w = conn_write (c, c->wbuf.data + c->wbuf_off, c->wbuf.len - c->wbuf_off);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
          if (errno == EPIPE || errno == ECONNRESET)
            {
              *reason = xstrdup ("connection closed by the client");
              return -2;
            }
          else
            *reason = xasprintf ("write to the client failed: %s", strerror (errno));
          return -1;
        }
      c->wbuf_off += (size_t) w;
    }
  ps_buf_reset (&c->wbuf);
  c->wbuf_off = 0;
  return 0;
}

static int
feed (grpc_conn *c, const void *data, size_t len, char **reason)
{
  ssize_t rv = nghttp2_session_mem_recv (c->h2, data, len);
  if (rv < 0)
    {
      *reason = xasprintf ("HTTP/2 protocol error: %s%s%s", nghttp2_strerror ((int) rv), c->h2_error ? ": " : "",
                           c->h2_error ? c->h2_error : "");
      return -1;
    }
  return 0;
}

static char *
closed_by_daemon (grpc_conn *c)
{
  return c->close_reason ? xasprintf ("closed by the daemon: %s", c->close_reason) : xstrdup ("closed by the daemon");
}

int
grpc_conn_run (grpc_conn *c, ps_error **err)
{
  nghttp2_session_callbacks *cbs;
  nghttp2_session_callbacks_new (&cbs);
  nghttp2_session_callbacks_set_on_header_callback (cbs, on_header);
  nghttp2_session_callbacks_set_on_begin_headers_callback (cbs, on_begin_headers);
  nghttp2_session_callbacks_set_on_frame_recv_callback (cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback (cbs, on_frame_send);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback (cbs, on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback (cbs, on_stream_close);
  nghttp2_session_callbacks_set_error_callback2 (cbs, on_error);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback (cbs, on_invalid_frame_recv);
  nghttp2_option *opt;
  nghttp2_option_new (&opt);
  /* Stream credit is returned only as the user takes messages (recv). */
  nghttp2_option_set_no_auto_window_update (opt, 1);
  /* Until the client's SETTINGS arrive, assume it takes one stream at a
     time (nghttp2 would assume no limit): a client advertising a low
     SETTINGS_MAX_CONCURRENT_STREAMS must never see more, even from calls
     made in the first round trip.  Its SETTINGS follow the preface at once. */
  nghttp2_option_set_peer_max_concurrent_streams (opt, 1);
  int rv = c->server ? nghttp2_session_server_new2 (&c->h2, cbs, c, opt)
                     : nghttp2_session_client_new2 (&c->h2, cbs, c, opt);
  nghttp2_option_del (opt);
  nghttp2_session_callbacks_del (cbs);
  if (rv != 0)
    {
      conn_die (c, "cannot start HTTP/2");
      return ps_error_set (err, 500, "%s %s: nghttp2: %s", c->kind, c->label, nghttp2_strerror (rv));
    }

  nghttp2_settings_entry iv[] = {
    { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
    { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PS_GRPC_STREAM_WINDOW },
  };
  nghttp2_settings_entry server_iv[] = {
    { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, PS_GRPC_SERVER_MAX_STREAMS },
    { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PS_GRPC_SERVER_STREAM_WINDOW },
  };
  /* A server's SETTINGS go out at once, before the client's preface. */
  if (c->server)
    nghttp2_submit_settings (c->h2, NGHTTP2_FLAG_NONE, server_iv, ARRAY_SIZE (server_iv));
  else
    nghttp2_submit_settings (c->h2, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE (iv));
  nghttp2_session_set_local_window_size (c->h2, NGHTTP2_FLAG_NONE, 0, PS_GRPC_CONNECTION_WINDOW);

  cleanup_free char *reason = NULL;
  bool failed = false;
  bool goaway_submitted = false;
  if (c->extra_in.len && feed (c, c->extra_in.data, c->extra_in.len, &reason) < 0)
    failed = true;
  ps_buf_free (&c->extra_in);

  char rbuf[64 * 1024];
  while (!failed)
    {
      process_dirty (c);

      pthread_mutex_lock (&c->mu);
      bool stop = c->shutdown_req;
      pthread_mutex_unlock (&c->mu);
      if (stop && !goaway_submitted)
        {
          nghttp2_session_terminate_session (c->h2, NGHTTP2_NO_ERROR);
          goaway_submitted = true;
        }

      /* Serialise what nghttp2 has to say, up to the high-water mark. */
      while (c->wbuf.len - c->wbuf_off < PS_GRPC_OUTPUT_HIGH_WATER)
        {
          const uint8_t *data;
          ssize_t n = nghttp2_session_mem_send (c->h2, &data);
          if (n < 0)
            {
              reason = xasprintf ("HTTP/2: %s", nghttp2_strerror ((int) n));
              failed = true;
              break;
            }
          if (n == 0)
            break;
          ps_buf_append (&c->wbuf, data, (size_t) n);
        }
      if (failed)
        break;
      int fr = flush_out (c, &reason);
      if (fr < 0)
        {
          /* A server's peer may hang up whenever it likes (a probe that
             connects and closes); a client's session must not. */
          failed = !(c->server && fr == -2);
          break;
        }
      bool pending = c->wbuf_off < c->wbuf.len;
      bool want_read = nghttp2_session_want_read (c->h2);
      bool want_write = nghttp2_session_want_write (c->h2);
      if (!want_read && !want_write && !pending)
        {
          if (goaway_submitted)
            reason = closed_by_daemon (c);
          else if (c->goaway_text)
            {
              reason = xstrdup (c->goaway_text);
              failed = c->goaway_error;
            }
          else
            {
              reason = xstrdup ("HTTP/2 session ended");
              failed = true;
            }
          break;
        }
      if (goaway_submitted && !pending && !want_write)
        {
          reason = closed_by_daemon (c);
          break;
        }

      struct pollfd p[2] = {
        { .fd = c->fd,
          .events = (short) ((want_read ? c->read_wait : 0) | (pending || want_write ? c->write_wait : 0)) },
        { .fd = c->efd, .events = POLLIN },
      };
      int timeout = idle_poll_timeout (c);
      if (timeout == 0)
        continue; /* the idle policy asked to close: GOAWAY first */
      /* Bytes the transport has already taken off the socket (a TLS
         record read whole, handed out in parts) never make it readable. */
      bool buffered = want_read && c->transport && c->transport->pending (c->transport->ud);
      if (buffered)
        timeout = 0;
      if (poll (p, 2, timeout) < 0)
        {
          if (errno == EINTR)
            continue;
          reason = xasprintf ("poll: %s", strerror (errno));
          failed = true;
          break;
        }
      if (p[1].revents & POLLIN)
        {
          uint64_t v;
          ssize_t r = read (c->efd, &v, sizeof v);
          (void) r;
        }
      if (buffered || (p[0].revents & (c->read_wait | POLLHUP | POLLERR)))
        {
          ssize_t r = conn_read (c, rbuf, sizeof rbuf);
          if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
          if (r < 0 && errno == ECONNRESET)
            {
              reason = xstrdup ("connection closed by the client");
              break;
            }
          if (r < 0)
            {
              reason = xasprintf ("read from the client failed: %s", strerror (errno));
              failed = true;
              break;
            }
          if (r == 0)
            {
              reason = xstrdup ("connection closed by the client");
              break;
            }
          if (feed (c, rbuf, (size_t) r, &reason) < 0)
            {
              failed = true;
              break;
            }
        }
    }

  if (reason == NULL)
    reason = xstrdup ("connection ended");
  ps_debug ("%s %s: HTTP/2 connection over: %s", c->kind, c->label, reason);
  conn_die (c, reason);
  /* Streams still known to nghttp2 reference calls that conn_die already
     released; deleting the session must not call back into them. */
  nghttp2_session_del (c->h2);
  c->h2 = NULL;
  if (failed)
    return ps_error_set (err, 502, "%s %s: %s", c->kind, c->label, reason);
  return 0;
}

/* ---- calls: the user side ------------------------------------------------------ */

static bool
valid_md_key (const char *k)
{
  if (k == NULL || *k == '\0' || k[0] == ':')
    return false;
  for (const char *p = k; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
      return false;
  return true;
}

static bool
valid_md_value (const char *v)
{
  for (const unsigned char *p = (const unsigned char *) v; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return false;
  return true;
}

grpc_call *
grpc_call_start (grpc_conn *c, const char *path, const struct grpc_metadata *md, size_t n_md, ps_error **err)
{
  char lb[128];
  const char *label = grpc_method_label (path, lb, sizeof lb);
  if (path[0] != '/' || strchr (path + 1, '/') == NULL)
    return ps_error_set (err, 500, "%s: invalid gRPC method path", path), NULL;
  for (size_t i = 0; i < n_md; i++)
    {
      if (!valid_md_key (md[i].key))
        return ps_error_set (err, 500, "%s: invalid metadata key \"%s\"", label, md[i].key ? md[i].key : ""),
               NULL;
      if (md[i].value == NULL || !valid_md_value (md[i].value))
        return ps_error_set (err, 400, "%s: metadata %s has a value with control characters", label, md[i].key),
               NULL;
    }

  grpc_call *call = call_new (c);
  call->path = xstrdup (path);
  snprintf (call->label, sizeof call->label, "%s", label);
  call->md = xcalloc (n_md ? n_md : 1, sizeof *call->md);
  for (size_t i = 0; i < n_md; i++)
    {
      call->md[i].key = xstrdup (md[i].key);
      call->md[i].value = xstrdup (md[i].value);
    }
  call->n_md = n_md;

  pthread_mutex_lock (&c->mu);
  if (c->dead || c->shutdown_req || c->goaway_recv)
    {
      cleanup_free char *why = xstrdup (c->dead ? c->dead_reason
                                        : c->goaway_recv ? (c->goaway_text ? c->goaway_text : "the client sent GOAWAY")
                                                         : "closed by the daemon");
      pthread_mutex_unlock (&c->mu);
      ps_error_set (err, 502, "%s: session %s is gone: %s", call->label, c->label, why);
      call_destroy (call);
      return NULL;
    }
  mark_dirty_locked (call);
  pthread_mutex_unlock (&c->mu);
  return call;
}

static int
call_failed_error (grpc_call *call, ps_error **err)
{
  /* conn->mu held; call->status > 0 or the call cannot continue. */
  return ps_error_set (err, grpc_status_http (call->status), "%s: %s", call->label,
                       call->errmsg ? call->errmsg : "call ended");
}

int
grpc_call_send (grpc_call *call, const void *msg, size_t len, ps_error **err)
{
  grpc_conn *c = call->conn;
  if (len > call->max_send)
    return ps_error_set (err, 413, "%s: message of %zu bytes is over the %zu-byte gRPC limit", call->label, len,
                         call->max_send);
  struct timespec deadline;
  bool have_deadline = false;
  pthread_mutex_lock (&c->mu);
  for (;;)
    {
      if (call->status > 0 || call->cancel_req)
        {
          int r = call->status > 0 ? call_failed_error (call, err)
                                   : ps_error_set (err, 500, "%s: call was cancelled", call->label);
          pthread_mutex_unlock (&c->mu);
          return r;
        }
      if (call->status == 0 || call->send_closed)
        {
          pthread_mutex_unlock (&c->mu);
          return ps_error_set (err, 500, "%s: send after the call ended or was half-closed", call->label);
        }
      if (call->out.len - call->out_off < PS_GRPC_SEND_BUFFER)
        break;
      /* The peer reads nothing: give up rather than block a build forever. */
      if (!have_deadline)
        {
          deadline = ps_deadline_after_ms (CLOCK_MONOTONIC, PS_GRPC_SEND_STALL_MS);
          have_deadline = true;
        }
      if (pthread_cond_timedwait (&call->cond, &c->mu, &deadline) == ETIMEDOUT
          && call->out.len - call->out_off >= PS_GRPC_SEND_BUFFER)
        {
          pthread_mutex_unlock (&c->mu);
          return ps_error_set (err, 504, "%s: the client has read nothing for %d s", call->label,
                               PS_GRPC_SEND_STALL_MS / 1000);
        }
    }
  unsigned char prefix[GRPC_PREFIX] = { 0, (unsigned char) (len >> 24), (unsigned char) (len >> 16),
                                        (unsigned char) (len >> 8), (unsigned char) len };
  ps_buf_append (&call->out, prefix, sizeof prefix);
  ps_buf_append (&call->out, msg, len);
  if (call->deferred || !call->submitted || (call->server && !call->resp_started))
    mark_dirty_locked (call);
  pthread_mutex_unlock (&c->mu);
  return 0;
}

int
grpc_call_close_send (grpc_call *call, ps_error **err)
{
  grpc_conn *c = call->conn;
  pthread_mutex_lock (&c->mu);
  if (!call->send_closed)
    {
      call->send_closed = true;
      if (call->deferred)
        mark_dirty_locked (call);
    }
  pthread_mutex_unlock (&c->mu);
  return 0;
}

int
grpc_call_recv (grpc_call *call, void **msg, size_t *len, int timeout_ms, ps_error **err)
{
  grpc_conn *c = call->conn;
  struct timespec deadline;
  if (timeout_ms >= 0)
    deadline = ps_deadline_after_ms (CLOCK_MONOTONIC, timeout_ms);
  pthread_mutex_lock (&c->mu);
  for (;;)
    {
      /* A cancelled server call stops at once, whatever was queued. */
      if (call->server && call->cancelled && call->status > 0)
        {
          int r = call_failed_error (call, err);
          pthread_mutex_unlock (&c->mu);
          return r;
        }
      if (call->head)
        {
          struct grpc_msg *m = call->head;
          call->head = m->next;
          if (call->head == NULL)
            call->tail = NULL;
          if (call->status < 0 && !c->dead)
            {
              call->unacked += m->wire;
              mark_dirty_locked (call);
            }
          pthread_mutex_unlock (&c->mu);
          *len = m->len;
          /* Hand the payload over without a copy: move it to the front. */
          memmove (m, m->data, m->len + 1);
          *msg = m;
          return 1;
        }
      if (call->status > 0)
        {
          int r = call_failed_error (call, err);
          pthread_mutex_unlock (&c->mu);
          return r;
        }
      if (call->status == 0 || (call->server && call->recv_eof))
        {
          pthread_mutex_unlock (&c->mu);
          return 0;
        }
      if (call->cancel_req)
        {
          pthread_mutex_unlock (&c->mu);
          return ps_error_set (err, 500, "%s: call was cancelled", call->label);
        }
      if (timeout_ms < 0)
        pthread_cond_wait (&call->cond, &c->mu);
      else if (pthread_cond_timedwait (&call->cond, &c->mu, &deadline) == ETIMEDOUT && call->head == NULL
               && call->status < 0)
        {
          pthread_mutex_unlock (&c->mu);
          return ps_error_set (err, 504, "%s: no answer from the client within %d ms", call->label, timeout_ms);
        }
    }
}

bool
grpc_call_flush (grpc_call *call, int timeout_ms)
{
  grpc_conn *c = call->conn;
  struct timespec deadline = ps_deadline_after_ms (CLOCK_MONOTONIC, timeout_ms);
  pthread_mutex_lock (&c->mu);
  bool flushed;
  for (;;)
    {
      flushed = call->out.len == call->out_off && (!call->send_closed || call->eof_sent);
      if (flushed || call->status >= 0 || c->dead)
        break;
      if (pthread_cond_timedwait (&call->cond, &c->mu, &deadline) == ETIMEDOUT)
        break;
    }
  pthread_mutex_unlock (&c->mu);
  return flushed;
}

int
grpc_call_status (grpc_call *call)
{
  grpc_conn *c = call->conn;
  pthread_mutex_lock (&c->mu);
  int s = call->status;
  pthread_mutex_unlock (&c->mu);
  return s;
}

void
grpc_call_cancel (grpc_call *call)
{
  grpc_conn *c = call->conn;
  pthread_mutex_lock (&c->mu);
  if (call->status < 0 && !call->cancel_req)
    {
      call->cancel_req = true;
      mark_dirty_locked (call);
      pthread_cond_broadcast (&call->cond);
    }
  pthread_mutex_unlock (&c->mu);
}

void
grpc_call_free (grpc_call *call)
{
  if (call == NULL)
    return;
  grpc_call_cancel (call);
  grpc_conn *c = call->conn;
  pthread_mutex_lock (&c->mu);
  grpc_call *dead = call_unref_locked (call);
  pthread_mutex_unlock (&c->mu);
  if (dead)
    call_destroy (dead);
}

int
grpc_unary (grpc_conn *c, const char *path, const struct grpc_metadata *md, size_t n_md, const void *req,
            size_t req_len, void **resp, size_t *resp_len, int timeout_ms, int *status_out, ps_error **err)
{
  if (status_out)
    *status_out = -1;
  grpc_call *call = grpc_call_start (c, path, md, n_md, err);
  if (call == NULL)
    return -1;
  void *msg = NULL;
  size_t len = 0;
  int ret = -1;
  cleanup_error ps_error *serr = NULL;
  if (grpc_call_send (call, req, req_len, &serr) < 0 || grpc_call_close_send (call, &serr) < 0)
    {
      /* A server may answer before reading the request (grpc-go's SendMsg
         then returns EOF): the outcome is in what it sent. */
      if (grpc_call_status (call) < 0)
        {
          *err = steal_pointer (&serr);
          goto out;
        }
    }
  int r = grpc_call_recv (call, &msg, &len, timeout_ms, err);
  if (r < 0)
    goto out;
  if (r == 0)
    {
      ps_error_set (err, 502, "%s: the client ended the call without a response", call->label);
      goto out;
    }
  /* A unary call has exactly one response; wait for the status. */
  void *extra = NULL;
  size_t extra_len = 0;
  r = grpc_call_recv (call, &extra, &extra_len, timeout_ms, err);
  if (r < 0)
    goto out;
  if (r == 1)
    {
      free (extra);
      ps_error_set (err, 502, "%s: the client sent more than one response to a unary call", call->label);
      goto out;
    }
  *resp = steal_pointer (&msg);
  *resp_len = len;
  ret = 0;
out:
  if (status_out)
    *status_out = grpc_call_status (call);
  free (msg);
  grpc_call_free (call);
  return ret;
}

/* ---- server calls: the handler side -------------------------------------------- */

/* The server connections running, for grpc_serve_shutdown. */
static pthread_mutex_t servers_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t servers_cond = PTHREAD_COND_INITIALIZER;
static grpc_conn *servers;
static bool servers_stopping;

static int
serve (int fd, const struct grpc_transport *transport, const void *extra_in, size_t extra_len, const char *label,
       const struct grpc_service_table *services, const char *tag, ps_error **err)
{
  grpc_conn *c = grpc_conn_new (fd, extra_in, extra_len, label, err);
  if (c == NULL)
    return -1;
  c->tag = tag ? xstrdup (tag) : NULL;
  c->transport = transport;
  c->server = true;
  c->kind = "grpc";
  c->services = services;
  pthread_mutex_lock (&servers_mu);
  bool stopping = servers_stopping;
  if (!stopping)
    {
      c->srv_next = servers;
      if (servers)
        servers->srv_prev = c;
      servers = c;
    }
  pthread_mutex_unlock (&servers_mu);
  int r = 0;
  if (!stopping)
    {
      r = grpc_conn_run (c, err);
      pthread_mutex_lock (&servers_mu);
      if (c->srv_prev)
        c->srv_prev->srv_next = c->srv_next;
      else
        servers = c->srv_next;
      if (c->srv_next)
        c->srv_next->srv_prev = c->srv_prev;
      pthread_cond_broadcast (&servers_cond);
      pthread_mutex_unlock (&servers_mu);
    }
  grpc_conn_free (c);
  return r;
}

int
grpc_serve (int fd, const void *extra_in, size_t extra_len, const char *label,
            const struct grpc_service_table *services, ps_error **err)
{
  return serve (fd, NULL, extra_in, extra_len, label, services, NULL, err);
}

int
grpc_serve_transport (int fd, const struct grpc_transport *transport, const char *label,
                      const struct grpc_service_table *services, ps_error **err)
{
  return serve (fd, transport, NULL, 0, label, services, NULL, err);
}

int
grpc_serve_tagged (int fd, const char *label, const struct grpc_service_table *services, const char *tag,
                   ps_error **err)
{
  return serve (fd, NULL, NULL, 0, label, services, tag, err);
}

const char *
grpc_call_tag (grpc_call *call)
{
  return call->conn->tag;
}

void
grpc_serve_shutdown (int grace_ms)
{
  struct timespec deadline = ps_deadline_after_ms (CLOCK_REALTIME, grace_ms);
  pthread_mutex_lock (&servers_mu);
  servers_stopping = true;
  for (grpc_conn *c = servers; c; c = c->srv_next)
    grpc_conn_shutdown (c);
  while (servers && pthread_cond_timedwait (&servers_cond, &servers_mu, &deadline) != ETIMEDOUT)
    ;
  pthread_mutex_unlock (&servers_mu);
}

const char *
grpc_call_path (grpc_call *call)
{
  return call->path;
}

/* Request metadata is written by the I/O thread before the handler starts
   and never after: no lock needed. */
const char *
grpc_call_metadata (grpc_call *call, const char *key)
{
  for (size_t i = 0; i < call->n_md; i++)
    if (strcmp (call->md[i].key, key) == 0)
      return call->md[i].value;
  return NULL;
}

size_t
grpc_call_metadata_all (grpc_call *call, const char *key, const char ***values)
{
  free (call->md_values);
  call->md_values = xcalloc (call->n_md + 1, sizeof *call->md_values);
  size_t n = 0;
  for (size_t i = 0; i < call->n_md; i++)
    if (strcmp (call->md[i].key, key) == 0)
      call->md_values[n++] = call->md[i].value;
  *values = call->md_values;
  return n;
}

void
grpc_call_finish (grpc_call *call, int status, const char *fmt, ...)
{
  cleanup_free char *msg = NULL;
  if (fmt && status != GRPC_STATUS_OK)
    {
      va_list ap;
      va_start (ap, fmt);
      if (vasprintf (&msg, fmt, ap) < 0)
        abort ();
      va_end (ap);
    }
  grpc_conn *c = call->conn;
  pthread_mutex_lock (&c->mu);
  server_end_locked (call, status, 0, msg);
  pthread_mutex_unlock (&c->mu);
}

void
grpc_call_finish_error (grpc_call *call, const ps_error *err)
{
  int code;
  switch (err ? err->status : 500)
    {
    case 400:
      code = GRPC_STATUS_INVALID_ARGUMENT;
      break;
    case 404:
      code = GRPC_STATUS_NOT_FOUND;
      break;
    case 409:
      code = err->msg && strstr (err->msg, "exist") ? GRPC_STATUS_ALREADY_EXISTS : GRPC_STATUS_FAILED_PRECONDITION;
      break;
    case 413:
      code = GRPC_STATUS_RESOURCE_EXHAUSTED;
      break;
    case 499:
      code = GRPC_STATUS_CANCELLED;
      break;
    case 501:
      code = GRPC_STATUS_UNIMPLEMENTED;
      break;
    case 503:
      code = GRPC_STATUS_UNAVAILABLE;
      break;
    default:
      code = GRPC_STATUS_INTERNAL;
      break;
    }
  grpc_call_finish (call, code, "%s", err && err->msg ? err->msg : "internal error");
}

bool
grpc_call_cancelled (grpc_call *call)
{
  grpc_conn *c = call->conn;
  pthread_mutex_lock (&c->mu);
  bool r = call->cancelled || call->cancel_req || c->dead;
  pthread_mutex_unlock (&c->mu);
  return r;
}

int
grpc_call_recv_one (grpc_call *call, void **msg, size_t *len, ps_error **err)
{
  int r = grpc_call_recv (call, msg, len, -1, err);
  if (r < 0)
    return -1;
  if (r == 0)
    return ps_error_set (err, 400, "%s: no request message", call->label);
  void *extra = NULL;
  size_t extra_len = 0;
  r = grpc_call_recv (call, &extra, &extra_len, -1, err);
  if (r == 0)
    return 0;
  free (*msg);
  *msg = NULL;
  if (r < 0)
    return -1;
  free (extra);
  return ps_error_set (err, 400, "%s: more than one request message to a unary method", call->label);
}

int
grpc_call_recv_request (grpc_call *call, void **msg, size_t *len)
{
  ps_error *err = NULL;
  if (grpc_call_recv_one (call, msg, len, &err) == 0)
    return 0;
  grpc_call_finish_error (call, err);
  ps_error_free (err);
  return -1;
}
