/* http.h — the CLI's HTTP to podsolved, over libcurl: a unix socket
 * (CURLOPT_UNIX_SOCKET_PATH) or TCP.
 *
 * Every call runs one request to completion on the calling thread, waking
 * every CLI_TICK_MS to call the tick callback and to stop when
 * cli_interrupted is set.  A non-2xx answer becomes an error whose status
 * is the HTTP status and whose message is the daemon's "message". */
#ifndef CLIENT_HTTP_H
#define CLIENT_HTTP_H

#include <stdint.h>

#include "common/ps.h"

typedef struct cli_http cli_http;

/* Resolve the daemon address: `host` when not NULL, else $PODSOLVE_HOST,
   else $DOCKER_HOST when it is unix://, else CLI_DEFAULT_HOST. */
cli_http *cli_http_new (const char *host, ps_error **err);
void cli_http_free (cli_http *h);
/* The address as the user would write it ("unix:///run/..."). */
const char *cli_http_address (const cli_http *h);

/* Percent-encode one path segment (a solve ref typed by the user). */
char *cli_http_escape (const char *segment);

/* `method` `path`; a 2xx body is stored in *body (NUL-terminated, at most
   CLI_MAX_JSON_BODY bytes).  POST without parts sends an empty body. */
int cli_http_call (cli_http *h, const char *method, const char *path, ps_buf *body, ps_error **err);

/* GET `path` and write the 2xx body to `fd` (owned by the caller). */
int cli_http_download (cli_http *h, const char *path, int fd, ps_error **err);

/* One part of a multipart/form-data body: in memory (`data`, `len`) when
   fd < 0, else read from `fd` (owned by the caller, read from offset 0
   while the request is sent) for `size` bytes. */
struct cli_http_part
{
  const char *name;
  const char *content_type;
  const char *filename; /* NULL = a plain field */
  const char *data;
  size_t len;
  int fd;
  uint64_t size;
};

/* Called for each line of a streamed answer, without its '\n'.  `line`
   belongs to the caller of the callback and is valid during the call only.
   Return < 0 to stop the transfer (keep the reason in `ud`). */
typedef int (*cli_http_line_fn) (const char *line, size_t len, void *ud);
/* Called every CLI_TICK_MS at most, and after each piece of data. */
typedef void (*cli_http_tick_fn) (void *ud);

struct cli_http_stream
{
  cli_http_line_fn on_line;
  cli_http_tick_fn on_tick; /* may be NULL */
  void *ud;
  char *solve_ref; /* out: the Podsolve-Solve-Ref header (free it), or NULL */
};

/* A request whose 2xx answer is a line stream (NDJSON), delivered line by
   line as it arrives.  `parts` (may be NULL) become a multipart body.
   Returns 0 when the daemon ended the stream.  When on_line stopped the
   transfer the result is -1 with *err unset: the caller holds the reason.
   When cli_interrupted stopped it, -1 and *err says so. */
int cli_http_stream (cli_http *h, const char *method, const char *path, const struct cli_http_part *parts,
                     size_t n_parts, struct cli_http_stream *s, ps_error **err);

#endif
