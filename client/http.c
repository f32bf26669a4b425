/* http.c — libcurl requests to podsolved (see http.h).
 *
 * Transfers run on a multi handle polled every CLI_TICK_MS, so a stream
 * that is silent for minutes (a long RUN) still redraws its timers and
 * notices Ctrl-C promptly; stopping simply drops the connection, which is
 * how the daemon learns that a /solve client went away. */
#define _GNU_SOURCE
#include "client/http.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "client/cli.h"

struct cli_http
{
  char *address;   /* as given, for messages */
  char *unix_path; /* NULL for TCP */
  char *base_url;  /* "http://localhost" for a unix socket */
};

enum sink
{
  SINK_BUFFER,
  SINK_FD,
  SINK_LINES,
};

/* One transfer in flight: where its body goes and what went wrong. */
struct xfer
{
  CURL *curl;
  enum sink sink;
  long status; /* HTTP status, read when the first body byte arrives */
  ps_buf body; /* SINK_BUFFER */
  int fd;      /* SINK_FD */
  int write_errno;
  ps_buf lines; /* SINK_LINES: bytes of an unfinished line */
  struct cli_http_stream *stream;
  bool line_stopped; /* the line callback asked to stop */
  bool too_big;
  ps_buf error_body; /* a non-2xx body */
  char curl_msg[CURL_ERROR_SIZE];
};

/* A multipart part read from a descriptor as curl sends it. */
struct fd_part
{
  int fd;
  uint64_t pos;
  uint64_t size;
};

cli_http *
cli_http_new (const char *host, ps_error **err)
{
  if (host == NULL || *host == '\0')
    host = getenv ("PODSOLVE_HOST");
  if (host == NULL || *host == '\0')
    {
      const char *docker_host = getenv ("DOCKER_HOST");
      host = docker_host && ps_str_has_prefix (docker_host, "unix://") ? docker_host : CLI_DEFAULT_HOST;
    }
  cli_http *h = xcalloc (1, sizeof *h);
  h->address = xstrdup (host);
  if (ps_str_has_prefix (host, "unix://") || host[0] == '/')
    {
      const char *path = host[0] == '/' ? host : host + strlen ("unix://");
      if (path[0] != '/')
        {
          cli_http_free (h);
          ps_error_set (err, 0, "host \"%s\": a unix socket address needs an absolute path (unix:///path)", host);
          return NULL;
        }
      h->unix_path = xstrdup (path);
      h->base_url = xstrdup ("http://localhost");
    }
  else if (ps_str_has_prefix (host, "tcp://"))
    h->base_url = xasprintf ("http://%s", host + strlen ("tcp://"));
  else if (ps_str_has_prefix (host, "http://") || ps_str_has_prefix (host, "https://"))
    h->base_url = xstrdup (host);
  else
    {
      cli_http_free (h);
      ps_error_set (err, 0, "host \"%s\": expected unix:///path, tcp://host:port or http(s)://host:port", host);
      return NULL;
    }
  size_t n = strlen (h->base_url);
  while (n > 0 && h->base_url[n - 1] == '/')
    h->base_url[--n] = '\0';
  return h;
}

void
cli_http_free (cli_http *h)
{
  if (h == NULL)
    return;
  free (h->address);
  free (h->unix_path);
  free (h->base_url);
  free (h);
}

const char *
cli_http_address (const cli_http *h)
{
  return h->address;
}

char *
cli_http_escape (const char *segment)
{
  char *e = curl_easy_escape (NULL, segment, 0);
  if (e == NULL)
    abort ();
  char *copy = xstrdup (e);
  curl_free (e);
  return copy;
}

/* ---- callbacks (libcurl owns `data`; it is valid during the call only) -- */

static bool
status_ok (struct xfer *x)
{
  if (x->status == 0)
    curl_easy_getinfo (x->curl, CURLINFO_RESPONSE_CODE, &x->status);
  return x->status >= 200 && x->status < 300;
}

/* Hand every complete line in x->lines to the callback, keep the rest. */
static int
flush_lines (struct xfer *x, bool at_end)
{
  size_t start = 0;
  for (;;)
    {
      char *nl = memchr (x->lines.data + start, '\n', x->lines.len - start);
      if (nl == NULL)
        break;
      size_t len = (size_t) (nl - (x->lines.data + start));
      *nl = '\0';
      if (x->stream->on_line (x->lines.data + start, len, x->stream->ud) < 0)
        return -1;
      start += len + 1;
    }
  if (at_end && start < x->lines.len)
    {
      if (x->stream->on_line (x->lines.data + start, x->lines.len - start, x->stream->ud) < 0)
        return -1;
      start = x->lines.len;
    }
  if (start > 0)
    {
      memmove (x->lines.data, x->lines.data + start, x->lines.len - start);
      x->lines.len -= start;
      x->lines.data[x->lines.len] = '\0';
    }
  return 0;
}

static size_t
on_body (char *data, size_t size, size_t nmemb, void *ud)
{
  struct xfer *x = ud;
  size_t n = size * nmemb;
  if (!status_ok (x))
    {
      if (x->error_body.len < CLI_MAX_ERROR_BODY)
        ps_buf_append (&x->error_body, data, n);
      return n;
    }
  switch (x->sink)
    {
    case SINK_BUFFER:
      if (x->body.len + n > CLI_MAX_JSON_BODY)
        {
          x->too_big = true;
          return 0;
        }
      ps_buf_append (&x->body, data, n);
      return n;
    case SINK_FD:
      for (size_t off = 0; off < n;)
        {
          ssize_t w = write (x->fd, data + off, n - off);
          if (w < 0)
            {
              if (errno == EINTR)
                continue;
              x->write_errno = errno;
              return 0;
            }
          off += (size_t) w;
        }
      return n;
    case SINK_LINES:
      ps_buf_append (&x->lines, data, n);
      if (flush_lines (x, false) < 0)
        {
          x->line_stopped = true;
          return 0;
        }
      if (x->lines.len > CLI_MAX_STREAM_LINE)
        {
          x->too_big = true;
          return 0;
        }
      if (x->stream->on_tick)
        x->stream->on_tick (x->stream->ud);
      return n;
    }
  return 0;
}

static size_t
on_header (char *data, size_t size, size_t nmemb, void *ud)
{
  struct xfer *x = ud;
  size_t n = size * nmemb;
  static const char name[] = "Podsolve-Solve-Ref:";
  if (x->stream && n > sizeof name - 1 && strncasecmp (data, name, sizeof name - 1) == 0)
    {
      const char *v = data + sizeof name - 1;
      size_t len = n - (sizeof name - 1);
      while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
      while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
      free (x->stream->solve_ref);
      x->stream->solve_ref = xstrndup (v, len);
    }
  return n;
}

static size_t
on_part_read (char *buf, size_t size, size_t nitems, void *arg)
{
  struct fd_part *p = arg;
  size_t want = size * nitems;
  if (p->pos >= p->size)
    return 0;
  if (want > p->size - p->pos)
    want = (size_t) (p->size - p->pos);
  for (;;)
    {
      ssize_t r = pread (p->fd, buf, want, (off_t) p->pos);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        return CURL_READFUNC_ABORT; /* the file shrank or failed under us */
      p->pos += (uint64_t) r;
      return (size_t) r;
    }
}

static int
on_part_seek (void *arg, curl_off_t offset, int origin)
{
  struct fd_part *p = arg;
  if (origin != SEEK_SET || offset < 0 || (uint64_t) offset > p->size)
    return CURL_SEEKFUNC_CANTSEEK;
  p->pos = (uint64_t) offset;
  return CURL_SEEKFUNC_OK;
}

/* ---- the transfer ---------------------------------------------------------- */

/* The daemon's error body is Podman's {"cause","message","response"}. */
static int
http_error (struct xfer *x, const char *method, const char *path, ps_error **err)
{
  const char *msg = NULL;
  cJSON *o = x->error_body.len ? cJSON_ParseWithLength (x->error_body.data, x->error_body.len) : NULL;
  const cJSON *m = cJSON_GetObjectItemCaseSensitive (o, "message");
  if (cJSON_IsString (m) && *m->valuestring)
    msg = m->valuestring;
  cleanup_free char *raw = NULL;
  if (msg == NULL && x->error_body.len)
    {
      size_t n = x->error_body.len;
      while (n > 0 && (x->error_body.data[n - 1] == '\n' || x->error_body.data[n - 1] == '\r'))
        n--;
      raw = xstrndup (x->error_body.data, n > 500 ? 500 : n);
      msg = raw;
    }
  if (msg)
    ps_error_set (err, (int) x->status, "%s", msg);
  else
    ps_error_set (err, (int) x->status, "%s %s: HTTP status %ld", method, path, x->status);
  cJSON_Delete (o);
  return -1;
}

static int
transport_error (cli_http *h, struct xfer *x, CURLcode res, ps_error **err)
{
  const char *detail = x->curl_msg[0] ? x->curl_msg : curl_easy_strerror (res);
  long os_errno = 0;
  curl_easy_getinfo (x->curl, CURLINFO_OS_ERRNO, &os_errno);
  /* for a unix socket curl's own text speaks of "localhost port 80" */
  if (h->unix_path && os_errno)
    detail = strerror ((int) os_errno);
  if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST)
    return ps_error_set (err, 0,
                         "cannot connect to podsolved at %s: %s (is it running? see --host and "
                         "$PODSOLVE_HOST)",
                         h->address, detail);
  return ps_error_set (err, 0, "%s: %s", h->address, detail);
}

/* Run the transfer on a multi handle, ticking while nothing arrives. */
static CURLcode
perform (struct xfer *x, bool *interrupted)
{
  CURLM *m = curl_multi_init ();
  if (m == NULL)
    abort ();
  curl_multi_add_handle (m, x->curl);
  CURLcode res = CURLE_OK;
  int running = 1;
  *interrupted = false;
  for (;;)
    {
      CURLMcode mc = curl_multi_perform (m, &running);
      if (mc != CURLM_OK)
        {
          snprintf (x->curl_msg, sizeof x->curl_msg, "%s", curl_multi_strerror (mc));
          res = CURLE_RECV_ERROR;
          break;
        }
      if (running == 0)
        {
          int left = 0;
          CURLMsg *msg;
          while ((msg = curl_multi_info_read (m, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE)
              res = msg->data.result;
          break;
        }
      if (cli_interrupted)
        {
          *interrupted = true;
          break;
        }
      curl_multi_poll (m, NULL, 0, CLI_TICK_MS, NULL);
      if (x->stream && x->stream->on_tick)
        x->stream->on_tick (x->stream->ud);
    }
  curl_multi_remove_handle (m, x->curl);
  curl_multi_cleanup (m);
  return res;
}

static CURL *
new_handle (cli_http *h, struct xfer *x, const char *method, const char *path, struct curl_slist **headers)
{
  CURL *c = curl_easy_init ();
  if (c == NULL)
    abort ();
  x->curl = c;
  cleanup_free char *url = xasprintf ("%s%s", h->base_url, path);
  curl_easy_setopt (c, CURLOPT_URL, url);
  if (h->unix_path)
    curl_easy_setopt (c, CURLOPT_UNIX_SOCKET_PATH, h->unix_path);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_USERAGENT, "podsolve/" PODSOLVE_VERSION);
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, x->curl_msg);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, x);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, x);
  /* The daemon reads the whole body anyway; waiting for "100 Continue"
     only adds a round trip. */
  *headers = curl_slist_append (*headers, "Expect:");
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, *headers);
  if (strcmp (method, "POST") == 0)
    {
      curl_easy_setopt (c, CURLOPT_POST, 1L);
      curl_easy_setopt (c, CURLOPT_POSTFIELDSIZE, 0L);
      curl_easy_setopt (c, CURLOPT_POSTFIELDS, "");
    }
  else if (strcmp (method, "GET") != 0)
    curl_easy_setopt (c, CURLOPT_CUSTOMREQUEST, method);
  return c;
}

static int
run (cli_http *h, struct xfer *x, const char *method, const char *path, const struct cli_http_part *parts,
     size_t n_parts, ps_error **err)
{
  struct curl_slist *headers = NULL;
  CURL *c = new_handle (h, x, method, path, &headers);
  curl_mime *mime = NULL;
  struct fd_part *fdparts = n_parts ? xcalloc (n_parts, sizeof *fdparts) : NULL;
  if (n_parts > 0)
    {
      mime = curl_mime_init (c);
      for (size_t i = 0; i < n_parts; i++)
        {
          const struct cli_http_part *p = &parts[i];
          curl_mimepart *mp = curl_mime_addpart (mime);
          curl_mime_name (mp, p->name);
          if (p->content_type)
            curl_mime_type (mp, p->content_type);
          if (p->filename)
            curl_mime_filename (mp, p->filename);
          if (p->fd < 0)
            curl_mime_data (mp, p->data, p->len);
          else
            {
              fdparts[i] = (struct fd_part){ .fd = p->fd, .size = p->size };
              curl_mime_data_cb (mp, (curl_off_t) p->size, on_part_read, on_part_seek, NULL, &fdparts[i]);
            }
        }
      curl_easy_setopt (c, CURLOPT_MIMEPOST, mime);
    }

  bool interrupted = false;
  CURLcode res = perform (x, &interrupted);
  int ret = 0;
  if (interrupted)
    ret = ps_error_set (err, 0, "interrupted");
  else if (x->line_stopped)
    ret = -1; /* the line callback holds the reason */
  else if (res == CURLE_OK && !status_ok (x))
    ret = http_error (x, method, path, err);
  else if (x->too_big)
    ret = ps_error_set (err, 0, "%s %s: the answer is larger than this client accepts", method, path);
  else if (x->write_errno)
    ret = ps_error_set_errno (err, 0, x->write_errno, "%s %s: write", method, path);
  else if (res != CURLE_OK)
    ret = transport_error (h, x, res, err);
  else if (x->sink == SINK_LINES && flush_lines (x, true) < 0)
    ret = -1;

  curl_easy_cleanup (c);
  curl_mime_free (mime);
  curl_slist_free_all (headers);
  free (fdparts);
  return ret;
}

static void
xfer_free (struct xfer *x)
{
  ps_buf_free (&x->body);
  ps_buf_free (&x->lines);
  ps_buf_free (&x->error_body);
}

int
cli_http_call (cli_http *h, const char *method, const char *path, ps_buf *body, ps_error **err)
{
  struct xfer x = { .sink = SINK_BUFFER, .fd = -1 };
  int ret = run (h, &x, method, path, NULL, 0, err);
  if (ret == 0)
    {
      ps_buf_free (body);
      *body = x.body;
      memset (&x.body, 0, sizeof x.body);
      if (body->data == NULL)
        ps_buf_puts (body, "");
    }
  xfer_free (&x);
  if (ret < 0)
    return ps_error_wrap (err, "%s %s", method, path);
  return 0;
}

int
cli_http_download (cli_http *h, const char *path, int fd, ps_error **err)
{
  struct xfer x = { .sink = SINK_FD, .fd = fd };
  int ret = run (h, &x, "GET", path, NULL, 0, err);
  xfer_free (&x);
  if (ret < 0)
    return ps_error_wrap (err, "GET %s", path);
  return 0;
}

int
cli_http_stream (cli_http *h, const char *method, const char *path, const struct cli_http_part *parts, size_t n_parts,
                 struct cli_http_stream *s, ps_error **err)
{
  struct xfer x = { .sink = SINK_LINES, .fd = -1, .stream = s };
  int ret = run (h, &x, method, path, parts, n_parts, err);
  xfer_free (&x);
  if (ret < 0 && err && *err)
    return ps_error_wrap (err, "%s %s", method, path);
  return ret;
}
