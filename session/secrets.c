/* secrets.c — Secrets/GetSecret over the session. */
#define _GNU_SOURCE
#include "session/secrets.h"

#include <stdlib.h>
#include <string.h>

#include "schema/secrets.pb-c.h"
#include "session/session_limits.h"

#define SECRETS_GET "/moby.buildkit.secrets.v1.Secrets/GetSecret"

int
session_get_secret (ps_session *s, const char *id, unsigned char **data, size_t *len, ps_error **err)
{
  *data = NULL;
  *len = 0;
  if (id == NULL || id[0] == '\0' || strlen (id) > 1024)
    return ps_error_set (err, 400, "secret: invalid secret id");
  if (!session_has_method (s, SECRETS_GET))
    return 0;

  Moby__Buildkit__Secrets__V1__GetSecretRequest req = MOBY__BUILDKIT__SECRETS__V1__GET_SECRET_REQUEST__INIT;
  req.id = (char *) id;
  size_t reqlen = moby__buildkit__secrets__v1__get_secret_request__get_packed_size (&req);
  cleanup_free uint8_t *buf = xmalloc (reqlen + 1);
  moby__buildkit__secrets__v1__get_secret_request__pack (&req, buf);

  cleanup_free void *resp = NULL;
  size_t resp_len = 0;
  int status = -1;
  if (grpc_unary (session_conn (s), SECRETS_GET, NULL, 0, buf, reqlen, &resp, &resp_len, PS_SESSION_UNARY_TIMEOUT_MS,
                  &status, err)
      < 0)
    {
      /* NOT_FOUND and UNIMPLEMENTED both mean "secret not found" (§4.2). */
      if (status == GRPC_STATUS_NOT_FOUND || status == GRPC_STATUS_UNIMPLEMENTED)
        {
          ps_error_free (*err);
          *err = NULL;
          return 0;
        }
      return ps_error_wrap (err, "secret %s from session %s", id, session_uuid (s));
    }
  Moby__Buildkit__Secrets__V1__GetSecretResponse *r
      = moby__buildkit__secrets__v1__get_secret_response__unpack (NULL, resp_len, resp);
  if (r == NULL)
    return ps_error_set (err, 502, "secret %s from session %s: undecodable GetSecretResponse", id, session_uuid (s));
  if (r->data.len > PS_SESSION_MAX_SECRET)
    {
      size_t n = r->data.len;
      moby__buildkit__secrets__v1__get_secret_response__free_unpacked (r, NULL);
      return ps_error_set (err, 413, "secret %s from session %s is %zu bytes, over the %d-byte limit", id,
                           session_uuid (s), n, PS_SESSION_MAX_SECRET);
    }
  unsigned char *out = xmalloc (r->data.len + 1);
  if (r->data.len)
    memcpy (out, r->data.data, r->data.len);
  out[r->data.len] = '\0';
  *data = out;
  *len = r->data.len;
  /* Leave no copy of the secret behind in freed memory. */
  if (r->data.len)
    explicit_bzero (r->data.data, r->data.len);
  explicit_bzero (resp, resp_len);
  moby__buildkit__secrets__v1__get_secret_response__free_unpacked (r, NULL);
  return 1;
}
