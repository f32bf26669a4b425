/* tunnel.h — Control.Session (BuildKit's grpchijack): a session's byte
 * stream carried inside a gRPC call.  The client (buildx, buildctl)
 * streams moby.buildkit.v1.BytesMessage both ways; their data, in order,
 * is the session's HTTP/2 connection, on which the client is the server
 * and podsolved the client — exactly as after POST /session.  One end of a
 * socketpair goes to the session code (session_serve_upgraded), the other
 * is pumped to and from the call's messages here.
 *
 * The messages are cut wherever the client's writes fell: the session
 * must see the same bytes however they were split, and nothing after a
 * message that is not a BytesMessage (the tunnel ends there). */
#ifndef SESSION_TUNNEL_H
#define SESSION_TUNNEL_H

#include "session/grpc.h"

/* Pump between `call` (server side) and `fd` (a connected stream socket)
   until one side ends: the data of each BytesMessage the client sends is
   written to fd, what fd gives is sent as BytesMessages of at most 64 KiB.
   Returns once the client half-closes, the call dies, a message is not a
   BytesMessage, or fd's peer ends; fd is shut down both ways by then (the
   peer sees EOF) and stays the caller's to close.  The call is not
   finished. */
void session_tunnel_pump (grpc_call *call, int fd);

/* The whole of Control.Session on a server call: the session's identity
   from the call's metadata (x-docker-expose-session-uuid, -name,
   -sharedkey, -grpc-method: INVALID_ARGUMENT when session_info_validate
   refuses it, ALREADY_EXISTS for a live uuid), the session started on a
   socketpair, the pump, then the call finished (OK, or CANCELLED when the
   client cancelled). */
void session_tunnel_serve (grpc_call *call);

#endif
