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

#include <microhttpd.h>

#include "common/ps.h"

struct ps_request;

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

/* A streaming (chunked) response.  `read` is called on the connection's
   thread whenever MHD can send more, and may block; it returns bytes
   written to buf, 0 ... see MHD_ContentReaderCallback: MHD_CONTENT_READER_
   END_OF_STREAM or END_WITH_ERROR to finish.  `done` runs when the response
   is released (the stream ended or the client went away); it owns `cls`. */
int http_respond_stream (struct ps_request *req, unsigned status, const char *content_type,
                       const char *const *extra, MHD_ContentReaderCallback read, void *cls,
                       MHD_ContentReaderFreeCallback done);

/* TLS for one listener: PEM texts (the key stays in memory only). */
struct ps_tls
{
  char *cert;
  char *key;
  char *ca;    /* client CA, or NULL */
  bool verify; /* require a client certificate signed by `ca` */
};

/* Start one MHD daemon per listening fd; `tls` NULL = plain HTTP.  A
   connection over `max_connections` gets a 503 (Podman's error body) and
   is closed. */
struct MHD_Daemon *http_start (int listen_fd, unsigned max_connections, const struct ps_tls *tls,
                                  ps_error **err);
/* MHD_stop_daemon, and free what http_start kept for the listener. */
void http_stop (struct MHD_Daemon *d);

#endif
