/* proxy.c — pass every request podsolved does not answer itself to the
 * Podman API service, unchanged (see proxy.h).
 *
 * Two paths, both on the client connection's own MHD thread (MHD runs a
 * thread per connection, so blocking here stalls nobody else):
 *
 *  - ordinary requests: one libcurl easy handle in a private multi handle,
 *    driven from the MHD callbacks.  on_body feeds each upload chunk to
 *    curl's read callback and runs the transfer until curl has taken it;
 *    on_complete runs it until the upstream's response head is in; MHD's
 *    content reader runs it until response bytes arrive.  Each side pauses
 *    the other (CURLPAUSE) rather than buffer: at most PS_PROXY_BUFFER of
 *    response is held, and an upload advances only as fast as the upstream
 *    reads it.
 *
 *  - upgrade requests (attach, exec start: "Connection: Upgrade",
 *    "Upgrade: tcp"): curl only connects (CURLOPT_CONNECT_ONLY); we write
 *    the request head and body ourselves, read the upstream's response head
 *    (bounded), and on 101 take the client socket from MHD and copy bytes
 *    both ways until the upstream ends the session.  A client half-close
 *    (stdin EOF) becomes shutdown(SHUT_WR) toward the upstream, so the
 *    container sees EOF on stdin and its output still flows back.
 *
 *  A hijack without "Upgrade" (Podman then answers "200 OK" and takes the
 *  raw connection) goes the ordinary way: the upstream's output reaches the
 *  client byte for byte (not re-framed) until the upstream closes, but
 *  bytes the client sends after its request are not forwarded, because MHD
 *  hands over a connection only with a 101.  The docker CLI, docker-py and
 *  podman-remote all send "Upgrade: tcp".
 */
#define _GNU_SOURCE
#include "server/proxy.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/process.h"
#include "server/config.h"

static atomic_bool stopping;

void
proxy_global_init (void)
{
  curl_global_init (CURL_GLOBAL_DEFAULT);
}

bool
proxy_enabled (void)
{
  return ps_cfg.upstream != NULL;
}

void
proxy_shutdown (void)
{
  atomic_store (&stopping, true);
}

/* ---- headers ---------------------------------------------------------------- */

/* True when the comma-separated header value lists `token` (any case). */
static bool
has_token (const char *value, const char *token)
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

/* Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the
   message: never forwarded, in either direction.  `connection` is the
   Connection header of the same message, whose tokens name more of them. */
static bool
is_hop_by_hop (const char *name, const char *connection)
{
  static const char *const fixed[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
    "TE",         "Trailer",    "Transfer-Encoding", "Upgrade",
  };
  for (size_t i = 0; i < ARRAY_SIZE (fixed); i++)
    if (strcasecmp (name, fixed[i]) == 0)
      return true;
  return connection != NULL && has_token (connection, name);
}

static const char *
strv_pair_get (const ps_strv *pairs, const char *name)
{
  for (size_t i = 0; i + 1 < pairs->n; i += 2)
    if (strcasecmp (pairs->v[i], name) == 0)
      return pairs->v[i + 1];
  return NULL;
}

/* A response head being collected, one line at a time: curl hands us
   lines; for hijacked requests we split the head ourselves. */
struct response_head
{
  long status;
  ps_strv headers; /* name, value pairs */
  bool complete;   /* the blank line after a final (non-1xx) status */
};

/* Feed one line, CRLF already removed.  Returns -1 on a malformed line. */
static int
head_line (struct response_head *h, const char *line, size_t len)
{
  if (h->complete)
    return 0; /* trailers after a chunked body: not forwarded */
  if (len >= 5 && strncmp (line, "HTTP/", 5) == 0)
    {
      const char *sp = memchr (line, ' ', len);
      if (sp == NULL || line + len - sp < 4)
        return -1;
      long code = 0;
      for (int i = 1; i <= 3; i++)
        {
          if (sp[i] < '0' || sp[i] > '9')
            return -1;
          code = code * 10 + (sp[i] - '0');
        }
      h->status = code;
      ps_strv_free (&h->headers); /* a final status after 1xx starts afresh */
      return 0;
    }
  if (len == 0)
    {
      /* 101 is final for us: it ends the HTTP part of the connection. */
      if (h->status >= 200 || h->status == 101)
        h->complete = true;
      return h->status > 0 ? 0 : -1;
    }
  if (h->status == 0)
    return -1;
  if (line[0] == ' ' || line[0] == '\t')
    return 0; /* obsolete line folding: Podman never sends it */
  const char *colon = memchr (line, ':', len);
  if (colon == NULL || colon == line)
    return -1;
  const char *v = colon + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  cleanup_free char *name = xstrndup (line, (size_t) (colon - line));
  cleanup_free char *value = xstrndup (v, (size_t) (end - v));
  ps_strv_push (&h->headers, name);
  ps_strv_push (&h->headers, value);
  return 0;
}

static size_t
curl_head_cb (char *buf, size_t size, size_t n, void *userp)
{
  struct response_head *h = userp;
  size_t len = size * n;
  size_t l = len;
  while (l > 0 && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
    l--;
  if (head_line (h, buf, l) < 0)
    return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
  return len;
}

/* ---- the per-request state -------------------------------------------------- */

enum proxy_mode
{
  MODE_TRANSFER, /* through curl */
  MODE_HIJACK,   /* upgrade: raw socket after the head */
};

/* How a hijacked request's non-101 answer delimits its body. */
enum body_framing
{
  FRAME_LENGTH,
  FRAME_CHUNKED,
  FRAME_EOF,
};

enum chunk_state
{
  CHUNK_SIZE,
  CHUNK_DATA,
  CHUNK_DATA_END,
  CHUNK_TRAILER,
};

/* Owned by req->state and, while MHD holds a response reading from it, by
   that response too (refs).  All callbacks run on the connection thread. */
struct proxy
{
  atomic_int refs;
  enum proxy_mode mode;
  char *target;
  char *method;
  int client_fd;

  struct response_head head;
  uint64_t bytes_out;   /* to the client */
  uint64_t relay_in;    /* client to upstream after an upgrade */
  char errbuf[CURL_ERROR_SIZE];

  /* MODE_TRANSFER */
  CURL *easy;
  CURLM *multi;
  struct curl_slist *req_headers;
  const char *up_data; /* the current on_body chunk (MHD's, valid during the call) */
  size_t up_len;
  bool up_eof;
  bool send_paused, recv_paused;
  ps_buf spill;        /* response bytes curl gave us before MHD asked */
  size_t spill_off;
  bool done;           /* the transfer ended; result says how */
  CURLcode result;
  int64_t content_length; /* from the upstream's head, -1 when absent */

  /* MODE_HIJACK */
  int up_fd;           /* curl's connected socket (curl closes it) */
  bool chunked_up;     /* the client sent a chunked body: re-chunk it */
  ps_buf raw;          /* upstream bytes after the head, not yet passed on */
  size_t raw_off;
  enum body_framing framing;
  uint64_t body_left;  /* FRAME_LENGTH: bytes to go; FRAME_CHUNKED: of this chunk */
  enum chunk_state chunk;
  bool body_done, body_failed;
};

static void
proxy_unref (void *cls)
{
  struct proxy *p = cls;
  if (p == NULL || atomic_fetch_sub (&p->refs, 1) != 1)
    return;
  if (p->multi && p->easy)
    curl_multi_remove_handle (p->multi, p->easy);
  if (p->easy)
    curl_easy_cleanup (p->easy);
  if (p->multi)
    curl_multi_cleanup (p->multi);
  curl_slist_free_all (p->req_headers);
  ps_strv_free (&p->head.headers);
  ps_buf_free (&p->spill);
  ps_buf_free (&p->raw);
  free (p->target);
  free (p->method);
  free (p);
}

static struct proxy *
proxy_ref (struct proxy *p)
{
  atomic_fetch_add (&p->refs, 1);
  return p;
}

bool
proxy_owns (const struct ps_request *req)
{
  return req->state_free == proxy_unref;
}

void
proxy_bytes (const struct ps_request *req, uint64_t *in, uint64_t *out)
{
  const struct proxy *p = proxy_owns (req) ? req->state : NULL;
  *in = p ? p->relay_in : 0;
  *out = p ? p->bytes_out : 0;
}

static bool
client_gone (int fd)
{
  if (fd < 0)
    return false;
  struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };
  if (poll (&pfd, 1, 0) <= 0)
    return false;
  return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/* Why the upstream could not be used, as the 502 a client shows its user:
   Docker clients print "message", so it names the socket and the remedy. */
static int
upstream_failed (struct proxy *p, const char *doing, ps_error **err)
{
  const char *why = p->errbuf[0] ? p->errbuf : curl_easy_strerror (p->result);
  long oserr = 0;
  if (p->easy)
    curl_easy_getinfo (p->easy, CURLINFO_OS_ERRNO, &oserr);
  if (oserr != 0 && p->result == CURLE_COULDNT_CONNECT)
    why = strerror ((int) oserr);
  if (atomic_load (&stopping))
    return ps_error_set (err, 503, "podsolved is shutting down");
  bool unreachable = p->result == CURLE_COULDNT_CONNECT || p->result == CURLE_OPERATION_TIMEDOUT;
  return ps_error_set (err, 502, "Podman API service at unix://%s: %s: %s%s", ps_cfg.upstream,
                       unreachable ? "cannot connect" : doing, why,
                       unreachable ? " (is `podman system service` running there?)" : "");
}

/* ---- ordinary requests through curl --------------------------------------- */

static void
apply_pause (struct proxy *p)
{
  curl_easy_pause (p->easy, (p->recv_paused ? CURLPAUSE_RECV : 0) | (p->send_paused ? CURLPAUSE_SEND : 0));
}

/* curl wants request body bytes.  MHD owns them (p->up_data) only during
   on_body, so without any we pause the sending side until the next chunk. */
static size_t
transfer_read_cb (char *buf, size_t size, size_t n, void *userp)
{
  struct proxy *p = userp;
  size_t max = size * n;
  if (p->up_len > 0)
    {
      size_t k = p->up_len < max ? p->up_len : max;
      memcpy (buf, p->up_data, k);
      p->up_data += k;
      p->up_len -= k;
      return k;
    }
  if (p->up_eof)
    return 0;
  p->send_paused = true;
  return CURL_READFUNC_PAUSE;
}

/* Response bytes: kept until MHD's reader takes them; past PS_PROXY_BUFFER
   the receiving side pauses, which is the upstream's backpressure (curl
   hands the same bytes again once unpaused). */
static size_t
transfer_write_cb (char *data, size_t size, size_t n, void *userp)
{
  struct proxy *p = userp;
  size_t len = size * n;
  size_t pending = p->spill.len - p->spill_off;
  if (pending > 0 && pending + len > PS_PROXY_BUFFER)
    {
      p->recv_paused = true;
      return CURL_WRITEFUNC_PAUSE;
    }
  if (p->spill_off > 0)
    {
      /* Keep the buffer from creeping: move what is left to the front. */
      memmove (p->spill.data, p->spill.data + p->spill_off, pending);
      p->spill.len = pending;
      p->spill_off = 0;
    }
  ps_buf_append (&p->spill, data, len);
  return len;
}

static void
note_done (struct proxy *p)
{
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read (p->multi, &left)) != NULL)
    if (m->msg == CURLMSG_DONE && m->easy_handle == p->easy)
      {
        p->done = true;
        p->result = m->data.result;
      }
}

/* Run the transfer until `ready` holds or it ends (p->done).  Returns -1
   when the client went away or podsolved is stopping: abandon the request. */
static int
drive (struct proxy *p, bool (*ready) (const struct proxy *))
{
  for (;;)
    {
      int running = 0;
      CURLMcode mc = curl_multi_perform (p->multi, &running);
      note_done (p);
      if (mc != CURLM_OK && !p->done)
        {
          p->done = true;
          p->result = CURLE_FAILED_INIT;
          snprintf (p->errbuf, sizeof p->errbuf, "%s", curl_multi_strerror (mc));
        }
      if (p->done || ready (p))
        return 0;
      if (atomic_load (&stopping) || client_gone (p->client_fd))
        return -1;
      curl_multi_poll (p->multi, NULL, 0, PS_STREAM_POLL_MS, NULL);
    }
}

static bool
wants_body_or_answered (const struct proxy *p)
{
  return p->send_paused || p->head.complete;
}

static bool
chunk_taken (const struct proxy *p)
{
  return p->up_len == 0;
}

static bool
head_in (const struct proxy *p)
{
  return p->head.complete;
}

static bool
bytes_or_paused (const struct proxy *p)
{
  return p->spill.len > p->spill_off || p->recv_paused;
}

struct header_walk
{
  struct proxy *p;
  const char *connection;
  bool hijack;
  bool saw_accept, saw_host;
  ps_buf *raw_head; /* MODE_HIJACK: the head being written */
};

static enum MHD_Result
collect_request_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct header_walk *w = cls;
  if (key == NULL)
    return MHD_YES;
  value = value ? value : "";
  /* MHD answered any Expect itself, and curl must not send its own. */
  if (strcasecmp (key, "Expect") == 0)
    return MHD_YES;
  if (strcasecmp (key, "Host") == 0)
    w->saw_host = true;
  if (w->hijack)
    {
      /* The upgrade request goes as it came: Connection and Upgrade are the
         point of it, and the body is re-sent with its own framing. */
      if (strcasecmp (key, "Connection") != 0 && strcasecmp (key, "Upgrade") != 0
          && strcasecmp (key, "Transfer-Encoding") != 0 && is_hop_by_hop (key, w->connection))
        return MHD_YES;
      if (strcasecmp (key, "Transfer-Encoding") == 0)
        {
          if (!has_token (value, "chunked"))
            return MHD_YES;
          w->p->chunked_up = true;
          value = "chunked";
        }
      ps_buf_printf (w->raw_head, "%s: %s\r\n", key, value);
      return MHD_YES;
    }
  /* curl writes its own framing from CURLOPT_INFILESIZE / chunked upload. */
  if (is_hop_by_hop (key, w->connection) || strcasecmp (key, "Content-Length") == 0)
    return MHD_YES;
  if (strcasecmp (key, "Accept") == 0)
    w->saw_accept = true;
  /* "Name;" is curl's spelling of a header with an empty value. */
  cleanup_free char *line = value[0] ? xasprintf ("%s: %s", key, value) : xasprintf ("%s;", key);
  w->p->req_headers = curl_slist_append (w->p->req_headers, line);
  return MHD_YES;
}

static bool
request_has_body (struct ps_request *req, int64_t *length)
{
  const char *te = http_request_header (req, "Transfer-Encoding");
  const char *cl = http_request_header (req, "Content-Length");
  *length = -1;
  if (te && has_token (te, "chunked"))
    return true;
  if (cl)
    {
      char *end = NULL;
      errno = 0;
      long long v = strtoll (cl, &end, 10);
      if (errno == 0 && end != cl && *end == '\0' && v >= 0)
        {
          *length = v;
          return true;
        }
    }
  return false;
}

static int
transfer_begin (struct proxy *p, struct ps_request *req, ps_error **err)
{
  p->easy = curl_easy_init ();
  p->multi = curl_multi_init ();
  if (p->easy == NULL || p->multi == NULL)
    return ps_error_set (err, 500, "cannot start an upstream transfer");

  p->client_fd = http_request_fd (req);
  struct header_walk w = { .p = p, .connection = http_request_header (req, "Connection") };
  MHD_get_connection_values (req->conn, MHD_HEADER_KIND, collect_request_header, &w);
  if (!w.saw_accept)
    p->req_headers = curl_slist_append (p->req_headers, "Accept:"); /* no curl default */
  p->req_headers = curl_slist_append (p->req_headers, "Expect:");

  cleanup_free char *url = xasprintf ("http://d%s", p->target);
  CURL *c = p->easy;
  curl_easy_setopt (c, CURLOPT_URL, url);
  curl_easy_setopt (c, CURLOPT_PATH_AS_IS, 1L); /* no dot-segment squashing */
  curl_easy_setopt (c, CURLOPT_UNIX_SOCKET_PATH, ps_cfg.upstream);
  curl_easy_setopt (c, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
  curl_easy_setopt (c, CURLOPT_CUSTOMREQUEST, req->method);
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, p->req_headers);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT_MS, (long) PS_PROXY_CONNECT_TIMEOUT_MS);
  /* Bytes pass unchanged: no content decoding (curl still removes the
     upstream's chunked framing; MHD applies its own). */
  curl_easy_setopt (c, CURLOPT_HTTP_CONTENT_DECODING, 0L);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, curl_head_cb);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, &p->head);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, transfer_write_cb);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, p);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, p->errbuf);
  curl_easy_setopt (c, CURLOPT_BUFFERSIZE, 64L * 1024);
  curl_easy_setopt (c, CURLOPT_UPLOAD_BUFFERSIZE, 64L * 1024);
  if (strcmp (req->method, "HEAD") == 0)
    curl_easy_setopt (c, CURLOPT_NOBODY, 1L);

  int64_t length;
  bool body = request_has_body (req, &length);
  if (body)
    {
      curl_easy_setopt (c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt (c, CURLOPT_READFUNCTION, transfer_read_cb);
      curl_easy_setopt (c, CURLOPT_READDATA, p);
      curl_easy_setopt (c, CURLOPT_INFILESIZE_LARGE, (curl_off_t) length);
    }
  if (curl_multi_add_handle (p->multi, c) != CURLM_OK)
    return ps_error_set (err, 500, "cannot start an upstream transfer");

  /* With a body, connect now: a dead upstream is then answered before the
     client uploads anything (and before MHD says 100 Continue). */
  if (body)
    {
      if (drive (p, wants_body_or_answered) < 0)
        return ps_error_set (err, 503, "request abandoned");
      if (p->done && !p->head.complete)
        return upstream_failed (p, "connect", err);
    }
  return 0;
}

static int
transfer_body (struct proxy *p, const char *data, size_t len, ps_error **err)
{
  if (p->done)
    return 0; /* the upstream has answered already; the rest is dropped */
  p->up_data = data;
  p->up_len = len;
  if (p->send_paused)
    {
      p->send_paused = false;
      apply_pause (p);
    }
  int r = drive (p, chunk_taken);
  p->up_data = NULL;
  p->up_len = 0;
  if (r < 0)
    return ps_error_set (err, 503, "request abandoned");
  return 0;
}

/* MHD's content reader for a curl-driven response: runs on the connection
   thread whenever MHD can send more. */
static ssize_t
transfer_reader (void *cls, uint64_t pos, char *buf, size_t max)
{
  struct proxy *p = cls;
  for (;;)
    {
      size_t pending = p->spill.len - p->spill_off;
      if (pending > 0)
        {
          size_t k = pending < max ? pending : max;
          memcpy (buf, p->spill.data + p->spill_off, k);
          p->spill_off += k;
          p->bytes_out += k;
          return (ssize_t) k;
        }
      if (p->done)
        {
          bool short_body = p->content_length >= 0 && p->bytes_out < (uint64_t) p->content_length;
          if (p->result == CURLE_OK && !short_body)
            return MHD_CONTENT_READER_END_OF_STREAM;
          /* Too late for a status: cutting the stream short (no last chunk,
             or fewer bytes than Content-Length) is what tells the client. */
          ps_warn ("Podman API service at unix://%s: %s %s: the answer broke off after %" PRIu64 " bytes: %s",
                   ps_cfg.upstream, p->method, p->target, p->bytes_out,
                   p->errbuf[0] ? p->errbuf : curl_easy_strerror (p->result));
          return MHD_CONTENT_READER_END_WITH_ERROR;
        }
      if (p->recv_paused)
        {
          p->recv_paused = false;
          apply_pause (p); /* may hand over the held bytes right away */
          continue;
        }
      if (drive (p, bytes_or_paused) < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

/* ---- the answer, as the upstream gave it ---------------------------------- */

static int
queue_upstream_answer (struct proxy *p, struct ps_request *req, MHD_ContentReaderCallback reader,
                       ps_error **err)
{
  long status = p->head.status;
  const char *cl = strv_pair_get (&p->head.headers, "Content-Length");
  const char *connection = strv_pair_get (&p->head.headers, "Connection");
  p->content_length = -1;
  if (cl)
    {
      char *end = NULL;
      errno = 0;
      long long v = strtoll (cl, &end, 10);
      if (errno == 0 && end != cl && *end == '\0' && v >= 0)
        p->content_length = v;
    }
  bool head = strcmp (req->method, "HEAD") == 0;
  bool bodyless = head || status == 204 || status == 304 || (status >= 100 && status < 200);

  struct MHD_Response *r;
  if (bodyless)
    {
      r = MHD_create_response_from_buffer (0, (void *) "", MHD_RESPMEM_PERSISTENT);
      /* A HEAD answer says how long the GET body would be. */
      if (r && head && p->content_length >= 0)
        {
          MHD_set_response_options (r, MHD_RF_INSANITY_HEADER_CONTENT_LENGTH, MHD_RO_END);
          MHD_add_response_header (r, "Content-Length", cl);
        }
    }
  else
    {
      uint64_t size = p->content_length >= 0 ? (uint64_t) p->content_length : MHD_SIZE_UNKNOWN;
      r = MHD_create_response_from_callback (size, 64 * 1024, reader, proxy_ref (p), proxy_unref);
      if (r == NULL)
        proxy_unref (p);
      /* A body the upstream ends by closing (no length, not chunked: a
         hijacked attach/exec answered "200 OK") goes out the same way, byte
         for byte, not re-framed as chunks a raw-stream reader would see. */
      const char *te = strv_pair_get (&p->head.headers, "Transfer-Encoding");
      if (r && p->content_length < 0 && !(te && has_token (te, "chunked")))
        MHD_set_response_options (r, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END);
    }
  if (r == NULL)
    return ps_error_set (err, 500, "cannot create the response");

  for (size_t i = 0; i + 1 < p->head.headers.n; i += 2)
    {
      const char *name = p->head.headers.v[i];
      if (is_hop_by_hop (name, connection) || strcasecmp (name, "Content-Length") == 0)
        continue;
      if (MHD_add_response_header (r, name, p->head.headers.v[i + 1]) != MHD_YES)
        ps_debug ("proxy: MHD refused the upstream header %s", name);
    }
  enum MHD_Result q = MHD_queue_response (req->conn, (unsigned) status, r);
  MHD_destroy_response (r);
  if (q != MHD_YES)
    return ps_error_set (err, 500, "cannot queue the upstream's %ld answer", status);
  req->responded = true;
  req->status = (unsigned) status;
  return 0;
}

static int
transfer_complete (struct proxy *p, struct ps_request *req, ps_error **err)
{
  p->up_eof = true;
  if (p->send_paused)
    {
      p->send_paused = false;
      apply_pause (p);
    }
  p->client_fd = http_request_fd (req);
  if (drive (p, head_in) < 0)
    return ps_error_set (err, 503, "request abandoned");
  if (!p->head.complete)
    return upstream_failed (p, "forwarding the request", err);
  return queue_upstream_answer (p, req, transfer_reader, err);
}

/* ---- upgrade requests: attach, exec start ---------------------------------- */

/* Write all of data to the upstream socket (non-blocking, curl's). */
static int
upstream_write (struct proxy *p, const void *data, size_t len, ps_error **err)
{
  const char *d = data;
  while (len > 0)
    {
      ssize_t n = send (p->up_fd, d, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0)
        {
          d += n;
          len -= (size_t) n;
          continue;
        }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return ps_error_set_errno (err, 502, errno, "Podman API service at unix://%s: sending the request",
                                   ps_cfg.upstream);
      struct pollfd pfd = { .fd = p->up_fd, .events = POLLOUT };
      poll (&pfd, 1, PS_STREAM_POLL_MS);
      if (atomic_load (&stopping))
        return ps_error_set (err, 503, "podsolved is shutting down");
      if (client_gone (p->client_fd))
        return ps_error_set (err, 503, "request abandoned");
    }
  return 0;
}

/* Read what the upstream has into p->raw.  Returns bytes read, 0 at EOF,
   -1 on error, -2 when nothing came within PS_STREAM_POLL_MS. */
static ssize_t
upstream_read_some (struct proxy *p)
{
  struct pollfd pfd = { .fd = p->up_fd, .events = POLLIN };
  if (poll (&pfd, 1, PS_STREAM_POLL_MS) <= 0)
    return -2;
  char buf[16 * 1024];
  ssize_t n = recv (p->up_fd, buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0)
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -2 : -1;
  if (p->raw_off > 0)
    {
      memmove (p->raw.data, p->raw.data + p->raw_off, p->raw.len - p->raw_off);
      p->raw.len -= p->raw_off;
      p->raw_off = 0;
    }
  ps_buf_append (&p->raw, buf, (size_t) n);
  return n;
}

static int
hijack_begin (struct proxy *p, struct ps_request *req, ps_error **err)
{
  p->easy = curl_easy_init ();
  if (p->easy == NULL)
    return ps_error_set (err, 500, "cannot start an upstream connection");
  curl_easy_setopt (p->easy, CURLOPT_URL, "http://d/");
  curl_easy_setopt (p->easy, CURLOPT_UNIX_SOCKET_PATH, ps_cfg.upstream);
  curl_easy_setopt (p->easy, CURLOPT_CONNECT_ONLY, 1L);
  curl_easy_setopt (p->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (p->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) PS_PROXY_CONNECT_TIMEOUT_MS);
  curl_easy_setopt (p->easy, CURLOPT_ERRORBUFFER, p->errbuf);
  p->result = curl_easy_perform (p->easy);
  if (p->result != CURLE_OK)
    return upstream_failed (p, "connect", err);
  curl_socket_t fd = CURL_SOCKET_BAD;
  if (curl_easy_getinfo (p->easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK || fd == CURL_SOCKET_BAD)
    return ps_error_set (err, 500, "no socket for the upstream connection");
  p->up_fd = fd;
  p->client_fd = http_request_fd (req);

  ps_buf head = { 0 };
  ps_buf_printf (&head, "%s %s HTTP/1.1\r\n", req->method, p->target);
  struct header_walk w = {
    .p = p, .connection = http_request_header (req, "Connection"), .hijack = true, .raw_head = &head
  };
  MHD_get_connection_values (req->conn, MHD_HEADER_KIND, collect_request_header, &w);
  if (!w.saw_host)
    ps_buf_puts (&head, "Host: d\r\n"); /* HTTP/1.1 wants one; Go insists */
  ps_buf_puts (&head, "\r\n");
  int r = upstream_write (p, head.data, head.len, err);
  ps_buf_free (&head);
  return r;
}

static int
hijack_body (struct proxy *p, const char *data, size_t len, ps_error **err)
{
  if (!p->chunked_up)
    return upstream_write (p, data, len, err);
  char size_line[32];
  int n = snprintf (size_line, sizeof size_line, "%zx\r\n", len);
  if (upstream_write (p, size_line, (size_t) n, err) < 0 || upstream_write (p, data, len, err) < 0)
    return -1;
  return upstream_write (p, "\r\n", 2, err);
}

/* Split the upstream's head off p->raw.  Returns 1 when complete, 0 when
   more bytes are needed, -1 when it is not an HTTP/1.1 response head. */
static int
hijack_parse_head (struct proxy *p)
{
  const char *data = p->raw.data;
  size_t len = p->raw.len, start = 0;
  for (size_t i = 0; i < len; i++)
    {
      if (data[i] != '\n')
        continue;
      size_t l = i - start;
      if (l > 0 && data[start + l - 1] == '\r')
        l--;
      if (head_line (&p->head, data + start, l) < 0)
        return -1;
      start = i + 1;
      if (p->head.complete)
        {
          p->raw_off = start;
          return 1;
        }
    }
  /* No complete head yet: rewind and wait for more. */
  p->head.status = 0;
  ps_strv_free (&p->head.headers);
  return len >= PS_PROXY_MAX_HEAD ? -1 : 0;
}

/* Decode up to max body bytes of a hijacked request's non-101 answer from
   p->raw into buf (RFC 9112 §7.1 for chunked). */
static size_t
hijack_take_body (struct proxy *p, char *buf, size_t max)
{
  size_t out = 0;
  while (out < max && !p->body_done && !p->body_failed)
    {
      size_t avail = p->raw.len - p->raw_off;
      if (avail == 0)
        {
          if (p->framing == FRAME_LENGTH && p->body_left == 0)
            p->body_done = true;
          break;
        }
      const char *in = p->raw.data + p->raw_off;
      if (p->framing == FRAME_EOF || p->framing == FRAME_LENGTH
          || (p->framing == FRAME_CHUNKED && p->chunk == CHUNK_DATA))
        {
          size_t k = avail < max - out ? avail : max - out;
          if (p->framing != FRAME_EOF && k > p->body_left)
            k = (size_t) p->body_left;
          if (k == 0 && p->framing == FRAME_LENGTH && p->body_left == 0)
            p->body_done = true;
          if (k == 0)
            break;
          memcpy (buf + out, in, k);
          out += k;
          p->raw_off += k;
          if (p->framing != FRAME_EOF)
            {
              p->body_left -= k;
              if (p->body_left == 0)
                {
                  if (p->framing == FRAME_LENGTH)
                    p->body_done = true;
                  else
                    p->chunk = CHUNK_DATA_END;
                }
            }
          continue;
        }
      /* Chunked framing lines: size, the CRLF after data, trailers. */
      const char *nl = memchr (in, '\n', avail);
      if (nl == NULL)
        {
          if (avail > 4096)
            p->body_failed = true;
          break;
        }
      size_t linelen = (size_t) (nl - in);
      p->raw_off += linelen + 1;
      if (linelen > 0 && in[linelen - 1] == '\r')
        linelen--;
      if (p->chunk == CHUNK_SIZE)
        {
          char *end = NULL;
          cleanup_free char *line = xstrndup (in, linelen);
          errno = 0;
          unsigned long long size = strtoull (line, &end, 16);
          if (errno || end == line || (*end != '\0' && *end != ';' && *end != ' '))
            p->body_failed = true;
          else if (size == 0)
            p->chunk = CHUNK_TRAILER;
          else
            {
              p->body_left = size;
              p->chunk = CHUNK_DATA;
            }
        }
      else if (p->chunk == CHUNK_DATA_END)
        {
          if (linelen != 0)
            p->body_failed = true;
          p->chunk = CHUNK_SIZE;
        }
      else if (linelen == 0) /* CHUNK_TRAILER: the blank line ends the body */
        p->body_done = true;
    }
  return out;
}

static ssize_t
hijack_reader (void *cls, uint64_t pos, char *buf, size_t max)
{
  struct proxy *p = cls;
  for (;;)
    {
      size_t n = hijack_take_body (p, buf, max);
      if (n > 0)
        {
          p->bytes_out += n;
          return (ssize_t) n;
        }
      if (p->body_done)
        return MHD_CONTENT_READER_END_OF_STREAM;
      if (p->body_failed)
        break;
      ssize_t r = upstream_read_some (p);
      if (r == 0 && p->framing == FRAME_EOF)
        return MHD_CONTENT_READER_END_OF_STREAM;
      if (r == 0 || r == -1)
        break;
      if (r == -2 && (atomic_load (&stopping) || client_gone (p->client_fd)))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
  ps_warn ("Podman API service at unix://%s: %s %s: the answer broke off after %" PRIu64 " bytes",
           ps_cfg.upstream, p->method, p->target, p->bytes_out);
  return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* One direction of an upgraded connection. */
struct relay_dir
{
  int from, to;
  char *buf;
  size_t cap, off, len; /* pending bytes: buf[off .. off+len) */
  bool eof;             /* `from` ended (EOF or error) */
  bool shut;            /* we half-closed `to` */
  uint64_t bytes;
};

static void
relay_dir_init (struct relay_dir *d, int from, int to, const char *pre, size_t prelen)
{
  d->from = from;
  d->to = to;
  d->cap = prelen > PS_PROXY_RELAY_BUFFER ? prelen : PS_PROXY_RELAY_BUFFER;
  d->buf = xmalloc (d->cap);
  if (prelen)
    memcpy (d->buf, pre, prelen);
  d->off = 0;
  d->len = prelen;
  d->eof = d->shut = false;
  d->bytes = 0;
}

static void
relay_dir_read (struct relay_dir *d)
{
  ssize_t n = recv (d->from, d->buf, d->cap, MSG_DONTWAIT);
  if (n > 0)
    {
      d->off = 0;
      d->len = (size_t) n;
    }
  else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
    d->eof = true;
}

/* Returns -1 when `to` is gone. */
static int
relay_dir_write (struct relay_dir *d)
{
  ssize_t n = send (d->to, d->buf + d->off, d->len, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n > 0)
    {
      d->off += (size_t) n;
      d->len -= (size_t) n;
      d->bytes += (uint64_t) n;
      return 0;
    }
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
}

/* Copy bytes both ways until the upstream ends the session (the container
   or exec process is done: Podman closes), the client disappears, or
   podsolved stops.  A client EOF is passed on as a half-close and output
   keeps flowing; an upstream EOF ends the relay once its bytes are out. */
static void
relay (struct proxy *p, int client, const char *extra_in, size_t extra_in_size)
{
  struct relay_dir up, down;
  relay_dir_init (&up, client, p->up_fd, extra_in, extra_in_size);
  relay_dir_init (&down, p->up_fd, client, p->raw.data + p->raw_off, p->raw.len - p->raw_off);
  for (;;)
    {
      if (up.eof && up.len == 0 && !up.shut)
        {
          shutdown (p->up_fd, SHUT_WR); /* stdin EOF reaches the container */
          up.shut = true;
        }
      if (down.eof && down.len == 0)
        {
          shutdown (client, SHUT_WR);
          break;
        }
      struct pollfd fds[2] = {
        { .fd = client, .events = (short) ((!up.eof && up.len == 0 ? POLLIN : 0) | (down.len ? POLLOUT : 0)) },
        { .fd = p->up_fd, .events = (short) ((!down.eof && down.len == 0 ? POLLIN : 0) | (up.len ? POLLOUT : 0)) },
      };
      int n = poll (fds, 2, PS_STREAM_POLL_MS);
      if (atomic_load (&stopping))
        break;
      if (n < 0 && errno != EINTR)
        break;
      if (n <= 0)
        continue;
      short ce = fds[0].revents, ue = fds[1].revents;
      if (!up.eof && up.len == 0 && (ce & (POLLIN | POLLHUP | POLLERR)))
        relay_dir_read (&up);
      else if (up.eof && (ce & (POLLHUP | POLLERR)))
        break; /* the client closed both ways: nobody left to read output */
      if (!down.eof && down.len == 0 && (ue & (POLLIN | POLLHUP | POLLERR)))
        relay_dir_read (&down);
      if (up.len && (ue & (POLLOUT | POLLHUP | POLLERR)) && relay_dir_write (&up) < 0)
        {
          /* The upstream stopped reading: drop input, keep its output. */
          up.eof = true;
          up.len = 0;
          up.shut = true;
        }
      if (down.len && (ce & (POLLOUT | POLLHUP | POLLERR)) && relay_dir_write (&down) < 0)
        break; /* the client is gone */
    }
  p->relay_in += up.bytes;
  p->bytes_out += down.bytes;
  free (up.buf);
  free (down.buf);
}

/* Runs on the connection thread once MHD has sent the 101; MHD owns
   `sock` until MHD_UPGRADE_ACTION_CLOSE.  The request (and its state, `p`)
   is freed only after that, as for /session; MHD has no free callback for
   an upgrade response that never ran, so it holds no reference of its own. */
static void
relay_upgraded (void *cls, struct MHD_Connection *connection, void *con_cls, const char *extra_in,
                size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
  struct ps_request *req = con_cls;
  struct proxy *p = req->state;
  MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CORK_OFF);
  relay (p, sock, extra_in, extra_in_size);
  MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
}

static int
hijack_complete (struct proxy *p, struct ps_request *req, ps_error **err)
{
  if (p->chunked_up && upstream_write (p, "0\r\n\r\n", 5, err) < 0)
    return -1;
  p->client_fd = http_request_fd (req);
  int h;
  while ((h = hijack_parse_head (p)) == 0)
    {
      ssize_t r = upstream_read_some (p);
      if (r == 0 || r == -1)
        return ps_error_set (err, 502, "Podman API service at unix://%s: closed the connection without answering",
                             ps_cfg.upstream);
      if (r == -2 && atomic_load (&stopping))
        return ps_error_set (err, 503, "podsolved is shutting down");
      if (r == -2 && client_gone (p->client_fd))
        return ps_error_set (err, 503, "request abandoned");
    }
  if (h < 0)
    return ps_error_set (err, 502, "Podman API service at unix://%s: the answer is not an HTTP/1.1 response",
                         ps_cfg.upstream);

  if (p->head.status == 101)
    {
      struct MHD_Response *r = MHD_create_response_for_upgrade (relay_upgraded, NULL);
      if (r == NULL)
        return ps_error_set (err, 500, "cannot create the upgrade response");
      bool upgrade_set = false;
      for (size_t i = 0; i + 1 < p->head.headers.n; i += 2)
        {
          const char *name = p->head.headers.v[i];
          if (strcasecmp (name, "Connection") == 0 || strcasecmp (name, "Content-Length") == 0)
            continue; /* MHD writes "Connection: Upgrade" itself */
          upgrade_set |= strcasecmp (name, "Upgrade") == 0;
          MHD_add_response_header (r, name, p->head.headers.v[i + 1]);
        }
      if (!upgrade_set)
        MHD_add_response_header (r, "Upgrade", http_request_header (req, "Upgrade"));
      enum MHD_Result q = MHD_queue_response (req->conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
      MHD_destroy_response (r);
      if (q != MHD_YES)
        return ps_error_set (err, 500, "cannot queue the 101 response");
      req->responded = true;
      req->status = MHD_HTTP_SWITCHING_PROTOCOLS;
      return 0;
    }

  /* Anything else (an error, or a hijack answered without upgrading) is an
     ordinary response whose body we frame ourselves. */
  const char *te = strv_pair_get (&p->head.headers, "Transfer-Encoding");
  const char *cl = strv_pair_get (&p->head.headers, "Content-Length");
  if (te && has_token (te, "chunked"))
    {
      p->framing = FRAME_CHUNKED;
      p->chunk = CHUNK_SIZE;
    }
  else if (cl)
    {
      p->framing = FRAME_LENGTH;
      p->body_left = strtoull (cl, NULL, 10);
    }
  else
    p->framing = FRAME_EOF;
  return queue_upstream_answer (p, req, hijack_reader, err);
}

/* ---- the handler -------------------------------------------------------------- */

static bool
is_upgrade_request (struct ps_request *req)
{
  const char *upgrade = http_request_header (req, "Upgrade");
  const char *connection = http_request_header (req, "Connection");
  return upgrade && upgrade[0] && connection && has_token (connection, "upgrade");
}

static int
proxy_begin (struct ps_request *req, ps_error **err)
{
  struct proxy *p = req->state;
  p->method = xstrdup (req->method);
  if (p->target[0] != '/')
    return ps_error_set (err, 400, "request-target %s: only /path?query targets are passed on", p->target);
  /* Nothing configured and nothing at Podman's default socket: this is a
     build-only podsolved, and the route simply does not exist. */
  struct stat st;
  if (!ps_cfg.upstream_explicit && stat (ps_cfg.upstream, &st) < 0 && errno == ENOENT)
    return ps_error_set (err, 404,
                         "no such route: %s %s (podsolved passes it on to the Podman API service at unix://%s, "
                         "which is not running: start `podman system service --time=0`, or give podsolved "
                         "--upstream or --spawn-upstream)",
                         req->method, req->url, ps_cfg.upstream);
  if (is_upgrade_request (req))
    {
      p->mode = MODE_HIJACK;
      return hijack_begin (p, req, err);
    }
  return transfer_begin (p, req, err);
}

static int
proxy_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  struct proxy *p = req->state;
  return p->mode == MODE_HIJACK ? hijack_body (p, data, len, err) : transfer_body (p, data, len, err);
}

static int
proxy_complete (struct ps_request *req, ps_error **err)
{
  struct proxy *p = req->state;
  return p->mode == MODE_HIJACK ? hijack_complete (p, req, err) : transfer_complete (p, req, err);
}

static const struct ps_handler handler_proxy = {
  .on_begin = proxy_begin,
  .on_body = proxy_body,
  .on_complete = proxy_complete,
};

const struct ps_handler *
proxy_route (struct ps_request *req, const char *target)
{
  if (ps_cfg.upstream == NULL)
    return NULL;
  struct proxy *p = xcalloc (1, sizeof *p);
  atomic_init (&p->refs, 1);
  p->target = xstrdup (target);
  p->client_fd = -1;
  p->up_fd = -1;
  p->content_length = -1;
  req->state = p;
  req->state_free = proxy_unref;
  return &handler_proxy;
}

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
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, curl_head_cb);
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
  return strv_pair_get (&r->headers, name);
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
