/* auth.c — Auth/Credentials over the session. */
#define _GNU_SOURCE
#include "session/auth.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "schema/auth.pb-c.h"
#include "session/session_limits.h"

#define AUTH_CREDENTIALS "/moby.filesync.v1.Auth/Credentials"

int
session_auth_credentials (ps_session *s, const char *host, char **user, char **secret, ps_error **err)
{
  *user = NULL;
  *secret = NULL;
  if (host == NULL || host[0] == '\0' || strlen (host) > 1024)
    return ps_error_set (err, 400, "credentials: invalid registry host");
  if (!session_has_method (s, AUTH_CREDENTIALS))
    return 0; /* the client offers no credentials: anonymous */

  Moby__Filesync__V1__CredentialsRequest req = MOBY__FILESYNC__V1__CREDENTIALS_REQUEST__INIT;
  req.host = (char *) host;
  size_t len = moby__filesync__v1__credentials_request__get_packed_size (&req);
  cleanup_free uint8_t *buf = xmalloc (len + 1);
  moby__filesync__v1__credentials_request__pack (&req, buf);

  cleanup_free void *resp = NULL;
  size_t resp_len = 0;
  int status = -1;
  if (grpc_unary (session_conn (s), AUTH_CREDENTIALS, NULL, 0, buf, len, &resp, &resp_len,
                  PS_SESSION_UNARY_TIMEOUT_MS, &status, err)
      < 0)
    {
      /* BuildKit treats UNIMPLEMENTED as "no credentials" (§4.1). */
      if (status == GRPC_STATUS_UNIMPLEMENTED)
        {
          ps_error_free (*err);
          *err = NULL;
          return 0;
        }
      return ps_error_wrap (err, "credentials for %s from session %s", host, session_uuid (s));
    }
  Moby__Filesync__V1__CredentialsResponse *r
      = moby__filesync__v1__credentials_response__unpack (NULL, resp_len, resp);
  if (r == NULL)
    return ps_error_set (err, 502, "credentials for %s from session %s: undecodable CredentialsResponse", host,
                         session_uuid (s));
  bool found = (r->username && r->username[0]) || (r->secret && r->secret[0]);
  if (found)
    {
      *user = xstrdup (r->username ? r->username : "");
      *secret = xstrdup (r->secret ? r->secret : "");
    }
  moby__filesync__v1__credentials_response__free_unpacked (r, NULL);
  ps_debug ("session %s: credentials for %s: %s", session_uuid (s), host, found ? "found" : "anonymous");
  return found ? 1 : 0;
}
