/* grpc_tls.h — TLS (OpenSSL) under a gRPC server connection, as buildkitd
 * serves `--addr tcp://… --tlscert --tlskey [--tlscacert]`
 * (cmd/buildkitd/main.go serverCredentials): TLS 1.2 or later, ALPN "h2"
 * (grpc-go insists on it), and with a CA every client must present a
 * certificate it signed (mutual TLS; Go's RequireAndVerifyClientCert).
 *
 * The handshake runs first, bounded, on the connection's own thread; the
 * established connection is then a struct grpc_transport that
 * grpc_serve_transport runs the one gRPC layer (session/grpc.c) over. */
#ifndef SESSION_GRPC_TLS_H
#define SESSION_GRPC_TLS_H

#include "common/ps.h"
#include "session/grpc.h"

/* The server's side of TLS, shared by all its connections (any thread). */
typedef struct grpc_tls_server grpc_tls_server;

/* One accepted TLS connection; used by one thread at a time. */
typedef struct grpc_tls_conn grpc_tls_conn;

/* Load the server's certificate (PEM, the leaf first, then any
   intermediates) and its private key (PEM, unencrypted), checking that
   they belong together; with `ca_file` (PEM, one or more certificates)
   require client certificates signed by one of them.  NULL with *err
   naming the file and what is wrong with it. */
grpc_tls_server *grpc_tls_server_new (const char *cert_file, const char *key_file, const char *ca_file,
                                      ps_error **err);

/* Drop the caller's reference: connections still open keep what they use. */
void grpc_tls_server_free (grpc_tls_server *s);

/* Run the server's handshake on `fd` (a connected socket, made
   non-blocking).  Gives up after `timeout_ms`, or as soon as `wake_fd`
   (an eventfd, -1 for none) becomes readable (the daemon is stopping).
   NULL with *err when the client failed the handshake (no or a wrong
   certificate, no "h2" among its ALPN protocols, not TLS at all) or was
   too slow.  The fd stays the caller's. */
grpc_tls_conn *grpc_tls_accept (grpc_tls_server *s, int fd, int timeout_ms, int wake_fd, ps_error **err);

/* The established connection as the byte stream grpc_serve_transport
   reads and writes; valid until grpc_tls_close. */
const struct grpc_transport *grpc_tls_transport (grpc_tls_conn *t);

/* "TLSv1.3, client CN=…" (or "no client certificate"): for logs; malloc'd. */
char *grpc_tls_describe (grpc_tls_conn *t);

/* Say close_notify if the connection is still sound (without waiting for
   the socket), and free it.  The fd is not closed.  NULL is a no-op. */
void grpc_tls_close (grpc_tls_conn *t);

#endif
