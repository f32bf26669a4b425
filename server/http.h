/* http.h — the glue between libmicrohttpd and podsolve's handlers.
 *
 * MHD runs one thread per connection, so a handler may block (a build
 * stream waits on its job's event log).  A request goes through:
 *   route match -> handler->on_begin (headers and query known, no body yet)
 *   -> handler->on_body for each upload chunk -> handler->on_complete,
 * and exactly one response is queued.  An error in on_begin is answered
 * at once (MHD may queue a response before the body); an error in on_body
 * is kept, the rest of the body discarded, and answered when it ends (MHD
 * cannot queue a response in the middle of a body). */
#ifndef SERVER_HTTP_H
#define SERVER_HTTP_H

#include <stdint.h>
#include <sys/types.h>

#include "common/ps.h"

struct ps_request;
struct MHD_Connection;
struct MHD_Daemon;

/* Handler callbacks.  Each returns 0, or -1 with *err set; on -1 the glue
   answers with Podman's error body and status err->status. */
struct ps_handler
{
  int (*on_begin) (struct ps_request *req, ps_error **err);
  int (*on_body) (struct ps_request *req, const char *data, size_t len, ps_error **err);
  int (*on_complete) (struct ps_request *req, ps_error **err);
};

struct ps_request
{
  struct MHD_Connection *conn;
  const char *method;
  const char *url;        /* as received, without the query */
  const char *path;       /* version prefix removed: "/build", "/libpod/build" */
  bool libpod;            /* the path is under /libpod/ */
  const char *params[4];  /* {name} captures of the route pattern */
  size_t n_params;
  const struct ps_handler *handler;

  /* Handler-owned state, freed with state_free when the request ends. */
  void *state;
  void (*state_free) (void *state);

  bool responded;
  ps_error *body_error;   /* set while reading the body; answered once it ends */
  uint64_t body_bytes;
  int64_t started_ns;
  unsigned status;        /* for the access log */
};

/* Query and header access. */
const char *http_request_header (struct ps_request *req, const char *name);
/* Every request header in order, repeats included; `value` may be NULL.
   The strings belong to MHD and live as long as the request. */
void http_request_foreach_header (struct ps_request *req,
                                  void (*fn) (void *ud, const char *name, const char *value), void *ud);
const char *http_request_query (struct ps_request *req, const char *name);
/* Every query parameter in order, repeats included.  The strings belong to
   MHD and live as long as the request. */
void http_request_query_all (struct ps_request *req, struct ps_kv_list *out);

/* The client socket, for noticing a disconnect while a stream is idle. */
int http_request_fd (struct ps_request *req);
bool http_request_client_gone (struct ps_request *req);

/* Responses.  Every response carries the API headers (Api-Version,
   Libpod-Api-Version, Server).  `extra` is NULL or a NULL-terminated list
   of name, value pairs. */
int http_respond (struct ps_request *req, unsigned status, const char *content_type, const char *body,
                size_t len, const char *const *extra);
int http_respond_json (struct ps_request *req, unsigned status, const char *json);
/* Podman's error body {"cause","message","response"}. */
int http_respond_error (struct ps_request *req, unsigned status, const char *message);
/* The same with more headers (`extra` as for http_respond), e.g. a 405's Allow. */
int http_respond_error_with (struct ps_request *req, unsigned status, const char *message,
                             const char *const *extra);

/* A streaming (chunked) response.  `read` is called on the connection's
   thread whenever MHD can send more, and may block; it returns bytes
   written to buf (at most `max`; 0 = none yet, ask again), or
   HTTP_STREAM_END / HTTP_STREAM_ERROR to finish (the error cuts the stream
   short, which is what tells the client).  `done` runs when the response is
   released (the stream ended or the client went away); it owns `cls`. */
typedef ssize_t (*http_stream_read_fn) (void *cls, uint64_t pos, char *buf, size_t max);
typedef void (*http_stream_done_fn) (void *cls);
#define HTTP_STREAM_END ((ssize_t) -1)
#define HTTP_STREAM_ERROR ((ssize_t) -2)
int http_respond_stream (struct ps_request *req, unsigned status, const char *content_type,
                       const char *const *extra, http_stream_read_fn read, void *cls,
                       http_stream_done_fn done);

/* Connection upgrades (101 Switching Protocols).  The answer carries
   "Connection: Upgrade", then `extra` (NULL, or a NULL-terminated list of
   name, value pairs; never Connection), then "Upgrade: <protocol>" unless
   `protocol` is NULL (when `extra` names it); no API headers.  Once the
   101 is out, `fn` runs on the connection's thread with the client socket
   `fd` (read and write it, never close it), the bytes the client sent past
   its request head, and a handle `u` for http_upgraded_close.  With TLS
   the connection's thread relays the socket's bytes, so `fn` must hand
   long work to a thread of its own and return.  `ud` must live until then
   (req->state does: the request is freed only after the upgraded
   connection is closed).  Errors: 500 when the 101 cannot be queued. */
struct http_upgraded;
typedef void (*http_upgraded_fn) (void *ud, int fd, const char *extra_in, size_t extra_in_size,
                                  struct http_upgraded *u);
int http_respond_upgrade (struct ps_request *req, const char *protocol, const char *const *extra,
                          http_upgraded_fn fn, void *ud, ps_error **err);
/* Done with an upgraded connection: MHD closes the socket and frees the
   request.  Exactly once per upgrade, from any thread. */
void http_upgraded_close (struct http_upgraded *u);
/* Send what is written at once (TCP_CORK off), for an interactive relay. */
void http_upgraded_uncork (struct http_upgraded *u);

/* True when the comma-separated header value (Connection,
   Transfer-Encoding, ...) lists `token`, compared in any case. */
bool http_header_has_token (const char *value, const char *token);

/* TLS for one listener: PEM texts (the key stays in memory only). */
struct ps_tls
{
  char *cert;
  char *key;
  char *ca;    /* client CA, or NULL */
  bool verify; /* require a client certificate signed by `ca` */
};

/* Where requests go, set once by main before the first http_start: the
   route table (`lookup`: our handler or NULL; `allowed_methods`: for a
   path that is ours with some method, those methods ("GET, POST", freed by
   the caller; another method is a 405 carrying them as Allow), else NULL),
   and the fallback for everything else (the pass-through to the Podman
   service: `fallback` returns its handler or NULL when there is none;
   `fallback_owns` and `fallback_bytes` feed the access log).  The server
   floor's glue knows neither the routes nor the proxy: main wires them. */
struct http_dispatch
{
  const struct ps_handler *(*lookup) (struct ps_request *req);
  char *(*allowed_methods) (const char *url);
  const struct ps_handler *(*fallback) (struct ps_request *req, const char *target);
  bool (*fallback_owns) (const struct ps_request *req);
  void (*fallback_bytes) (const struct ps_request *req, uint64_t *in, uint64_t *out);
};
void http_set_dispatch (const struct http_dispatch *d);

/* The connection rules of one listener (http.c, "Slots"). */
struct http_limits
{
  unsigned max_connections; /* open at once; a connection past it with none idle gets a 503 */
  unsigned max_per_peer;    /* of one peer (TCP address, unix peer uid); 0 = no share */
  unsigned header_timeout_s; /* an idle connection (no request in progress) is closed after it; 0 = never */
};

/* Start one MHD daemon per listening fd; `tls` NULL = plain HTTP. */
struct MHD_Daemon *http_start (int listen_fd, const struct http_limits *limits, const struct ps_tls *tls,
                                  ps_error **err);
/* MHD_stop_daemon, and free what http_start kept for the listener. */
void http_stop (struct MHD_Daemon *d);

#endif
