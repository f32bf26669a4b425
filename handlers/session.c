/* session.c — POST /session: validate the upgrade request, answer
 * "101 Switching Protocols" (Upgrade: h2c), then hand the socket to the
 * session layer, which runs the HTTP/2 client on it (we call the client's
 * gRPC services; buildkit-protocols.md §2.3, §10.1). */
#define _GNU_SOURCE
#include "handlers/session.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "session/session.h"

/* What on_complete read from the request, kept in req->state for the
   upgrade callback (which runs before the request is freed). */
struct session_request
{
  char *uuid;
  char *shared_key;
  char *name;
  ps_strv methods;
};

static void
session_request_free (void *p)
{
  struct session_request *sr = p;
  free (sr->uuid);
  free (sr->shared_key);
  free (sr->name);
  ps_strv_free (&sr->methods);
  free (sr);
}

static void
collect_header (void *ud, const char *key, const char *value)
{
  struct session_request *sr = ud;
  if (value == NULL)
    return;
  /* Header names match case-insensitively; Go writes them canonicalised. */
  if (strcasecmp (key, "X-Docker-Expose-Session-Grpc-Method") == 0)
    {
      if (sr->methods.n <= 4 * 256) /* validated (and capped) later */
        ps_strv_push (&sr->methods, value);
    }
  else if (strcasecmp (key, "X-Docker-Expose-Session-Uuid") == 0 && sr->uuid == NULL)
    sr->uuid = xstrdup (value);
  else if (strcasecmp (key, "X-Docker-Expose-Session-Sharedkey") == 0 && sr->shared_key == NULL)
    sr->shared_key = xstrdup (value);
  else if (strcasecmp (key, "X-Docker-Expose-Session-Name") == 0 && sr->name == NULL)
    sr->name = xstrdup (value);
}

static struct session_info
info_of (struct session_request *sr)
{
  return (struct session_info) {
    .uuid = sr->uuid,
    .shared_key = sr->shared_key ? sr->shared_key : "",
    .name = sr->name ? sr->name : "",
    .methods = (const char *const *) sr->methods.v,
    .n_methods = sr->methods.n,
  };
}

static void
release_upgraded (void *u)
{
  http_upgraded_close (u);
}

/* Called on the connection's thread once the 101 is out: the session layer
   takes the socket (and runs the session on a thread of its own). */
static void
on_upgraded (void *ud, int fd, const char *extra_in, size_t extra_in_size, struct http_upgraded *u)
{
  struct session_request *sr = ud;
  struct session_info info = info_of (sr);
  session_serve_upgraded (fd, extra_in, extra_in_size, &info, release_upgraded, u);
}

int
handlers_check_h2c_upgrade (struct ps_request *req, const char *endpoint, ps_error **err)
{
  /* moby's checks and messages (§2.2). */
  const char *upgrade = http_request_header (req, "Upgrade");
  if (upgrade == NULL || upgrade[0] == '\0')
    return ps_error_set (err, 400, "no upgrade proto in request");
  if (strcasecmp (upgrade, "h2c") != 0)
    return ps_error_set (err, 400, "protocol %s not supported", upgrade);
  const char *connection = http_request_header (req, "Connection");
  if (connection == NULL || !http_header_has_token (connection, "upgrade"))
    return ps_error_set (err, 400, "POST %s needs \"Connection: Upgrade\" with \"Upgrade: h2c\"", endpoint);
  return 0;
}

static int
session_complete (struct ps_request *req, ps_error **err)
{
  if (handlers_check_h2c_upgrade (req, "/session", err) < 0)
    return -1;

  struct session_request *sr = xcalloc (1, sizeof *sr);
  req->state = sr;
  req->state_free = session_request_free;
  http_request_foreach_header (req, collect_header, sr);
  struct session_info info = info_of (sr);
  if (session_info_validate (&info, err) < 0)
    return -1;
  if (session_registry_has (sr->uuid))
    return ps_error_set (err, 400, "session %s already exists", sr->uuid);

  /* Exactly Connection: Upgrade and Upgrade: h2c, as moby writes it. */
  return http_respond_upgrade (req, "h2c", NULL, on_upgraded, sr, err);
}

const struct ps_handler handler_session = { .on_complete = session_complete };
