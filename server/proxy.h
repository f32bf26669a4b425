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
 * Also here: small buffered calls to the upstream (for merging /_ping,
 * /version and /info) and the --spawn-upstream child. */
#ifndef SERVER_PROXY_H
#define SERVER_PROXY_H

#include "server/http.h"

/* Connecting to a local socket is instant unless the service is wedged;
   two seconds tells a user "it is down" long before they give up. */
#define PS_PROXY_CONNECT_TIMEOUT_MS 2000

/* Whole-request bounds for the small calls that merge the system
   endpoints: a hung upstream must not stall every `docker` command (each
   pings first; Podman answers a ping in a millisecond), while /version and
   /info make Podman run conmon and the runtime (a few hundred ms). */
#define PS_PROXY_PING_TIMEOUT_MS 1000
#define PS_PROXY_MERGE_TIMEOUT_MS 5000

/* Response bytes read ahead from the upstream before the client takes
   them; beyond this the transfer is paused (backpressure). */
#define PS_PROXY_BUFFER (256 * 1024)

/* Bytes per direction in flight on an upgraded (attach/exec) relay. */
#define PS_PROXY_RELAY_BUFFER (64 * 1024)

/* Largest response head we parse ourselves (hijacked requests only; curl
   parses the others).  Podman's hijack heads are a few hundred bytes. */
#define PS_PROXY_MAX_HEAD (64 * 1024)

/* Largest upstream body the merge calls read (/info is a few KiB). */
#define PS_PROXY_MAX_MERGE_BODY (4 * 1024 * 1024)

/* How long the spawned Podman service may take to open its socket, and
   how long it gets after SIGTERM before SIGKILL. */
#define PS_UPSTREAM_START_TIMEOUT_MS 20000
#define PS_UPSTREAM_STOP_GRACE_MS 10000

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

/* ---- buffered calls, for merging the system endpoints ------------------- */

struct ps_upstream_reply
{
  long status;
  ps_strv headers; /* name, value, name, value, ... (NULL-terminated) */
  ps_buf body;
};

/* `method` "GET" or "HEAD", `path` as sent to the upstream ("/v1.41/version").
   Returns 0 with *out filled (any status), or -1 when the upstream cannot
   be reached within timeout_ms or answers garbage. */
int upstream_fetch (const char *method, const char *path, long timeout_ms, struct ps_upstream_reply *out,
                       ps_error **err);
const char *upstream_reply_header (const struct ps_upstream_reply *r, const char *name);
void upstream_reply_free (struct ps_upstream_reply *r);

/* ---- --spawn-upstream --------------------------------------------------- */

/* Start `podman system service --time=0 unix://PATH` on ps_cfg.upstream
   and a thread that restarts it if it dies. */
int upstream_spawn_start (ps_error **err);
/* Wait until the spawned service's socket accepts, at most
   PS_UPSTREAM_START_TIMEOUT_MS (then warn and go on: builds do not need
   it).  No-op without --spawn-upstream. */
void upstream_spawn_wait_ready (void);
/* SIGTERM the child, SIGKILL after PS_UPSTREAM_STOP_GRACE_MS, reap it. */
void upstream_spawn_stop (void);

#endif
