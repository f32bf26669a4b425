/* buildkit_listen.h — --buildkit-listen: sockets that speak BuildKit's
 * gRPC API directly (HTTP/2 with prior knowledge on unix://, over TLS
 * with ALPN h2 on tcp://, as buildkitd --addr), for buildx's remote
 * driver and buildctl. */
#ifndef SERVER_BUILDKIT_LISTEN_H
#define SERVER_BUILDKIT_LISTEN_H

#include "common/ps.h"

struct buildkit_listen_config
{
  const ps_strv *uris;      /* unix:///PATH, tcp://HOST:PORT */
  const char *group;        /* owner group of the unix sockets, NULL: ours */
  unsigned max_connections; /* per socket, handshakes included */
  /* TLS for every tcp:// socket (required for them; unused on unix ones):
     PEM files, as buildkitd's --tlscert, --tlskey, --tlscacert.  With a
     CA, clients must present a certificate it signed. */
  const char *tls_cert, *tls_key, *tls_ca;
};

/* Open every URI (unix:///PATH: mode 0660, owned by `group` when given;
   a stale socket file is replaced, a live one refused; tcp://: TLS, the
   files loaded first) and accept on each in a thread; every connection
   is served by handlers/grpc.c on a thread of its own.  At most
   `max_connections` at once per socket (more are closed at once). */
int buildkit_listen_start (const struct buildkit_listen_config *cfg, ps_error **err);

/* Stop accepting, end the TLS handshakes under way, close and unlink the
   sockets (connections being served end with grpc_serve_shutdown). */
void buildkit_listen_stop (void);

#endif
