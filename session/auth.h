/* auth.h — registry credentials from the client's session
 * (/moby.filesync.v1.Auth/Credentials, buildkit-protocols.md §4.1).
 *
 * The docker CLI answers from its config.json / credential helpers, so a
 * build can pull from and push to registries the user logged in to,
 * without the credentials ever being stored by the daemon. */
#ifndef SESSION_AUTH_H
#define SESSION_AUTH_H

#include "session/session.h"

/* Ask the client for credentials for registry host `host` (the API host,
   "registry-1.docker.io" for Docker Hub).  Returns 1 with *user and *secret
   (malloc'd; *user may be "" when *secret is an identity token), 0 when
   there are none (method not exposed, UNIMPLEMENTED, or the client answered
   with empty strings = anonymous), -1 with *err on failure. */
int session_auth_credentials (ps_session *s, const char *host, char **user, char **secret, ps_error **err);

#endif
