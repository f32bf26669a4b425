/* session.h — the session `podsolve build --secret/--ssh` opens on the
 * daemon, the way the docker CLI and buildx do it: POST /session with
 * "Upgrade: h2c", then, after the 101, we are the HTTP/2 gRPC *server* on
 * that socket and the daemon calls us (buildkit-protocols.md §2.3):
 *
 *   /moby.buildkit.secrets.v1.Secrets/GetSecret   a --secret, read at call time
 *   /moby.sshforward.v1.SSH/CheckAgent            is there an agent for this id
 *   /moby.sshforward.v1.SSH/ForwardAgent          bytes to and from the agent
 *   /grpc.health.v1.Health/Check                  SERVING
 *
 * The /solve request then names the session ("session": uuid). */
#ifndef CLIENT_SESSION_H
#define CLIENT_SESSION_H

#include "common/ps.h"

/* --secret id=ID[,src=FILE|source=FILE][,env=VAR][,type=file|env], as
   buildx takes it.  Exactly one of file and env is set once parsed. */
struct cli_secret
{
  char *id;
  char *file;
  char *env;
};

/* --ssh ID[=PATH[,PATH...]]: PATH an agent socket, or private key files
   that a private ssh-agent is started for. */
struct cli_ssh
{
  char *id;
  ps_strv paths; /* empty: $SSH_AUTH_SOCK */
};

/* Parse one --secret; a missing file is an error here already. */
int cli_secret_parse (const char *spec, struct cli_secret *out, ps_error **err);
void cli_secret_free (struct cli_secret *s);

/* Parse one --ssh; $SSH_AUTH_SOCK is looked up here for an ID alone. */
int cli_ssh_parse (const char *spec, struct cli_ssh *out, ps_error **err);
void cli_ssh_free (struct cli_ssh *s);

typedef struct cli_session cli_session;

/* Check the sources (files readable, paths sockets or key files), start
   a private ssh-agent for key files, connect to `address` (unix:// or
   plain tcp://, http://; not TLS), POST /session and serve it on a thread
   of its own.  NULL with *err when any step fails. */
cli_session *cli_session_start (const char *address, const char *context, const struct cli_secret *secrets,
                                size_t n_secrets, const struct cli_ssh *ssh, size_t n_ssh, ps_error **err);

/* The X-Docker-Expose-Session-Uuid, for the SolveRequest. */
const char *cli_session_uuid (const cli_session *s);

/* End the session (the daemon sees the connection close), stop the
   private agents and free everything.  NULL is fine. */
void cli_session_close (cli_session *s);

#endif
