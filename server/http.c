/* http.c — libmicrohttpd glue: request lifecycle, API headers, responses,
 * streaming, access log. */
#define _GNU_SOURCE
#include "server/http.h"

#include <errno.h>
#include <limits.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/limits.h"
#include "common/log.h"
#include "schema/apierror.h"
#include "server/config.h"
#include "solver/job.h"

/* What the glue keeps per request beyond struct ps_request: MHD's uri-log
   callback creates it (so the request-target is seen before MHD decodes
   it), completed_handler frees it.  `req` comes first: a struct ps_request
   pointer is a struct http_request pointer. */
struct http_request
{
  struct ps_request req;
  char *target;       /* request-target as received: raw path + query */
  bool begun;         /* access_handler has seen the request */
  int64_t bytes_out;  /* body bytes of a buffered local answer; -1 unknown */
  http_upgraded_fn upgraded_fn; /* http_respond_upgrade's callback */
  void *upgraded_ud;
};

_Static_assert (HTTP_STREAM_END == MHD_CONTENT_READER_END_OF_STREAM, "HTTP_STREAM_END is MHD's");
_Static_assert (HTTP_STREAM_ERROR == MHD_CONTENT_READER_END_WITH_ERROR, "HTTP_STREAM_ERROR is MHD's");

static struct http_request *
http_request_of (struct ps_request *req)
{
  return (struct http_request *) req;
}

const char *
http_request_header (struct ps_request *req, const char *name)
{
  return MHD_lookup_connection_value (req->conn, MHD_HEADER_KIND, name);
}

struct header_visit
{
  void (*fn) (void *ud, const char *name, const char *value);
  void *ud;
};

static enum MHD_Result
visit_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct header_visit *v = cls;
  if (key != NULL)
    v->fn (v->ud, key, value);
  return MHD_YES;
}

void
http_request_foreach_header (struct ps_request *req, void (*fn) (void *ud, const char *name, const char *value),
                             void *ud)
{
  struct header_visit v = { .fn = fn, .ud = ud };
  MHD_get_connection_values (req->conn, MHD_HEADER_KIND, visit_header, &v);
}

bool
http_header_has_token (const char *value, const char *token)
{
  size_t tlen = strlen (token);
  for (const char *p = value; p && *p;)
    {
      p += strspn (p, " \t,");
      size_t len = strcspn (p, ",");
      size_t trimmed = len;
      while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
        trimmed--;
      if (trimmed == tlen && strncasecmp (p, token, tlen) == 0)
        return true;
      p += len;
    }
  return false;
}

const char *
http_request_query (struct ps_request *req, const char *name)
{
  return MHD_lookup_connection_value (req->conn, MHD_GET_ARGUMENT_KIND, name);
}

static enum MHD_Result
collect_kv (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct ps_kv_list *l = cls;
  l->items = xrealloc (l->items, (l->n + 1) * sizeof *l->items);
  l->items[l->n].key = key;
  l->items[l->n].value = value ? value : "";
  l->n++;
  return MHD_YES;
}

void
http_request_query_all (struct ps_request *req, struct ps_kv_list *out)
{
  out->items = NULL;
  out->n = 0;
  MHD_get_connection_values (req->conn, MHD_GET_ARGUMENT_KIND, collect_kv, out);
}

int
http_request_fd (struct ps_request *req)
{
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info (req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  return ci ? ci->connect_fd : -1;
}

bool
http_request_client_gone (struct ps_request *req)
{
  int fd = http_request_fd (req);
  if (fd < 0)
    return true;
  struct pollfd p = { .fd = fd, .events = POLLRDHUP };
  if (poll (&p, 1, 0) <= 0)
    return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

static void
add_api_headers (struct MHD_Response *r)
{
  MHD_add_response_header (r, "Api-Version", PS_COMPAT_API_VERSION);
  MHD_add_response_header (r, "Libpod-Api-Version", config_libpod_api_version ());
  MHD_add_response_header (r, "Server", "podsolve/" PODSOLVE_VERSION " (linux)");
}

static int
queue (struct ps_request *req, unsigned status, struct MHD_Response *r)
{
  add_api_headers (r);
  enum MHD_Result ret = MHD_queue_response (req->conn, status, r);
  MHD_destroy_response (r);
  req->responded = true;
  req->status = status;
  return ret == MHD_YES ? 0 : -1;
}

int
http_respond (struct ps_request *req, unsigned status, const char *content_type, const char *body, size_t len,
            const char *const *extra)
{
  struct MHD_Response *r = MHD_create_response_from_buffer (len, (void *) body, MHD_RESPMEM_MUST_COPY);
  if (r == NULL)
    return -1;
  http_request_of (req)->bytes_out = (int64_t) len;
  if (content_type)
    MHD_add_response_header (r, "Content-Type", content_type);
  for (const char *const *e = extra; e && e[0]; e += 2)
    MHD_add_response_header (r, e[0], e[1]);
  return queue (req, status, r);
}

int
http_respond_json (struct ps_request *req, unsigned status, const char *json)
{
  return http_respond (req, status, "application/json", json, strlen (json), NULL);
}

int
http_respond_error_with (struct ps_request *req, unsigned status, const char *message, const char *const *extra)
{
  cleanup_free char *body = schema_api_error_json ((int) status, NULL, message);
  ps_info ("Request Failed(%u): %s %s: %s", status, req->method, req->url, message);
  return http_respond (req, status, "application/json", body, strlen (body), extra);
}

int
http_respond_error (struct ps_request *req, unsigned status, const char *message)
{
  return http_respond_error_with (req, status, message, NULL);
}

int
http_respond_stream (struct ps_request *req, unsigned status, const char *content_type, const char *const *extra,
                   http_stream_read_fn read, void *cls, http_stream_done_fn done)
{
  struct MHD_Response *r = MHD_create_response_from_callback (MHD_SIZE_UNKNOWN, 16 * 1024, read, cls, done);
  if (r == NULL)
    {
      done (cls);
      return -1;
    }
  MHD_add_response_header (r, "Content-Type", content_type);
  for (const char *const *e = extra; e && e[0]; e += 2)
    MHD_add_response_header (r, e[0], e[1]);
  return queue (req, status, r);
}

static void slot_mark (struct MHD_Connection *conn, bool busy, bool upgraded);

/* Called on the connection's thread once the 101 is out.  MHD owns `sock`
   (valid until MHD_UPGRADE_ACTION_CLOSE); con_cls is the request. */
static void
upgraded (void *cls, struct MHD_Connection *connection, void *con_cls, const char *extra_in, size_t extra_in_size,
          MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
  struct http_request *h = con_cls;
  slot_mark (connection, true, true); /* in use until its streams end */
  h->upgraded_fn (h->upgraded_ud, sock, extra_in, extra_in_size, (struct http_upgraded *) urh);
}

int
http_respond_upgrade (struct ps_request *req, const char *protocol, const char *const *extra, http_upgraded_fn fn,
                      void *ud, ps_error **err)
{
  /* The 101 goes out through MHD directly: Connection: Upgrade (MHD adds
     it), `extra` and Upgrade: <protocol>; no API headers. */
  struct MHD_Response *r = MHD_create_response_for_upgrade (upgraded, NULL);
  if (r == NULL)
    return ps_error_set (err, 500, "cannot create the upgrade response");
  http_request_of (req)->upgraded_fn = fn;
  http_request_of (req)->upgraded_ud = ud;
  for (const char *const *e = extra; e && e[0]; e += 2)
    MHD_add_response_header (r, e[0], e[1]);
  if (protocol)
    MHD_add_response_header (r, MHD_HTTP_HEADER_UPGRADE, protocol);
  enum MHD_Result q = MHD_queue_response (req->conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
  MHD_destroy_response (r);
  if (q != MHD_YES)
    return ps_error_set (err, 500, "cannot queue the 101 response");
  req->responded = true;
  req->status = MHD_HTTP_SWITCHING_PROTOCOLS;
  return 0;
}

void
http_upgraded_close (struct http_upgraded *u)
{
  MHD_upgrade_action ((struct MHD_UpgradeResponseHandle *) u, MHD_UPGRADE_ACTION_CLOSE);
}

void
http_upgraded_uncork (struct http_upgraded *u)
{
  MHD_upgrade_action ((struct MHD_UpgradeResponseHandle *) u, MHD_UPGRADE_ACTION_CORK_OFF);
}

/* ---- request lifecycle ------------------------------------------------------ */

static void
request_free (struct ps_request *req)
{
  if (req->state_free && req->state)
    req->state_free (req->state);
  for (size_t i = 0; i < ARRAY_SIZE (req->params); i++)
    free ((char *) req->params[i]);
  free ((char *) req->url);
  ps_error_free (req->body_error);
  free (http_request_of (req)->target);
  free (http_request_of (req));
}

/* MHD calls this once per request, with the request-target exactly as the
   client sent it, before it percent-decodes the path and splits the query:
   the pass-through must forward it unchanged. */
static void *
uri_log (void *cls, const char *uri, struct MHD_Connection *conn)
{
  struct http_request *h = xcalloc (1, sizeof *h);
  h->req.conn = conn;
  h->req.started_ns = ps_monotonic_ns ();
  h->target = xstrdup (uri ? uri : "");
  h->bytes_out = -1;
  return h;
}

static void
fail (struct ps_request *req, ps_error *err)
{
  unsigned status = err && err->status >= 400 && err->status < 600 ? (unsigned) err->status : 500;
  http_respond_error (req, status, err ? err->msg : "internal error");
}

/* ---- the connection limit ---------------------------------------------------- */

/* One per listener.  MHD itself accepts PS_CONNECTIONS_OVER_LIMIT_ANSWERED
   more than --max-connections, so that the extra clients get a clear 503
   instead of a connection closed without a word; past that MHD closes
   them (it must stop accepting somewhere). */
static struct http_dispatch dispatch;

void
http_set_dispatch (const struct http_dispatch *d)
{
  dispatch = *d;
}

/* Slots.  Every connection is one, from accept to close; it is *idle*
   while it has no request in progress: before its first request head is
   complete, and between requests (keep-alive).  An upgraded connection
   (/session, /grpc) is never idle.  Three rules keep slow or idle clients
   from locking others out (RELIABILITY.md, "Slow clients"):
   - an idle connection is closed after --header-timeout (as nginx's
     client_header_timeout): a head sent a byte at a time does not hold a
     slot for ever;
   - a connection that arrives while the listener is full takes the slot
     of a connection idle the longest, which is closed at once: one of the
     peer holding the most past its share when there is one (a TCP
     address, or a unix socket's peer uid; --max-connections-per-peer),
     else anyone's; only when none is idle is it told 503.  A share only
     counts when connections compete: a lone client may use them all.
   Closing is a shutdown(2) of the socket from outside the connection's
   thread, under slots_mu, which the slot leaves before MHD closes the fd. */
struct slot
{
  struct listener_limit *l;
  int fd;
  char peer[64];         /* "uid:N" or "ip:ADDR" */
  int64_t idle_since_ns; /* 0: a request in progress (or upgraded) */
  bool upgraded;
  bool over;             /* no room when it came: it gets the 503 */
  bool evicted;          /* shut down by a rule above */
  struct slot *prev, *next;
};

struct listener_limit
{
  struct MHD_Daemon *daemon;
  unsigned max;
  unsigned max_per_peer;
  int64_t header_timeout_ns; /* 0: never */
  unsigned active;           /* under slots_mu: connections open now */
  struct slot *slots;        /* every open connection, newest first */
  struct listener_limit *next;
};

static pthread_mutex_t limits_mu = PTHREAD_MUTEX_INITIALIZER;
static struct listener_limit *limits;
static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;

static void
slot_peer (struct slot *s, int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername (fd, (struct sockaddr *) &ss, &len) == 0 && ss.ss_family == AF_UNIX)
    {
      struct ucred cred;
      socklen_t clen = sizeof cred;
      if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0)
        snprintf (s->peer, sizeof s->peer, "uid:%u", (unsigned) cred.uid);
    }
  else if (len > 0 && (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
    {
      char host[INET6_ADDRSTRLEN] = "";
      const void *a = ss.ss_family == AF_INET ? (const void *) &((struct sockaddr_in *) &ss)->sin_addr
                                              : (const void *) &((struct sockaddr_in6 *) &ss)->sin6_addr;
      inet_ntop (ss.ss_family, a, host, sizeof host);
      snprintf (s->peer, sizeof s->peer, "ip:%s", host);
    }
}

/* Close `s` from outside (slots_mu held). */
static void
slot_evict_locked (struct slot *s, const char *why)
{
  s->evicted = true;
  shutdown (s->fd, SHUT_RDWR);
  ps_debug ("http: connection from %s closed: %s", s->peer[0] ? s->peer : "?", why);
}

/* The connection idle the longest among `l`'s (of `peer` only, when not
   NULL), other than `self`; NULL if none is idle. */
static struct slot *
idlest_locked (struct listener_limit *l, const struct slot *self, const char *peer)
{
  struct slot *best = NULL;
  for (struct slot *s = l->slots; s; s = s->next)
    if (s != self && s->idle_since_ns && !s->evicted && !s->upgraded && (peer == NULL || strcmp (s->peer, peer) == 0)
        && (best == NULL || s->idle_since_ns < best->idle_since_ns))
      best = s;
  return best;
}

/* The last connection closed: if no build runs either, give free heap
   memory back to the system (PS_IDLE_TRIM_INTERVAL_MS). */
static void
trim_when_idle (void)
{
  static int64_t last_ns; /* atomic */
  int64_t now = ps_monotonic_ns ();
  int64_t last = __atomic_load_n (&last_ns, __ATOMIC_RELAXED);
  if (now - last < (int64_t) PS_IDLE_TRIM_INTERVAL_MS * 1000000 || solver_jobs_running () > 0
      || !__atomic_compare_exchange_n (&last_ns, &last, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    return;
  malloc_trim (0);
}

static void
notify_connection (void *cls, struct MHD_Connection *conn, void **socket_context,
                   enum MHD_ConnectionNotificationCode toe)
{
  struct listener_limit *l = cls;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED)
    {
      struct slot *s = xcalloc (1, sizeof *s);
      const union MHD_ConnectionInfo *ci = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CONNECTION_FD);
      s->l = l;
      s->fd = ci ? ci->connect_fd : -1;
      if (s->fd >= 0)
        slot_peer (s, s->fd);
      s->idle_since_ns = ps_monotonic_ns ();
      pthread_mutex_lock (&slots_mu);
      s->next = l->slots;
      if (l->slots)
        l->slots->prev = s;
      l->slots = s;
      l->active++;
      unsigned live = 0;
      for (struct slot *o = l->slots; o; o = o->next)
        live += !o->evicted;
      if (live > l->max)
        {
          /* Full: room from the peer most past its share, else anyone. */
          const char *greedy = NULL;
          unsigned most = 0;
          for (struct slot *o = l->slots; o; o = o->next)
            {
              if (o->evicted)
                continue;
              unsigned n = 0;
              for (struct slot *q = l->slots; q; q = q->next)
                n += !q->evicted && strcmp (q->peer, o->peer) == 0;
              if (n > l->max_per_peer && n > most && idlest_locked (l, s, o->peer))
                {
                  most = n;
                  greedy = o->peer;
                }
            }
          struct slot *v = idlest_locked (l, s, greedy);
          if (v)
            slot_evict_locked (v, greedy ? "the listener was full and its peer over --max-connections-per-peer"
                                         : "the listener was full and it was the idlest");
          else
            s->over = true;
        }
      pthread_mutex_unlock (&slots_mu);
      *socket_context = s;
    }
  else if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
    {
      struct slot *s = *socket_context;
      if (s == NULL)
        return;
      pthread_mutex_lock (&slots_mu);
      if (s->prev)
        s->prev->next = s->next;
      else
        l->slots = s->next;
      if (s->next)
        s->next->prev = s->prev;
      l->active--;
      bool idle = true;
      for (struct listener_limit *o = limits; o && idle; o = o->next)
        idle = o->active == 0;
      pthread_mutex_unlock (&slots_mu);
      free (s);
      *socket_context = NULL;
      if (idle)
        trim_when_idle ();
    }
}

static struct slot *
conn_slot (struct MHD_Connection *conn)
{
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

/* A request head is complete (busy), a request ended (idle again), or the
   connection was upgraded (never idle again). */
static void
slot_mark (struct MHD_Connection *conn, bool busy, bool upgraded)
{
  struct slot *s = conn ? conn_slot (conn) : NULL;
  if (s == NULL)
    return;
  pthread_mutex_lock (&slots_mu);
  s->upgraded |= upgraded;
  s->idle_since_ns = busy || s->upgraded ? 0 : ps_monotonic_ns ();
  pthread_mutex_unlock (&slots_mu);
}

/* Why this connection must be told 503, or NULL: it arrived with no room
   and there is still none (one that only had to wait is served). */
static const char *
over_connection_limit (struct MHD_Connection *conn, unsigned *max)
{
  struct slot *s = conn_slot (conn);
  if (s == NULL || !s->over)
    return NULL;
  pthread_mutex_lock (&slots_mu);
  struct listener_limit *l = s->l;
  unsigned live = 0, mine = 0;
  for (struct slot *o = l->slots; o; o = o->next)
    if (!o->evicted)
      {
        live++;
        mine += strcmp (o->peer, s->peer) == 0;
      }
  const char *why = NULL;
  if (live > l->max && mine > l->max_per_peer && mine < live) /* others want room too */
    {
      why = "--max-connections-per-peer";
      *max = l->max_per_peer;
    }
  else if (live > l->max)
    {
      why = "--max-connections";
      *max = l->max;
    }
  pthread_mutex_unlock (&slots_mu);
  return why;
}

/* The header timeout: once a second, close the connections idle longer. */
static pthread_t reaper;
static bool reaper_started;

static void *
reap_idle (void *arg)
{
  (void) arg;
  for (;;)
    {
      sleep (1);
      int64_t now = ps_monotonic_ns ();
      pthread_mutex_lock (&limits_mu);
      pthread_mutex_lock (&slots_mu);
      for (struct listener_limit *l = limits; l; l = l->next)
        for (struct slot *s = l->slots; s; s = s->next)
          if (l->header_timeout_ns && s->idle_since_ns && !s->upgraded && !s->evicted
              && now - s->idle_since_ns > l->header_timeout_ns)
            slot_evict_locked (s, "no complete request within --header-timeout");
      pthread_mutex_unlock (&slots_mu);
      pthread_mutex_unlock (&limits_mu);
    }
  return NULL;
}

/* Set once at start-up when a TLS listener requires client certificates. */
static bool tls_verify_clients;

/* A TLS connection on a --tls-verify listener must carry a client
   certificate that GnuTLS verified against --tls-ca; plain connections
   (unix sockets, --insecure-tcp) pass. */
static bool
client_certificate_ok (struct MHD_Connection *conn)
{
  if (!tls_verify_clients)
    return true;
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info (conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
  if (ci == NULL || ci->tls_session == NULL)
    return true; /* not a TLS connection */
  gnutls_session_t session = (gnutls_session_t) ci->tls_session;
  unsigned int n = 0;
  if (gnutls_certificate_get_peers (session, &n) == NULL || n == 0)
    return false;
  unsigned int status = 0;
  return gnutls_certificate_verify_peers2 (session, &status) == GNUTLS_E_SUCCESS && status == 0;
}

static enum MHD_Result
access_handler (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
  struct ps_request *req = *con_cls;
  cleanup_error ps_error *err = NULL;

  if (req == NULL)
    {
      req = uri_log (NULL, url, conn);
      *con_cls = req;
    }
  if (!http_request_of (req)->begun)
    {
      http_request_of (req)->begun = true;
      req->conn = conn;
      req->method = method;
      req->url = xstrdup (url);
      if (!client_certificate_ok (conn))
        {
          /* Mutual TLS (--tls-verify): no valid client certificate, no API. */
          http_respond_error (req, 403, "a client certificate signed by the daemon's --tls-ca is required");
          return MHD_YES;
        }
      unsigned max = 0;
      slot_mark (conn, true, false);
      const char *limit = over_connection_limit (conn, &max);
      if (limit)
        {
          /* Answer, then close: the client learns why and when to retry. */
          cleanup_free char *msg = xasprintf ("too many connections: podsolved serves at most %u at once%s "
                                              "(%s); retry when one ends",
                                              max, strcmp (limit, "--max-connections") ? " from one peer" : "",
                                              limit);
          cleanup_free char *body = schema_api_error_json (503, NULL, msg);
          const char *extra[] = { "Connection", "close", "Retry-After", "1", NULL };
          ps_info ("Request Failed(503): %s %s: %s", method, url, msg);
          http_respond (req, 503, "application/json", body, strlen (body), extra);
          return MHD_YES;
        }
      req->handler = dispatch.lookup (req);
      /* Not a route of ours: the Podman API service answers it.  A known
         path with another method stays a local 405, which must say what
         the path allows (RFC 9110 §15.5.6). */
      cleanup_free char *allowed = req->handler ? NULL : dispatch.allowed_methods (req->url);
      if (req->handler == NULL && allowed == NULL)
        req->handler = dispatch.fallback (req, http_request_of (req)->target);
      if (req->handler == NULL)
        {
          cleanup_free char *msg = allowed ? xasprintf ("method %s not allowed for %s", method, url)
                                           : xasprintf ("no such route: %s %s", method, url);
          if (allowed)
            http_respond_error_with (req, 405, msg, (const char *const[]){ "Allow", allowed, NULL });
          else
            http_respond_error (req, 404, msg);
          return MHD_YES;
        }
      if (req->handler->on_begin && req->handler->on_begin (req, &err) < 0 && !req->responded)
        fail (req, err);
      return MHD_YES;
    }

  if (*upload_data_size > 0)
    {
      size_t len = *upload_data_size;
      *upload_data_size = 0;
      req->body_bytes += len;
      if (req->responded || req->body_error)
        return MHD_YES; /* already answered or failed: discard the rest */
      if (req->handler->on_body && req->handler->on_body (req, upload_data, len, &req->body_error) < 0
          && req->body_error == NULL)
        ps_error_set (&req->body_error, 500, "request body handler failed");
      return MHD_YES;
    }

  if (!req->responded && req->body_error)
    fail (req, req->body_error);
  else if (!req->responded)
    {
      if (req->handler->on_complete == NULL || req->handler->on_complete (req, &err) < 0)
        {
          if (!req->responded)
            fail (req, err);
        }
      else if (!req->responded)
        {
          ps_error_set (&err, 500, "handler for %s produced no response", req->url);
          fail (req, err);
        }
    }
  return MHD_YES;
}

static void
completed_handler (void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
  struct ps_request *req = *con_cls;
  if (req == NULL)
    return;
  /* A request MHD refused before our handler saw it (bad header, too
     large) has no method; MHD answered it and there is nothing to log. */
  if (http_request_of (req)->begun)
    {
      int64_t ms = (ps_monotonic_ns () - req->started_ns) / 1000000;
      bool upstream = dispatch.fallback_owns (req);
      uint64_t in = req->body_bytes, relay_in = 0, proxied_out = 0;
      int64_t out = http_request_of (req)->bytes_out;
      if (upstream)
        {
          dispatch.fallback_bytes (req, &relay_in, &proxied_out);
          in += relay_in;
          if (out < 0) /* else podsolved answered for it (an error) */
            out = (int64_t) proxied_out;
        }
      char outs[24] = "-";
      if (out >= 0)
        snprintf (outs, sizeof outs, "%lld", (long long) out);
      /* Health probes (every client pings before each command, monitors
         every few seconds) would drown the builds: debug, when they
         succeed. */
      const char *slash = strrchr (req->url, '/');
      bool probe = slash && strcmp (slash, "/_ping") == 0 && req->status < 400;
      ps_log (probe ? PS_LOG_DEBUG : PS_LOG_INFO, "%s %s %u %llu bytes in, %s bytes out, %lld ms, %s%s", req->method,
              req->url, req->status,
               (unsigned long long) in, outs, (long long) ms, upstream ? "upstream" : "local",
               toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
    }
  request_free (req);
  *con_cls = NULL;
  slot_mark (conn, false, false);
}

static void
mhd_log (void *cls, const char *fmt, va_list ap)
{
  char *msg = NULL;
  if (vasprintf (&msg, fmt, ap) < 0)
    return;
  size_t n = strlen (msg);
  while (n > 0 && msg[n - 1] == '\n')
    msg[--n] = '\0';
  ps_debug ("http: %s", msg);
  free (msg);
}

struct MHD_Daemon *
http_start (int listen_fd, const struct http_limits *lim, const struct ps_tls *tls, ps_error **err)
{
  unsigned max_connections = lim->max_connections;
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL
                   | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG | MHD_USE_ITC;
  struct MHD_OptionItem tls_opts[4] = { { MHD_OPTION_END, 0, NULL } };
  size_t n = 0;
  if (tls)
    {
      flags |= MHD_USE_TLS;
      tls_opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, tls->key };
      tls_opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, tls->cert };
      /* With a trust list GnuTLS asks the client for its certificate;
         whether one is required is checked per connection below. */
      if (tls->ca)
        tls_opts[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0, tls->ca };
      tls_opts[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
      tls_verify_clients = tls->verify;
    }
  struct listener_limit *l = xcalloc (1, sizeof *l);
  l->max = max_connections;
  l->max_per_peer = lim->max_per_peer;
  l->header_timeout_ns = (int64_t) lim->header_timeout_s * 1000000000;
  struct MHD_Daemon *d = MHD_start_daemon (
      flags, 0, NULL, NULL, access_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      MHD_OPTION_URI_LOG_CALLBACK, uri_log, NULL, MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_NOTIFY_COMPLETED,
      completed_handler, NULL, MHD_OPTION_NOTIFY_CONNECTION, notify_connection, l, MHD_OPTION_CONNECTION_LIMIT,
      max_connections > UINT_MAX - PS_CONNECTIONS_OVER_LIMIT_ANSWERED
          ? UINT_MAX
          : max_connections + PS_CONNECTIONS_OVER_LIMIT_ANSWERED,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 0,
      MHD_OPTION_THREAD_STACK_SIZE, (size_t) PS_HTTP_THREAD_STACK_BYTES, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
  if (d == NULL)
    {
      free (l);
      return ps_error_set (err, 500, "cannot start the HTTP server"), NULL;
    }
  pthread_mutex_lock (&limits_mu);
  l->daemon = d;
  l->next = limits;
  limits = l;
  if (!reaper_started && pthread_create (&reaper, NULL, reap_idle, NULL) == 0)
    {
      pthread_detach (reaper);
      reaper_started = true;
    }
  pthread_mutex_unlock (&limits_mu);
  return d;
}

void
http_stop (struct MHD_Daemon *d)
{
  MHD_stop_daemon (d);
  pthread_mutex_lock (&limits_mu);
  for (struct listener_limit **pp = &limits; *pp; pp = &(*pp)->next)
    if ((*pp)->daemon == d)
      {
        struct listener_limit *l = *pp;
        *pp = l->next;
        free (l);
        break;
      }
  pthread_mutex_unlock (&limits_mu);
}
