/* proxy.c — pass every request podsolved does not answer itself to the
 * Podman API service, unchanged (see proxy.h).  This file: the handler,
 * the per-request state, headers, and ordinary requests; upgrade requests
 * (attach, exec start) are relayed by proxy_hijack.c; the buffered calls
 * and the --spawn-upstream supervisor are in upstream.c.
 *
 * Both paths run on the client connection's own MHD thread (MHD runs a
 * thread per connection, so blocking here stalls nobody else).
 *
 * Ordinary requests: one libcurl easy handle in a private multi handle,
 * driven from the MHD callbacks.  on_body feeds each upload chunk to
 * curl's read callback and runs the transfer until curl has taken it;
 * on_complete runs it until the upstream's response head is in; MHD's
 * content reader runs it until response bytes arrive.  Each side pauses
 * the other (CURLPAUSE) rather than buffer: at most PS_PROXY_BUFFER of
 * response is held, and an upload advances only as fast as the upstream
 * reads it.
 *
 * A hijack without "Upgrade" (Podman then answers "200 OK" and takes the
 * raw connection) goes the ordinary way: the upstream's output reaches the
 * client byte for byte (not re-framed) until the upstream closes, but
 * bytes the client sends after its request are not forwarded, because MHD
 * hands over a connection only with a 101.  The docker CLI, docker-py and
 * podman-remote all send "Upgrade: tcp".
 */
#define _GNU_SOURCE
#include "server/proxy_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/limits.h"
#include "common/log.h"
#include "server/config.h"

atomic_bool proxy_stopping;

void
proxy_global_init (void)
{
  /* A libcurl whose global initialisation is thread-safe (7.84 on, when
     built with atomics; Debian's is) runs it in the first curl_easy_init,
     with its OpenSSL initialisation: not at start-up, for nothing. */
  if (!(curl_version_info (CURLVERSION_NOW)->features & CURL_VERSION_THREADSAFE))
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
  atomic_store (&proxy_stopping, true);
}

/* ---- the per-request state -------------------------------------------------- */

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

bool
proxy_client_gone (int fd)
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
int
proxy_upstream_failed (struct proxy *p, const char *doing, ps_error **err)
{
  const char *why = p->errbuf[0] ? p->errbuf : curl_easy_strerror (p->result);
  long oserr = 0;
  if (p->easy)
    curl_easy_getinfo (p->easy, CURLINFO_OS_ERRNO, &oserr);
  if (oserr != 0 && p->result == CURLE_COULDNT_CONNECT)
    why = strerror ((int) oserr);
  if (atomic_load (&proxy_stopping))
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
      if (atomic_load (&proxy_stopping) || proxy_client_gone (p->client_fd))
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

void
proxy_collect_request_header (void *cls, const char *key, const char *value)
{
  struct header_walk *w = cls;
  value = value ? value : "";
  /* MHD answered any Expect itself, and curl must not send its own. */
  if (strcasecmp (key, "Expect") == 0)
    return;
  if (strcasecmp (key, "Host") == 0)
    w->saw_host = true;
  if (w->hijack)
    {
      /* The upgrade request goes as it came: Connection and Upgrade are the
         point of it, and the body is re-sent with its own framing. */
      if (strcasecmp (key, "Connection") != 0 && strcasecmp (key, "Upgrade") != 0
          && strcasecmp (key, "Transfer-Encoding") != 0 && http1_is_hop_by_hop (key, w->connection))
        return;
      if (strcasecmp (key, "Transfer-Encoding") == 0)
        {
          if (!http_header_has_token (value, "chunked"))
            return;
          w->p->chunked_up = true;
          value = "chunked";
        }
      ps_buf_printf (w->raw_head, "%s: %s\r\n", key, value);
      return;
    }
  /* curl writes its own framing from CURLOPT_INFILESIZE / chunked upload. */
  if (http1_is_hop_by_hop (key, w->connection) || strcasecmp (key, "Content-Length") == 0)
    return;
  if (strcasecmp (key, "Accept") == 0)
    w->saw_accept = true;
  /* "Name;" is curl's spelling of a header with an empty value. */
  cleanup_free char *line = value[0] ? xasprintf ("%s: %s", key, value) : xasprintf ("%s;", key);
  w->p->req_headers = curl_slist_append (w->p->req_headers, line);
}

static bool
request_has_body (struct ps_request *req, int64_t *length)
{
  const char *te = http_request_header (req, "Transfer-Encoding");
  const char *cl = http_request_header (req, "Content-Length");
  *length = -1;
  if (te && http_header_has_token (te, "chunked"))
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
  http_request_foreach_header (req, proxy_collect_request_header, &w);
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
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, http1_curl_head_cb);
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
        return proxy_upstream_failed (p, "connect", err);
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
            return HTTP_STREAM_END;
          /* Too late for a status: cutting the stream short (no last chunk,
             or fewer bytes than Content-Length) is what tells the client. */
          ps_warn ("Podman API service at unix://%s: %s %s: the answer broke off after %" PRIu64 " bytes: %s",
                   ps_cfg.upstream, p->method, p->target, p->bytes_out,
                   p->errbuf[0] ? p->errbuf : curl_easy_strerror (p->result));
          return HTTP_STREAM_ERROR;
        }
      if (p->recv_paused)
        {
          p->recv_paused = false;
          apply_pause (p); /* may hand over the held bytes right away */
          continue;
        }
      if (drive (p, bytes_or_paused) < 0)
        return HTTP_STREAM_ERROR;
    }
}

/* ---- the answer, as the upstream gave it ---------------------------------- */

int
proxy_queue_upstream_answer (struct proxy *p, struct ps_request *req, http_stream_read_fn reader,
                             ps_error **err)
{
  long status = p->head.status;
  const char *cl = http1_header_get (&p->head.headers, "Content-Length");
  const char *connection = http1_header_get (&p->head.headers, "Connection");
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
      const char *te = http1_header_get (&p->head.headers, "Transfer-Encoding");
      if (r && p->content_length < 0 && !(te && http_header_has_token (te, "chunked")))
        MHD_set_response_options (r, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END);
    }
  if (r == NULL)
    return ps_error_set (err, 500, "cannot create the response");

  for (size_t i = 0; i + 1 < p->head.headers.n; i += 2)
    {
      const char *name = p->head.headers.v[i];
      if (http1_is_hop_by_hop (name, connection) || strcasecmp (name, "Content-Length") == 0)
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
    return proxy_upstream_failed (p, "forwarding the request", err);
  return proxy_queue_upstream_answer (p, req, transfer_reader, err);
}

/* ---- the handler -------------------------------------------------------------- */

static bool
is_upgrade_request (struct ps_request *req)
{
  const char *upgrade = http_request_header (req, "Upgrade");
  const char *connection = http_request_header (req, "Connection");
  return upgrade && upgrade[0] && connection && http_header_has_token (connection, "upgrade");
}

static int
proxy_begin (struct ps_request *req, ps_error **err)
{
  struct proxy *p = req->state;
  p->method = xstrdup (req->method);
  if (p->target[0] != '/')
    return ps_error_set (err, 400, "request-target %s: only /path?query targets are passed on", p->target);
  if (is_upgrade_request (req))
    {
      p->mode = MODE_HIJACK;
      return proxy_hijack_begin (p, req, err);
    }
  return transfer_begin (p, req, err);
}

static int
proxy_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  struct proxy *p = req->state;
  return p->mode == MODE_HIJACK ? proxy_hijack_body (p, data, len, err) : transfer_body (p, data, len, err);
}

static int
proxy_complete (struct ps_request *req, ps_error **err)
{
  struct proxy *p = req->state;
  return p->mode == MODE_HIJACK ? proxy_hijack_complete (p, req, err) : transfer_complete (p, req, err);
}

static const struct ps_handler handler_proxy = {
  .on_begin = proxy_begin,
  .on_body = proxy_body,
  .on_complete = proxy_complete,
};

/* ---- no upstream ------------------------------------------------------------ */

/* A route of Podman's with no Podman to pass it to.  A request that would
   change something (docker run's containers/create, images/load...) is a
   503 with the way out, never a 404: the docker CLI takes a 404 on
   containers/create for a missing image and tries to pull it.  A GET or
   HEAD is a 404 with the same hint: the thing is not there, and build-only
   clients (docker-compose 1.x checking its network before a build) go on.
   The answer comes after the body is read, so a client still uploading
   never sees a broken pipe. */
static int
unavailable_begin (struct ps_request *req, ps_error **err)
{
  return 0;
}

static int
unavailable_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  return 0;
}

static int
unavailable_complete (struct ps_request *req, ps_error **err)
{
  bool lookup = strcmp (req->method, "GET") == 0 || strcmp (req->method, "HEAD") == 0;
  int status = lookup ? 404 : 503;
  if (ps_cfg.upstream == NULL)
    return ps_error_set (err, status,
                         "%s%s %s is served by the Podman API service, and podsolved runs with --upstream none (the "
                         "build API only): start it with --upstream unix:///run/podman/podman.sock (a running "
                         "`podman system service --time=0`) or --spawn-upstream",
                         lookup ? "no such route: " : "", req->method, req->url);
  return ps_error_set (err, status,
                       "%s%s %s is served by the Podman API service at unix://%s, which is not running: start "
                       "`podman system service --time=0`, or give podsolved --upstream or --spawn-upstream",
                       lookup ? "no such route: " : "", req->method, req->url, ps_cfg.upstream);
}

static const struct ps_handler handler_unavailable = {
  .on_begin = unavailable_begin,
  .on_body = unavailable_body,
  .on_complete = unavailable_complete,
};

/* Whether `url` names a resource of Docker's or Podman's API (after an
   optional /vX.Y and /libpod): what a client with no Podman behind
   podsolved must hear is unavailable, not missing.  Anything else is a
   plain 404 of podsolved's own. */
static bool
podman_resource (const char *url)
{
  static const char *const resources[] = {
    "containers", "images", "volumes", "networks", "exec",    "events",  "system",  "pods",
    "secrets",    "plugins", "swarm",  "services", "nodes",   "tasks",   "configs", "distribution",
    "auth",       "commit",  "generate", "play",   "kube",    "manifests", "artifacts",
  };
  const char *p = url;
  if (p[0] == '/' && p[1] == 'v' && p[2] >= '0' && p[2] <= '9')
    p = strchr (p + 1, '/') ? strchr (p + 1, '/') : "";
  if (ps_str_has_prefix (p, "/libpod/"))
    p += strlen ("/libpod");
  if (*p != '/')
    return false;
  p++;
  size_t n = strcspn (p, "/?");
  for (size_t i = 0; i < ARRAY_SIZE (resources); i++)
    if (strlen (resources[i]) == n && strncmp (p, resources[i], n) == 0)
      return true;
  return false;
}

const struct ps_handler *
proxy_route (struct ps_request *req, const char *target)
{
  /* --upstream none, or nothing configured and nothing at Podman's
     default socket. */
  struct stat st;
  if (ps_cfg.upstream == NULL
      || (!ps_cfg.upstream_explicit && stat (ps_cfg.upstream, &st) < 0 && errno == ENOENT))
    return podman_resource (req->url) ? &handler_unavailable : NULL;
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
