/* upstream.h — the Podman API service every request podsolved does not
 * answer goes to ("the upstream", see proxy.h): small buffered calls to it
 * (for merging /_ping, /version and /info), and the --spawn-upstream
 * child. */
#ifndef SERVER_UPSTREAM_H
#define SERVER_UPSTREAM_H

#include "common/ps.h"

/* Connecting to a local socket is instant unless the service is wedged;
   two seconds tells a user "it is down" long before they give up. */
#define PS_PROXY_CONNECT_TIMEOUT_MS 2000

/* ---- buffered calls, for merging the system endpoints ------------------- */

/* Whole-request bounds for the small calls that merge the system
   endpoints: a hung upstream must not stall every `docker` command (each
   pings first; Podman answers a ping in a millisecond), while /version and
   /info make Podman run conmon and the runtime (a few hundred ms). */
#define PS_PROXY_PING_TIMEOUT_MS 1000
#define PS_PROXY_MERGE_TIMEOUT_MS 5000

/* How long podsolve keeps the upstream's answer to /version.  Podman runs
   conmon, the runtime and a dpkg-query per component for each answer (0.3 s
   on an idle 2-vCPU machine, over 1 s under load), docker buildx's docker
   driver asks before every build, and the answer changes only when the
   service is replaced.  Forgotten at once when the upstream fails to
   answer (a restart may bring another version). */
#define PS_UPSTREAM_VERSION_TTL_S 60

/* Largest upstream body the merge calls read (/info is a few KiB). */
#define PS_PROXY_MAX_MERGE_BODY (4 * 1024 * 1024)

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

/* How long the spawned Podman service may take to open its socket, and
   how long it gets after SIGTERM before SIGKILL. */
#define PS_UPSTREAM_START_TIMEOUT_MS 20000
#define PS_UPSTREAM_STOP_GRACE_MS 10000

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
