/* session.c — POST /session: validate the upgrade request, answer
 * "101 Switching Protocols" (Upgrade: h2c), then hand the socket to the
 * session layer, which runs the HTTP/2 client on it (we call the client's
 * gRPC services; buildkit-protocols.md §2.3, §10.1). */
#define _GNU_SOURCE
#include "handlers/session.h"

#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "session/session.h"

/* What on_complete read from the request, kept in req->state for the
   upgrade handler (which runs before the request is freed). */
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

static enum MHD_Result
collect_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
  struct session_request *sr = cls;
  if (key == NULL || value == NULL)
    return MHD_YES;
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
  return MHD_YES;
}

/* True when the comma-separated header value lists `token`. */
static bool
has_token (const char *value, const char *token)
{
  size_t n = strlen (token);
  for (const char *p = value; p && *p;)
    {
      while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
      const char *end = p;
      while (*end && *end != ',')
        end++;
      const char *e = end;
      while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
      if ((size_t) (e - p) == n && strncasecmp (p, token, n) == 0)
        return true;
      p = end;
    }
  return false;
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

struct session_thread
{
  ps_session *s;
  struct MHD_UpgradeResponseHandle *urh;
};

/* The session's own thread: run it until the client hangs up, then close.
   Not the connection's thread: with TLS, MHD relays the upgraded bytes on
   that thread, so it must return from on_upgraded. */
static void *
session_thread_main (void *arg)
{
  struct session_thread *t = arg;
  cleanup_error ps_error *err = NULL;
  if (session_run (t->s, &err) < 0)
    ps_info ("%s", err->msg);
  /* Close before leaving the registry: session_registry_shutdown's wait
     then covers MHD's part too.  The session touches the socket no more
     (its connection is dead); other threads' references stay valid. */
  MHD_upgrade_action (t->urh, MHD_UPGRADE_ACTION_CLOSE);
  session_registry_remove (t->s);
  session_unref (t->s);
  free (t);
  return NULL;
}

/* Called on the connection's thread once the 101 is out.  MHD owns `sock`
   (valid until UPGRADE_ACTION_CLOSE): we may read and write it. */
static void
on_upgraded (void *cls, struct MHD_Connection *connection, void *con_cls, const char *extra_in,
             size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
  struct ps_request *req = con_cls;
  struct session_request *sr = req->state;
  struct session_info info = info_of (sr);
  cleanup_error ps_error *err = NULL;

  ps_session *s = session_new (sock, extra_in, extra_in_size, &info, &err);
  if (s == NULL)
    {
      ps_warn ("session %s: %s", sr->uuid, err->msg);
      MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
      return;
    }
  /* A concurrent /session with the same id may have won since on_complete:
     the 101 is out already, so all we can do is hang up. */
  if (session_registry_add (s, &err) < 0)
    {
      ps_warn ("session %s: %s; closing the new connection", sr->uuid, err->msg);
      session_unref (s);
      MHD_upgrade_action (urh, MHD_UPGRADE_ACTION_CLOSE);
      return;
    }
  struct session_thread *t = xmalloc (sizeof *t);
  t->s = s;
  t->urh = urh;
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
  pthread_t th;
  int r = pthread_create (&th, &attr, session_thread_main, t);
  pthread_attr_destroy (&attr);
  if (r != 0)
    session_thread_main (t); /* no thread: serve it here (fine without TLS) */
}

static int
session_complete (struct ps_request *req, ps_error **err)
{
  /* moby's checks and messages (§2.2). */
  const char *upgrade = http_request_header (req, "Upgrade");
  if (upgrade == NULL || upgrade[0] == '\0')
    return ps_error_set (err, 400, "no upgrade proto in request");
  if (strcasecmp (upgrade, "h2c") != 0)
    return ps_error_set (err, 400, "protocol %s not supported", upgrade);
  const char *connection = http_request_header (req, "Connection");
  if (connection == NULL || !has_token (connection, "upgrade"))
    return ps_error_set (err, 400, "POST /session needs \"Connection: Upgrade\" with \"Upgrade: h2c\"");

  struct session_request *sr = xcalloc (1, sizeof *sr);
  req->state = sr;
  req->state_free = session_request_free;
  MHD_get_connection_values (req->conn, MHD_HEADER_KIND, collect_header, sr);
  struct session_info info = info_of (sr);
  if (session_info_validate (&info, err) < 0)
    return -1;
  if (session_registry_has (sr->uuid))
    return ps_error_set (err, 400, "session %s already exists", sr->uuid);

  /* The 101 goes out through MHD directly: exactly Connection: Upgrade (MHD
     adds it) and Upgrade: h2c, as moby writes it; no API headers. */
  struct MHD_Response *r = MHD_create_response_for_upgrade (on_upgraded, NULL);
  if (r == NULL)
    return ps_error_set (err, 500, "cannot create the upgrade response");
  MHD_add_response_header (r, MHD_HTTP_HEADER_UPGRADE, "h2c");
  enum MHD_Result q = MHD_queue_response (req->conn, MHD_HTTP_SWITCHING_PROTOCOLS, r);
  MHD_destroy_response (r);
  if (q != MHD_YES)
    return ps_error_set (err, 500, "cannot queue the 101 response");
  req->responded = true;
  req->status = MHD_HTTP_SWITCHING_PROTOCOLS;
  return 0;
}

const struct ps_handler handler_session = { .on_complete = session_complete };
