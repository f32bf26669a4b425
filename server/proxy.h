/* proxy.h — the pass-through to the Podman API service ("the upstream").
 *
 * podsolved answers the build routes itself; every request the route table
 * does not know goes, unchanged, to the upstream's unix socket: method,
 * request-target (version prefix and percent-encoding kept), end-to-end
 * headers and body, streamed both ways without buffering whole bodies.
 * Upgraded and hijacked connections (attach, exec start) are relayed byte
 * for byte after the upstream's response head.  A dead upstream costs the
 * one request that needed it a fast 502; nothing else waits on it.
 *
 * Small buffered calls to the upstream (for merging /_ping, /version and
 * /info) and the --spawn-upstream child: upstream.h. */
#ifndef SERVER_PROXY_H
#define SERVER_PROXY_H

#include "server/http.h"

/* Response bytes read ahead from the upstream before the client takes
   them; beyond this the transfer is paused (backpressure). */
#define PS_PROXY_BUFFER (256 * 1024)

/* Bytes per direction in flight on an upgraded (attach/exec) relay. */
#define PS_PROXY_RELAY_BUFFER (64 * 1024)

/* Largest response head we parse ourselves (hijacked requests only; curl
   parses the others).  Podman's hijack heads are a few hundred bytes. */
#define PS_PROXY_MAX_HEAD (64 * 1024)

/* Once, from main, before any thread starts. */
void proxy_global_init (void);

/* An upstream is configured (--upstream, or the per-user default). */
bool proxy_enabled (void);

/* The handler for a request no route matched, or NULL when no upstream is
   configured (the caller answers 404).  `target` is the request-target
   exactly as the client sent it (path and query, still percent-encoded);
   it is copied. */
const struct ps_handler *proxy_route (struct ps_request *req, const char *target);

/* For the access log: whether the request went upstream, and the bytes
   relayed beyond req->body_bytes (in: client to upstream after an
   upgrade; out: everything sent to the client). */
bool proxy_owns (const struct ps_request *req);
void proxy_bytes (const struct ps_request *req, uint64_t *in, uint64_t *out);

/* Shutting down: proxied streams and relays end within PS_STREAM_POLL_MS
   so MHD_stop_daemon does not wait on clients or the upstream. */
void proxy_shutdown (void);

#endif
