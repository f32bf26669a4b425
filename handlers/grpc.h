/* grpc.h — BuildKit's gRPC API served by the daemon: POST /grpc (the
 * HTTP/1.1 upgrade to h2c, as dockerd serves buildx's docker driver) and
 * the raw --buildkit-listen sockets share one service table. */
#ifndef HANDLERS_GRPC_H
#define HANDLERS_GRPC_H

#include "server/http.h"
#include "session/grpc.h"

extern const struct ps_handler handler_grpc;

/* The service tables of the files that implement gRPC services; the
   table handlers/grpc.c serves concatenates them. */
extern const struct grpc_method grpc_control_methods[]; /* handlers/grpc_control.c */
extern const size_t grpc_control_n_methods;
extern const struct grpc_method grpc_bridge_methods[]; /* handlers/grpc_bridge.c */
extern const size_t grpc_bridge_n_methods;

/* Serve gRPC on a connected socket, on a thread of its own, with the whole
   service table; `release` runs once the connection is over (it closes
   the socket).  `origin` names the connection in logs ("/grpc",
   "unix:///run/buildkit.sock").  Returns at once. */
void handlers_grpc_serve (int fd, const void *extra_in, size_t extra_len, const char *origin,
                          void (*release) (void *ud), void *release_ud);

/* At daemon shutdown, before the HTTP daemons stop: grpc_serve_shutdown,
   then wait (within the same grace_ms) until every handlers_grpc_serve
   connection has run its `release` (for POST /grpc, MHD_upgrade_action,
   which must not come after MHD_stop_daemon). */
void handlers_grpc_shutdown (int grace_ms);

/* The same on the calling thread, returning when the connection is over
   (the socket stays the caller's), the bytes going through `transport`
   (TLS: session/grpc_tls.h; NULL: the socket itself). */
void handlers_grpc_serve_here (int fd, const struct grpc_transport *transport, const char *origin);

/* Serve LLBBridge to a gateway frontend over `fd` (its container's stdin
   and stdout) until it goes away, every call belonging to build
   `build_id` (solver/gateway_image.c; the hook gateway_set_bridge_server
   takes).  Returns NULL when the peer ended the connection cleanly, else
   what went wrong (malloc'd: it broke HTTP/2 or gRPC). */
char *handlers_grpc_serve_frontend (int fd, const char *build_id, const char *origin);

#endif
