/* grpc.h — gRPC (client and server) over HTTP/2 (libnghttp2) on an already
 * connected socket.
 *
 * On /session the roles are reversed (buildkit-protocols.md §2.3): after the
 * HTTP/1.1 101 the daemon is the HTTP/2 *client* and calls the services
 * the docker CLI / buildx serve (FileSync, Auth, Secrets, Health...).
 *
 * Threading: one I/O thread per connection runs grpc_conn_run(); it owns
 * the nghttp2 session and the socket and is the only thread that touches
 * either.  Any other thread (a build job) makes calls through the grpc_call_*
 * functions, which are thread safe: they queue work for the I/O thread and
 * wake it through an eventfd, then wait on the call's condition variable.
 * When the socket closes or the peer breaks the protocol, the connection is
 * marked dead and every call in flight fails with the reason.
 *
 * Wire shape (§1): HEADERS :method POST, :scheme http, :path, :authority
 * localhost, content-type application/grpc, te trailers, user metadata;
 * messages framed as flag(1) | length(4, big endian) | bytes on DATA
 * frames; the answer ends with trailers (or is trailers-only) carrying
 * grpc-status and a percent-encoded grpc-message. */
#ifndef SESSION_GRPC_H
#define SESSION_GRPC_H

#include "common/ps.h"

typedef struct grpc_conn grpc_conn;
typedef struct grpc_call grpc_call;

/* gRPC status codes (§1). */
enum grpc_status
{
  GRPC_STATUS_OK = 0,
  GRPC_STATUS_CANCELLED = 1,
  GRPC_STATUS_UNKNOWN = 2,
  GRPC_STATUS_INVALID_ARGUMENT = 3,
  GRPC_STATUS_DEADLINE_EXCEEDED = 4,
  GRPC_STATUS_NOT_FOUND = 5,
  GRPC_STATUS_ALREADY_EXISTS = 6,
  GRPC_STATUS_PERMISSION_DENIED = 7,
  GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
  GRPC_STATUS_FAILED_PRECONDITION = 9,
  GRPC_STATUS_ABORTED = 10,
  GRPC_STATUS_OUT_OF_RANGE = 11,
  GRPC_STATUS_UNIMPLEMENTED = 12,
  GRPC_STATUS_INTERNAL = 13,
  GRPC_STATUS_UNAVAILABLE = 14,
  GRPC_STATUS_DATA_LOSS = 15,
  GRPC_STATUS_UNAUTHENTICATED = 16,
};

/* "UNIMPLEMENTED" for 12; "?" for a code outside the table. */
const char *grpc_status_name (int code);

/* One metadata entry of a call.  Keys are lower case ASCII; a key may
   repeat (one header field per value). */
struct grpc_metadata
{
  const char *key;
  const char *value;
};

/* Create a client connection on `fd` (a connected stream socket; made
   non-blocking).  `extra_in` are bytes already read from the socket after
   the HTTP/1.1 head (MHD hands them over); they are fed to HTTP/2 first.
   `label` names the connection in logs and errors (a session id).  The fd
   stays owned by the caller: grpc_conn_free does not close it. */
grpc_conn *grpc_conn_new (int fd, const void *extra_in, size_t extra_len, const char *label, ps_error **err);

/* Run the I/O loop on the calling thread: send the client preface and
   SETTINGS, then serve calls until the peer closes the socket, the
   connection fails, or grpc_conn_shutdown() is called.  Returns 0 when the
   peer closed cleanly or we were asked to stop, -1 with *err on a
   transport or protocol failure.  Either way the connection is dead on
   return and every pending call has failed. */
int grpc_conn_run (grpc_conn *c, ps_error **err);

/* Idle policy, set before grpc_conn_run: once no call has been open for
   `idle_ms`, the I/O loop asks `may_close` (on its thread; keep it cheap):
   true ends the connection as grpc_conn_shutdown does, its dead reason
   saying "closed by the daemon: idle for N s: <why>"; false asks again
   after another `idle_ms`.  idle_ms <= 0: never. */
void grpc_conn_set_idle (grpc_conn *c, int idle_ms, bool (*may_close) (void *ud), void *ud, const char *why);

/* Ask the I/O loop to end (GOAWAY, then stop).  Any thread; returns at once. */
void grpc_conn_shutdown (grpc_conn *c);

/* False once the connection is dead (or shutting down). */
bool grpc_conn_alive (grpc_conn *c);

/* Why the connection died ("connection closed by peer", ...), or NULL
   while alive.  The string is a copy the caller frees. */
char *grpc_conn_dead_reason (grpc_conn *c);

/* Free a connection whose grpc_conn_run has returned (or never ran).  Calls
   still referenced by other threads keep working on the dead connection
   (they fail) until freed. */
void grpc_conn_free (grpc_conn *c);

/* Start a call.  `path` is the full method, "/moby.filesync.v1.FileSync/DiffCopy".
   Returns at once (the I/O thread opens the stream); NULL with *err when the
   connection is dead or going away.  Any thread. */
grpc_call *grpc_call_start (grpc_conn *c, const char *path, const struct grpc_metadata *md, size_t n_md,
                            ps_error **err);

/* Queue one message (framed here).  Blocks while more than
   PS_GRPC_SEND_BUFFER bytes wait to be sent (at most PS_GRPC_SEND_STALL_MS
   without progress).  -1 with *err when the call has ended, was cancelled,
   or send was closed. */
int grpc_call_send (grpc_call *call, const void *msg, size_t len, ps_error **err);

/* Half-close: END_STREAM after the queued messages. */
int grpc_call_close_send (grpc_call *call, ps_error **err);

/* Wait up to timeout_ms until every queued message (and the half-close, if
   requested) has been handed to HTTP/2, so a following cancel cannot
   overtake it.  True when flushed; false on timeout or when the call or
   connection ended first. */
bool grpc_call_flush (grpc_call *call, int timeout_ms);

/* Wait up to timeout_ms (< 0: forever) for the next message.
   Returns 1 with *msg (malloc'd, caller frees; NUL-terminated for
   convenience, *len excludes it), 0 when the call ended with grpc-status 0
   and no message is left, -1 with *err otherwise (non-OK status, transport
   failure, cancellation, timeout: see grpc_call_status for which). */
int grpc_call_recv (grpc_call *call, void **msg, size_t *len, int timeout_ms, ps_error **err);

/* The call's grpc-status once known (trailers received or a local failure
   mapped to a code: RESOURCE_EXHAUSTED for an oversize message, CANCELLED,
   DEADLINE_EXCEEDED for a recv timeout, UNAVAILABLE for a dead connection);
   -1 while the call is running. */
int grpc_call_status (grpc_call *call);

/* Cancel: RST_STREAM(CANCEL); pending and later recv/send fail.  Any thread. */
void grpc_call_cancel (grpc_call *call);

/* Release the call; cancels it first when it has not ended. */
void grpc_call_free (grpc_call *call);

/* "FileSync/DiffCopy" for "/moby.filesync.v1.FileSync/DiffCopy": the
   short name used in error messages.  Returns a pointer into `path` or a
   static string. */
const char *grpc_method_label (const char *path, char *buf, size_t buflen);

/* A unary call: one request, one response.  Returns 0 with *resp
   (malloc'd) or -1 with *err; *status_out (optional) gets the grpc-status
   (or -1 when the call failed below gRPC). */
int grpc_unary (grpc_conn *c, const char *path, const struct grpc_metadata *md, size_t n_md, const void *req,
                size_t req_len, void **resp, size_t *resp_len, int timeout_ms, int *status_out, ps_error **err);

/* gRPC message framing over the DATA bytes of one stream (§1): each
   message is flag(1) | length(4, big endian) | payload, and the peer may
   split it across DATA frames at any byte.  The connection's DATA callback
   feeds every chunk of a call here; it is public for the unit tests and
   tests/fuzz/fuzz_grpc_reassembly.c. */
struct grpc_reassembly
{
  ps_buf partial; /* prefix + payload of the message being reassembled */
  size_t want;    /* that message's total bytes once its prefix is known, else 0 */
  size_t max;     /* largest payload accepted; 0: PS_GRPC_MAX_MESSAGE */
};

/* Called once per complete message, in stream order.  `msg` points into
   the reassembly's buffer (len bytes; no terminator): valid during the
   call only, copy what you keep. */
typedef void (*grpc_message_fn) (void *ud, const void *msg, size_t len);

/* Consume one chunk of DATA.  Returns 0 when all of it was taken: complete
   messages went to on_message, the rest is kept for the next chunk.  A
   prefix we refuse ends the stream: the compressed flag set (INTERNAL: no
   compression is ever negotiated) or a length over r->max
   (RESOURCE_EXHAUSTED, refused before a byte of the payload is buffered).
   Then the return value is that gRPC status, *err says why, *dropped (may
   be NULL) counts the bytes that will never form a message (the refused
   message's bytes of earlier chunks and all of this chunk from its prefix
   on), and the reassembly is empty; do not feed it again. */
int grpc_reassemble (struct grpc_reassembly *r, const void *data, size_t len, grpc_message_fn on_message, void *ud,
                     size_t *dropped, ps_error **err);

/* Bytes held of an incomplete message (0 between messages). */
size_t grpc_reassembly_pending (const struct grpc_reassembly *r);

void grpc_reassembly_free (struct grpc_reassembly *r);

/* Percent-decode a grpc-message value (§1); malloc'd. */
char *grpc_percent_decode (const char *s, size_t len);

/* Percent-encode a grpc-message value (§1): bytes outside 0x20..0x7e and
   '%' become %XX; malloc'd. */
char *grpc_percent_encode (const char *s);

/* Map a gRPC status to the HTTP status a ps_error carries. */
int grpc_status_http (int code);

/* ---- server side ----------------------------------------------------------
 *
 * On POST /grpc (after the 101) and on --buildkit-listen connections the
 * daemon is the HTTP/2 *server*: BuildKit clients (buildx, buildctl) call
 * Control, LLBBridge, Health... on us.  Same framing, the same 16 MiB limit
 * each way (RESOURCE_EXHAUSTED beyond), the same grpc_call_recv /
 * grpc_call_send on a server call as on a client call. */

/* A method handler runs on a thread of its own, one per call (calls may
   block for as long as they like: Control.Solve waits for LLBBridge.Return
   on another stream).  It reads the request message(s) with grpc_call_recv,
   sends responses with grpc_call_send, and must end the call exactly once
   with grpc_call_finish.  The call is freed by the layer after the handler
   returns. */
typedef void (*grpc_method_fn) (grpc_call *call, void *ud);

struct grpc_method
{
  const char *path; /* "/moby.buildkit.v1.Control/ListWorkers" */
  grpc_method_fn fn;
  void *ud;
};

struct grpc_service_table
{
  const struct grpc_method *methods;
  size_t n;
};

/* Serve gRPC on `fd` (already connected; after the 101 of /grpc, or an
   accepted --buildkit-listen connection): HTTP/2 server, prior knowledge,
   `extra_in` = bytes already read.  Runs the I/O loop on the calling thread
   until the peer goes away; unknown methods get UNIMPLEMENTED.  Closes
   nothing it does not own (fd stays the caller's). */
int grpc_serve (int fd, const void *extra_in, size_t extra_len, const char *label,
                const struct grpc_service_table *services, ps_error **err);

/* The byte stream of a connection when it is not the socket itself: TLS
   (session/grpc_tls.h) on --buildkit-listen tcp://.  The I/O loop still
   polls the socket, and the callbacks run on its thread only.  `ud` is
   theirs and outlives the connection (the caller frees it after
   grpc_serve_transport returns). */
struct grpc_transport
{
  /* As read(2) and send(2) on the non-blocking socket: the bytes moved, 0
     at the end of the stream (read), or -1 with errno: EAGAIN to be
     retried once the socket is ready for *wait (set to POLLIN or POLLOUT:
     TLS may have to write to read, or read to write), ECONNRESET or EPIPE
     when the peer went away, anything else a failure.  A write retried
     after EAGAIN is given the same bytes again (perhaps followed by more;
     the buffer may have moved). */
  ssize_t (*read) (void *ud, void *buf, size_t len, short *wait);
  ssize_t (*write) (void *ud, const void *buf, size_t len, short *wait);
  /* True when bytes already taken off the socket wait to be read: the
     socket will not poll readable for them. */
  bool (*pending) (void *ud);
  void *ud;
};

/* grpc_serve with the bytes going through `transport`. */
int grpc_serve_transport (int fd, const struct grpc_transport *transport, const char *label,
                          const struct grpc_service_table *services, ps_error **err);

/* grpc_serve (nothing read yet) for a connection that belongs to one
   thing, `tag` (copied): its calls find it with grpc_call_tag.  A frontend
   container's stdio is such a connection: its LLBBridge calls carry no
   build id, the connection is the build's. */
int grpc_serve_tagged (int fd, const char *label, const struct grpc_service_table *services, const char *tag,
                       ps_error **err);

/* At daemon shutdown: no new grpc_serve starts; those running say GOAWAY
   and end (their calls are cancelled).  Waits up to grace_ms for them. */
void grpc_serve_shutdown (int grace_ms);

/* Handler threads running now, all connections together (tests and the
   fuzz target wait for 0 before they check for leaks). */
size_t grpc_server_handlers_running (void);

/* Server-side calls (inside a handler): */
const char *grpc_call_path (grpc_call *call);
/* The first value of request metadata `key` (lower case), or NULL. */
const char *grpc_call_metadata (grpc_call *call, const char *key);
/* The tag of the call's connection (grpc_serve_tagged), or NULL. */
const char *grpc_call_tag (grpc_call *call);
/* Every value of `key`, in order: returns the count, *values borrowed. */
size_t grpc_call_metadata_all (grpc_call *call, const char *key, const char ***values);
/* End the call: trailers grpc-status (+ grpc-message when non-OK,
   percent-encoded); trailers-only when nothing was sent yet.  Idempotent
   after the first. */
void grpc_call_finish (grpc_call *call, int status, const char *fmt, ...) PS_PRINTF (3, 4);
/* Shorthand for handlers: map a ps_error's HTTP status to a gRPC status
   (400->INVALID_ARGUMENT, 404->NOT_FOUND, 409->FAILED_PRECONDITION/ALREADY_EXISTS,
   413->RESOURCE_EXHAUSTED, 499->CANCELLED, 501->UNIMPLEMENTED, 503->UNAVAILABLE,
   else INTERNAL) and finish with its message. */
void grpc_call_finish_error (grpc_call *call, const ps_error *err);
/* The client cancelled (RST_STREAM) or the connection died: a long handler
   polls this (or sees grpc_call_send/recv fail) and stops.  (Server calls;
   grpc_call_start's calls use grpc_call_status.) */
bool grpc_call_cancelled (grpc_call *call);
/* Unary convenience: receive exactly one request message (recv until END_STREAM),
   INVALID_ARGUMENT if none. */
int grpc_call_recv_one (grpc_call *call, void **msg, size_t *len, ps_error **err);
/* A unary handler's opening: grpc_call_recv_one, and when it fails the
   call is finished with the error (the handler just returns on -1). */
int grpc_call_recv_request (grpc_call *call, void **msg, size_t *len);

#endif
