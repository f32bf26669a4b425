/* sshforward.h — SSH agent forwarding from the client's session
 * (/moby.sshforward.v1.SSH, buildkit-protocols.md §4.3), for
 * RUN --mount=type=ssh and LLB ssh mounts.
 *
 * podsolved is the gRPC client: it asks CheckAgent{ID} whether the client
 * forwards an agent under that id (`docker buildx build --ssh ID[=SOCK]`),
 * then listens on a unix socket of its own; each connection made to that
 * socket (by buildah, or a process in the container the socket is bound
 * into) gets one ForwardAgent stream, with the id in the metadata key
 * buildkit.ssh.id, and the bytes are pumped both ways until either side
 * closes (BuildKit's session/sshforward/copy.go):
 *   socket EOF      -> CloseSend on the stream (the reply may still come);
 *   stream ended OK -> shutdown(SHUT_WR) of the connection;
 *   any failure     -> the stream is cancelled and the connection shut.
 *
 * Threads: one accept thread per forwarder; two per connection (socket ->
 * stream, stream -> socket), joined by the accept thread when the
 * connection ends and by session_ssh_forward_stop for those still open. */
#ifndef SESSION_SSHFORWARD_H
#define SESSION_SSHFORWARD_H

#include <sys/types.h>

#include "session/session.h"

/* The id a mount without id= names (sshforward.DefaultID). */
#define SESSION_SSH_DEFAULT_ID "default"

/* CheckAgent{id}: 0 when the client forwards an agent under `id`.  -1 with
   *err otherwise: status 404 and `no SSH key "<id>" forwarded from the
   client` (BuildKit's words; the client's own reason appended when it gave
   one, such as buildx's "unset ssh forward key <id>") when the client has
   none (SSH not exposed on the session, UNIMPLEMENTED, or CheckAgent
   refused); another status when the session itself failed. */
int session_ssh_check (ps_session *s, const char *id, ps_error **err);

/* The socket's owner and mode (an LLB SSHOpt's uid, gid, mode). */
struct session_ssh_socket
{
  uid_t uid;
  gid_t gid;
  mode_t mode; /* 0: 0600 */
};

typedef struct session_ssh_forward session_ssh_forward;

/* Listen on a new unix socket at `sock_path` (its directory must exist
   and be private to the build: nothing here creates or removes it) owned
   by opt's uid:gid with opt's mode, and forward every connection to the
   client's agent `id`.  The forwarder holds a reference on `s` until it is
   stopped.  NULL with *err when the socket cannot be made. */
session_ssh_forward *session_ssh_forward_start (ps_session *s, const char *id, const char *sock_path,
                                                const struct session_ssh_socket *opt, ps_error **err);

/* The socket's path. */
const char *session_ssh_forward_path (const session_ssh_forward *f);

/* Connections accepted so far (the tests read it). */
size_t session_ssh_forward_connections (session_ssh_forward *f);

/* Stop accepting, cancel every open stream, shut every connection, join
   every thread, remove the socket and free.  NULL is a no-op. */
void session_ssh_forward_stop (session_ssh_forward *f);

#endif
