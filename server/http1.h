/* http1.h — HTTP/1.1 message heads as the pass-through and the upstream
 * client read them: a response head collected line by line (from curl's
 * header callback or split by hand for hijacked requests), header lookup
 * in name/value pairs, and the hop-by-hop rule. */
#ifndef SERVER_HTTP1_H
#define SERVER_HTTP1_H

#include <stddef.h>

#include "common/ps.h"

/* A response head being collected, one line at a time: curl hands us
   lines; for hijacked requests we split the head ourselves. */
struct response_head
{
  long status;
  ps_strv headers; /* name, value pairs */
  bool complete;   /* the blank line after a final (non-1xx) status */
};

/* Feed one line of a response head, CRLF already removed.  Returns -1 on a
   malformed line. */
int http1_head_line (struct response_head *h, const char *line, size_t len);
/* CURLOPT_HEADERFUNCTION collecting into a struct response_head. */
size_t http1_curl_head_cb (char *buf, size_t size, size_t n, void *userp);

/* Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded.  `connection` is
   the Connection header of the same message, whose tokens name more. */
bool http1_is_hop_by_hop (const char *name, const char *connection);
/* A header of a name, value pair list (any case), or NULL. */
const char *http1_header_get (const ps_strv *pairs, const char *name);

#endif
