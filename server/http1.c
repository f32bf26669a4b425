/* http1.c — HTTP/1.1 message heads (see http1.h). */
#define _GNU_SOURCE
#include "server/http1.h"

#include <string.h>
#include <strings.h>

#include "server/http.h"

/* Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the
   message: never forwarded, in either direction.  `connection` is the
   Connection header of the same message, whose tokens name more of them. */
bool
http1_is_hop_by_hop (const char *name, const char *connection)
{
  static const char *const fixed[] = {
    "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
    "TE",         "Trailer",    "Transfer-Encoding", "Upgrade",
  };
  for (size_t i = 0; i < ARRAY_SIZE (fixed); i++)
    if (strcasecmp (name, fixed[i]) == 0)
      return true;
  return connection != NULL && http_header_has_token (connection, name);
}

const char *
http1_header_get (const ps_strv *pairs, const char *name)
{
  for (size_t i = 0; i + 1 < pairs->n; i += 2)
    if (strcasecmp (pairs->v[i], name) == 0)
      return pairs->v[i + 1];
  return NULL;
}

/* Feed one line, CRLF already removed.  Returns -1 on a malformed line. */
int
http1_head_line (struct response_head *h, const char *line, size_t len)
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

size_t
http1_curl_head_cb (char *buf, size_t size, size_t n, void *userp)
{
  struct response_head *h = userp;
  size_t len = size * n;
  size_t l = len;
  while (l > 0 && (buf[l - 1] == '\n' || buf[l - 1] == '\r'))
    l--;
  if (http1_head_line (h, buf, l) < 0)
    return 0; /* curl fails the transfer: CURLE_WRITE_ERROR */
  return len;
}
