/* proxy_hijack.c — upgrade requests through the pass-through (attach,
 * exec start: "Connection: Upgrade", "Upgrade: tcp"; see proxy.h).
 *
 * curl only connects (CURLOPT_CONNECT_ONLY); we write the request head and
 * body ourselves, read the upstream's response head (bounded), and on 101
 * take the client socket from MHD and copy bytes both ways until the
 * upstream ends the session.  A client half-close (stdin EOF) becomes
 * shutdown(SHUT_WR) toward the upstream, so the container sees EOF on
 * stdin and its output still flows back.  Any other answer is an ordinary
 * response whose body we frame ourselves.
 */
#define _GNU_SOURCE
#include "server/proxy_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "common/limits.h"
#include "common/log.h"
#include "server/config.h"

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
      if (atomic_load (&proxy_stopping))
        return ps_error_set (err, 503, "podsolved is shutting down");
      if (proxy_client_gone (p->client_fd))
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

int
proxy_hijack_begin (struct proxy *p, struct ps_request *req, ps_error **err)
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
    return proxy_upstream_failed (p, "connect", err);
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
  http_request_foreach_header (req, proxy_collect_request_header, &w);
  if (!w.saw_host)
    ps_buf_puts (&head, "Host: d\r\n"); /* HTTP/1.1 wants one; Go insists */
  ps_buf_puts (&head, "\r\n");
  int r = upstream_write (p, head.data, head.len, err);
  ps_buf_free (&head);
  return r;
}

int
proxy_hijack_body (struct proxy *p, const char *data, size_t len, ps_error **err)
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
      if (http1_head_line (&p->head, data + start, l) < 0)
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
        return HTTP_STREAM_END;
      if (p->body_failed)
        break;
      ssize_t r = upstream_read_some (p);
      if (r == 0 && p->framing == FRAME_EOF)
        return HTTP_STREAM_END;
      if (r == 0 || r == -1)
        break;
      if (r == -2 && (atomic_load (&proxy_stopping) || proxy_client_gone (p->client_fd)))
        return HTTP_STREAM_ERROR;
    }
  ps_warn ("Podman API service at unix://%s: %s %s: the answer broke off after %" PRIu64 " bytes",
           ps_cfg.upstream, p->method, p->target, p->bytes_out);
  return HTTP_STREAM_ERROR;
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
      if (atomic_load (&proxy_stopping))
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

/* Runs on the connection thread once the 101 is out; the socket is ours
   until http_upgraded_close.  The request (and its state, `p`) is freed
   only after that, as for /session; MHD has no free callback for an
   upgrade response that never ran, so it holds no reference of its own. */
static void
relay_upgraded (void *ud, int fd, const char *extra_in, size_t extra_in_size, struct http_upgraded *u)
{
  struct proxy *p = ud;
  http_upgraded_uncork (u);
  relay (p, fd, extra_in, extra_in_size);
  http_upgraded_close (u);
}

int
proxy_hijack_complete (struct proxy *p, struct ps_request *req, ps_error **err)
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
      if (r == -2 && atomic_load (&proxy_stopping))
        return ps_error_set (err, 503, "podsolved is shutting down");
      if (r == -2 && proxy_client_gone (p->client_fd))
        return ps_error_set (err, 503, "request abandoned");
    }
  if (h < 0)
    return ps_error_set (err, 502, "Podman API service at unix://%s: the answer is not an HTTP/1.1 response",
                         ps_cfg.upstream);

  if (p->head.status == 101)
    {
      /* The upstream's headers but Connection ("Connection: Upgrade" is
         written for us) and Content-Length; Upgrade as the client asked
         when the upstream does not say. */
      cleanup_free const char **extra = xcalloc (p->head.headers.n + 1, sizeof *extra);
      size_t n = 0;
      bool upgrade_set = false;
      for (size_t i = 0; i + 1 < p->head.headers.n; i += 2)
        {
          const char *name = p->head.headers.v[i];
          if (strcasecmp (name, "Connection") == 0 || strcasecmp (name, "Content-Length") == 0)
            continue;
          upgrade_set |= strcasecmp (name, "Upgrade") == 0;
          extra[n++] = name;
          extra[n++] = p->head.headers.v[i + 1];
        }
      return http_respond_upgrade (req, upgrade_set ? NULL : http_request_header (req, "Upgrade"), extra,
                                   relay_upgraded, p, err);
    }

  /* Anything else (an error, or a hijack answered without upgrading) is an
     ordinary response whose body we frame ourselves. */
  const char *te = http1_header_get (&p->head.headers, "Transfer-Encoding");
  const char *cl = http1_header_get (&p->head.headers, "Content-Length");
  if (te && http_header_has_token (te, "chunked"))
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
  return proxy_queue_upstream_answer (p, req, hijack_reader, err);
}
