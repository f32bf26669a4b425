/* session.h — one /session connection from a BuildKit client (docker CLI
 * 20.10, buildx): its identity, the gRPC methods it serves, the HTTP/2
 * client we run on its socket, and the registry builds use to find it.
 *
 * Life of a session (buildkit-protocols.md §2, §10.1):
 *   handlers/session.c validates POST /session, answers 101, then on the
 *   connection's thread hands the socket to session_serve_upgraded:
 *   session_new (fd, headers) -> session_registry_add -> on the session's
 *   own thread, session_run (blocks: the I/O loop) -> release the socket ->
 *   session_registry_remove -> session_unref.
 *   Meanwhile build jobs session_wait() for the uuid their
 *   request names and make calls (session_diffcopy, session_auth_credentials,
 *   session_get_secret, session_health_check) from their own threads. */
#ifndef SESSION_SESSION_H
#define SESSION_SESSION_H

#include "common/ps.h"
#include "session/grpc.h"

typedef struct ps_session ps_session;

/* What the client said about itself in the /session request headers. */
struct session_info
{
  const char *uuid;       /* X-Docker-Expose-Session-Uuid (required) */
  const char *shared_key; /* X-Docker-Expose-Session-Sharedkey ("" if absent) */
  const char *name;       /* X-Docker-Expose-Session-Name ("" if absent) */
  const char *const *methods; /* every X-Docker-Expose-Session-Grpc-Method */
  size_t n_methods;
};

/* Check the identity headers (uuid present and sane, method paths
   well-formed, not too many).  400 with a message on failure. */
int session_info_validate (const struct session_info *info, ps_error **err);

/* A session on a connected socket (after the 101).  `extra_in`: bytes
   already read past the HTTP head.  The fd stays owned by the caller. */
ps_session *session_new (int fd, const void *extra_in, size_t extra_len, const struct session_info *info,
                         ps_error **err);

/* Serve a connection just upgraded by POST /session ("101 Switching
   Protocols", Upgrade: h2c): a session on `fd` (`extra_in`: bytes already
   read past the HTTP head), registered under info->uuid and run on a
   thread of its own until the client hangs up; returns at once.
   `release (release_ud)` is called exactly once, when the socket is no
   longer used (at once when the session cannot start or its uuid is live
   already: those are logged, the 101 being out). */
void session_serve_upgraded (int fd, const void *extra_in, size_t extra_len, const struct session_info *info,
                             void (*release) (void *ud), void *release_ud);

/* Run the HTTP/2 client on the calling thread until the client closes the
   socket or session_close() is called.  0 on a clean end, -1 with *err when
   the connection failed.  The session is dead afterwards. */
int session_run (ps_session *s, ps_error **err);

/* Ask the session's I/O loop to end (any thread). */
void session_close (ps_session *s);

void session_ref (ps_session *s);
void session_unref (ps_session *s);

const char *session_uuid (const ps_session *s);
const char *session_shared_key (const ps_session *s);
const char *session_name (const ps_session *s);

/* True when the client listed `method` (a full path such as
   "/moby.filesync.v1.FileSync/DiffCopy"; compared case-insensitively, as
   moby does) in X-Docker-Expose-Session-Grpc-Method. */
bool session_has_method (const ps_session *s, const char *method);

/* False once the connection is gone (or going). */
bool session_alive (ps_session *s);

/* The session's gRPC connection, for calls (valid while a reference is held). */
grpc_conn *session_conn (ps_session *s);

/* Registry: uuid -> live session.  A session is registered between
   session_registry_add and session_registry_remove; the registry holds a
   reference meanwhile. */
int session_registry_add (ps_session *s, ps_error **err); /* 400 if the uuid is live already */
void session_registry_remove (ps_session *s);
/* True if a live session has this uuid now. */
bool session_registry_has (const char *uuid);
/* Wait up to timeout_ms for a live session with this uuid; returns it with
   a reference (session_unref when done), or NULL with *err (404). */
ps_session *session_wait (const char *uuid, int timeout_ms, ps_error **err);

/* Daemon shutdown: refuse new sessions, ask every live one to close, and
   wait up to timeout_ms until all have left the registry.  Call before
   MHD_stop_daemon: MHD (0.9.75, thread-per-connection) would otherwise
   wait on each upgraded connection's thread for as long as its client
   keeps the session open.  Returns the number still live at the timeout. */
size_t session_registry_shutdown (int timeout_ms);

/* Claims: a build holds one on the session it names (by uuid, connected
   yet or not) from its request to its end.  A session without claims and
   with no call open is closed after the idle timeout. */
void session_claim (const char *uuid);
void session_unclaim (const char *uuid);

/* The idle timeout for sessions started from now on (--session-idle-timeout);
   0 = never. */
void session_set_idle_timeout (int ms);

/* grpc.health.v1.Health/Check: 0 when the client answers SERVING, -1 with
   *err otherwise (not exposed, NOT_SERVING, timeout, gone). */
int session_health_check (ps_session *s, int timeout_ms, ps_error **err);

#endif
