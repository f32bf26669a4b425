/* secrets.h — build secrets from the client's session
 * (/moby.buildkit.secrets.v1.Secrets/GetSecret, buildkit-protocols.md §4.2),
 * for RUN --mount=type=secret. */
#ifndef SESSION_SECRETS_H
#define SESSION_SECRETS_H

#include "session/session.h"

/* Largest secret we accept: the whole value is held in memory and written
   to a tmpfs for the RUN step; gRPC's message limit bounds it anyway. */
#define PS_SESSION_MAX_SECRET (4 * 1024 * 1024 - 64)

/* Fetch secret `id`.  Returns 1 with *data (malloc'd, NUL-terminated for
   convenience; *len excludes the NUL), 0 when the client has no such secret
   (NOT_FOUND, UNIMPLEMENTED, or Secrets not exposed: BuildKit treats all
   three as "secret not found", fatal unless the mount is optional), -1 with
   *err on failure. */
int session_get_secret (ps_session *s, const char *id, unsigned char **data, size_t *len, ps_error **err);

#endif
