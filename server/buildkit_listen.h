/* buildkit_listen.h — --buildkit-listen: sockets that speak BuildKit's
 * gRPC API directly (HTTP/2 with prior knowledge, as buildkitd --addr),
 * for buildx's remote driver and buildctl. */
#ifndef SERVER_BUILDKIT_LISTEN_H
#define SERVER_BUILDKIT_LISTEN_H

#include "common/ps.h"

/* Open every URI (unix:///PATH: mode 0660, owned by `group` when given;
   a stale socket file is replaced, a live one refused) and accept on each
   in a thread; every connection is served by handlers/grpc.c.  At most
   `max_connections` at once per socket (more are closed at once). */
int buildkit_listen_start (const ps_strv *uris, const char *group, unsigned max_connections, ps_error **err);

/* Stop accepting, close and unlink the sockets (connections end with
   grpc_serve_shutdown). */
void buildkit_listen_stop (void);

#endif
