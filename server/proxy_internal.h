/* proxy_internal.h — what the pass-through's files share (proxy.c: the
 * handler and ordinary requests; proxy_hijack.c: upgrade requests;
 * upstream.c: buffered calls).  Private to server/. */
#ifndef SERVER_PROXY_INTERNAL_H
#define SERVER_PROXY_INTERNAL_H

#include <curl/curl.h>
#include <stdatomic.h>

#include "server/proxy.h"
#include "server/http1.h"
#include "server/upstream.h"

/* Set by proxy_shutdown: proxied streams and relays end. */
extern atomic_bool proxy_stopping;

/* ---- the per-request state ---------------------------------------------------- */

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

struct header_walk
{
  struct proxy *p;
  const char *connection;
  bool hijack;
  bool saw_accept, saw_host;
  ps_buf *raw_head; /* MODE_HIJACK: the head being written */
};

/* http_request_foreach_header's callback: the request's headers for the
   upstream (curl's list, or the hijack's raw head). */
void proxy_collect_request_header (void *cls, const char *key, const char *value);

/* True when the client's socket hung up. */
bool proxy_client_gone (int fd);
/* The 502 (or 503 while stopping) for an upstream that could not be used. */
int proxy_upstream_failed (struct proxy *p, const char *doing, ps_error **err);
/* Queue the upstream's answer as its head says, the body read by `reader`. */
int proxy_queue_upstream_answer (struct proxy *p, struct ps_request *req, http_stream_read_fn reader,
                                 ps_error **err);

/* Upgrade requests (proxy_hijack.c): the handler's three steps. */
int proxy_hijack_begin (struct proxy *p, struct ps_request *req, ps_error **err);
int proxy_hijack_body (struct proxy *p, const char *data, size_t len, ps_error **err);
int proxy_hijack_complete (struct proxy *p, struct ps_request *req, ps_error **err);

#endif
