/* session.c — session objects and the uuid registry. */
#define _GNU_SOURCE
#include "session/session.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"
#include "common/process.h"
#include "schema/health.pb-c.h"
#include "session/session_limits.h"

struct ps_session
{
  int refs; /* atomic */
  char *uuid;
  char *shared_key;
  char *name;
  ps_strv methods; /* lower-cased */
  grpc_conn *conn;
  bool registered; /* registry_mu */
  struct ps_session *reg_next;
};

/* ---- identity --------------------------------------------------------------- */

/* BuildKit ids are 25 base-36 characters; other clients use UUIDs.  Accept
   what could plausibly be an id and nothing that could hurt a log line or a
   path built from it. */
static bool
valid_id (const char *s, size_t max)
{
  size_t n = strlen (s);
  if (n == 0 || n > max)
    return false;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'
          || *p == '_' || *p == '.'))
      return false;
  return true;
}

/* The shared key is only ever hashed (cache directories, vertex digests):
   any text goes, as long as it is one line.  buildx sends the context
   path and its node ("/home/u/app:builder0"). */
static bool
valid_shared_key (const char *s, size_t max)
{
  if (strlen (s) > max)
    return false;
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return false;
  return true;
}

int
session_info_validate (const struct session_info *info, ps_error **err)
{
  if (info->uuid == NULL || info->uuid[0] == '\0')
    return ps_error_set (err, 400, "missing X-Docker-Expose-Session-Uuid header");
  if (!valid_id (info->uuid, 128))
    return ps_error_set (err, 400, "invalid X-Docker-Expose-Session-Uuid \"%.64s\": expected up to 128 letters, digits, '-', '_' or '.'",
                         info->uuid);
  if (info->shared_key && info->shared_key[0] && !valid_shared_key (info->shared_key, 4096))
    return ps_error_set (err, 400, "invalid X-Docker-Expose-Session-Sharedkey: expected one line of up to 4096 bytes");
  if (info->n_methods > PS_SESSION_MAX_METHODS)
    return ps_error_set (err, 400, "too many X-Docker-Expose-Session-Grpc-Method headers (%zu, at most %d)",
                         info->n_methods, PS_SESSION_MAX_METHODS);
  for (size_t i = 0; i < info->n_methods; i++)
    {
      const char *m = info->methods[i];
      if (m == NULL || m[0] != '/' || strchr (m + 1, '/') == NULL || strlen (m) > 512)
        return ps_error_set (err, 400, "invalid X-Docker-Expose-Session-Grpc-Method \"%.128s\": expected /package.Service/Method",
                             m ? m : "");
      for (const char *p = m; *p; p++)
        if ((unsigned char) *p <= 0x20 || *p == 0x7f)
          return ps_error_set (err, 400, "invalid X-Docker-Expose-Session-Grpc-Method \"%.128s\"", m);
    }
  return 0;
}

ps_session *
session_new (int fd, const void *extra_in, size_t extra_len, const struct session_info *info, ps_error **err)
{
  if (session_info_validate (info, err) < 0)
    return NULL;
  grpc_conn *conn = grpc_conn_new (fd, extra_in, extra_len, info->uuid, err);
  if (conn == NULL)
    return NULL;
  ps_session *s = xcalloc (1, sizeof *s);
  s->refs = 1;
  s->uuid = xstrdup (info->uuid);
  s->shared_key = xstrdup (info->shared_key ? info->shared_key : "");
  s->name = xstrdup (info->name ? info->name : "");
  for (size_t i = 0; i < info->n_methods; i++)
    {
      char *m = xstrdup (info->methods[i]);
      for (char *p = m; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
          *p = (char) (*p - 'A' + 'a');
      ps_strv_push (&s->methods, m);
      free (m);
    }
  s->conn = conn;
  return s;
}

/* ---- claims and the idle timeout ---------------------------------------------- */

static int idle_timeout_ms = PS_DEFAULT_SESSION_IDLE_TIMEOUT_S * 1000;

void
session_set_idle_timeout (int ms)
{
  idle_timeout_ms = ms;
}

/* uuid -> number of builds naming it.  Few at once (one per build). */
struct claim
{
  char *uuid;
  unsigned count;
  struct claim *next;
};
static pthread_mutex_t claims_mu = PTHREAD_MUTEX_INITIALIZER;
static struct claim *claims;

void
session_claim (const char *uuid)
{
  if (uuid == NULL)
    return;
  pthread_mutex_lock (&claims_mu);
  struct claim *c = claims;
  while (c && strcmp (c->uuid, uuid) != 0)
    c = c->next;
  if (c == NULL)
    {
      c = xcalloc (1, sizeof *c);
      c->uuid = xstrdup (uuid);
      c->next = claims;
      claims = c;
    }
  c->count++;
  pthread_mutex_unlock (&claims_mu);
}

void
session_unclaim (const char *uuid)
{
  if (uuid == NULL)
    return;
  pthread_mutex_lock (&claims_mu);
  for (struct claim **pp = &claims; *pp; pp = &(*pp)->next)
    if (strcmp ((*pp)->uuid, uuid) == 0)
      {
        struct claim *c = *pp;
        if (--c->count == 0)
          {
            *pp = c->next;
            free (c->uuid);
            free (c);
          }
        break;
      }
  pthread_mutex_unlock (&claims_mu);
}

/* The connection's idle policy: close only when no build names us. */
static bool
unclaimed (void *ud)
{
  ps_session *s = ud;
  pthread_mutex_lock (&claims_mu);
  struct claim *c = claims;
  while (c && strcmp (c->uuid, s->uuid) != 0)
    c = c->next;
  pthread_mutex_unlock (&claims_mu);
  return c == NULL;
}

int
session_run (ps_session *s, ps_error **err)
{
  ps_info ("session %s: started (name \"%s\", %zu methods)", s->uuid, s->name, s->methods.n);
  grpc_conn_set_idle (s->conn, idle_timeout_ms, unclaimed, s, "no build used the session");
  int r = grpc_conn_run (s->conn, err);
  cleanup_free char *why = grpc_conn_dead_reason (s->conn);
  ps_info ("session %s: ended: %s", s->uuid, why ? why : "?");
  return r;
}

void
session_close (ps_session *s)
{
  grpc_conn_shutdown (s->conn);
}

void
session_ref (ps_session *s)
{
  __atomic_add_fetch (&s->refs, 1, __ATOMIC_RELAXED);
}

void
session_unref (ps_session *s)
{
  if (s == NULL || __atomic_sub_fetch (&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
    return;
  grpc_conn_free (s->conn);
  free (s->uuid);
  free (s->shared_key);
  free (s->name);
  ps_strv_free (&s->methods);
  free (s);
}

const char *
session_uuid (const ps_session *s)
{
  return s->uuid;
}

const char *
session_shared_key (const ps_session *s)
{
  return s->shared_key;
}

const char *
session_name (const ps_session *s)
{
  return s->name;
}

bool
session_has_method (const ps_session *s, const char *method)
{
  for (size_t i = 0; i < s->methods.n; i++)
    if (strcasecmp (s->methods.v[i], method) == 0)
      return true;
  return false;
}

bool
session_alive (ps_session *s)
{
  return grpc_conn_alive (s->conn);
}

grpc_conn *
session_conn (ps_session *s)
{
  return s->conn;
}

/* ---- registry ----------------------------------------------------------------- */

/* Few sessions live at once (one per running docker build), so a list is
   the right structure; the condition variable wakes session_wait. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t registry_cond;
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;
static ps_session *registry;
static bool registry_closed;

static void
registry_init (void)
{
  pthread_condattr_t ca;
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&registry_cond, &ca);
  pthread_condattr_destroy (&ca);
}

/* registry_mu held. */
static ps_session *
registry_find (const char *uuid)
{
  for (ps_session *s = registry; s; s = s->reg_next)
    if (strcmp (s->uuid, uuid) == 0)
      return s;
  return NULL;
}

int
session_registry_add (ps_session *s, ps_error **err)
{
  pthread_once (&registry_once, registry_init);
  pthread_mutex_lock (&registry_mu);
  if (registry_closed)
    {
      pthread_mutex_unlock (&registry_mu);
      return ps_error_set (err, 503, "session %s: the daemon is shutting down", s->uuid);
    }
  ps_session *old = registry_find (s->uuid);
  if (old)
    {
      pthread_mutex_unlock (&registry_mu);
      return ps_error_set (err, 400, "session %s already exists", s->uuid);
    }
  session_ref (s);
  s->registered = true;
  s->reg_next = registry;
  registry = s;
  pthread_cond_broadcast (&registry_cond);
  pthread_mutex_unlock (&registry_mu);
  return 0;
}

/* Sessions that ended recently, so a build naming one fails at once with
   the reason instead of waiting for a session that will never come. */
#define SESSION_ENDED_MEMORY 64
static struct
{
  char uuid[129];
  char reason[256];
} ended_sessions[SESSION_ENDED_MEMORY];
static size_t ended_next;

/* Called with registry_mu held. */
static bool
ended_reason (const char *uuid, char *out, size_t outlen)
{
  for (size_t i = 0; i < SESSION_ENDED_MEMORY; i++)
    if (ended_sessions[i].uuid[0] && strcmp (ended_sessions[i].uuid, uuid) == 0)
      {
        snprintf (out, outlen, "%s", ended_sessions[i].reason);
        return true;
      }
  return false;
}

void
session_registry_remove (ps_session *s)
{
  pthread_once (&registry_once, registry_init);
  cleanup_free char *why = grpc_conn_dead_reason (s->conn);
  pthread_mutex_lock (&registry_mu);
  snprintf (ended_sessions[ended_next].uuid, sizeof ended_sessions[0].uuid, "%s", s->uuid);
  snprintf (ended_sessions[ended_next].reason, sizeof ended_sessions[0].reason, "%s",
            why ? why : "the client closed its /session connection");
  ended_next = (ended_next + 1) % SESSION_ENDED_MEMORY;
  bool found = false;
  for (ps_session **pp = &registry; *pp; pp = &(*pp)->reg_next)
    if (*pp == s)
      {
        *pp = s->reg_next;
        s->reg_next = NULL;
        s->registered = false;
        found = true;
        break;
      }
  pthread_cond_broadcast (&registry_cond);
  pthread_mutex_unlock (&registry_mu);
  if (found)
    session_unref (s);
}

bool
session_registry_has (const char *uuid)
{
  pthread_once (&registry_once, registry_init);
  pthread_mutex_lock (&registry_mu);
  bool has = registry_find (uuid) != NULL;
  pthread_mutex_unlock (&registry_mu);
  return has;
}

ps_session *
session_wait (const char *uuid, int timeout_ms, ps_error **err)
{
  pthread_once (&registry_once, registry_init);
  if (uuid == NULL || uuid[0] == '\0')
    return ps_error_set (err, 400, "no session id given"), NULL;
  struct timespec deadline = ps_deadline_after_ms (CLOCK_MONOTONIC, timeout_ms);
  pthread_mutex_lock (&registry_mu);
  for (;;)
    {
      ps_session *s = registry_find (uuid);
      if (s && session_alive (s))
        {
          session_ref (s);
          pthread_mutex_unlock (&registry_mu);
          return s;
        }
      char reason[256];
      if (s == NULL && ended_reason (uuid, reason, sizeof reason))
        {
          pthread_mutex_unlock (&registry_mu);
          return ps_error_set (err, 404, "session %s has ended: %s", uuid, reason), NULL;
        }
      if (pthread_cond_timedwait (&registry_cond, &registry_mu, &deadline) == ETIMEDOUT)
        {
          s = registry_find (uuid);
          if (s && session_alive (s))
            {
              session_ref (s);
              pthread_mutex_unlock (&registry_mu);
              return s;
            }
          bool ended = s != NULL;
          pthread_mutex_unlock (&registry_mu);
          if (ended)
            return ps_error_set (err, 404, "session %s has ended (the client closed its /session connection)", uuid),
                   NULL;
          return ps_error_set (err, 404,
                               "no session %s (waited %d ms): the client must open POST /session with this id "
                               "(X-Docker-Expose-Session-Uuid) while the build runs",
                               uuid, timeout_ms),
                 NULL;
        }
    }
}

size_t
session_registry_shutdown (int timeout_ms)
{
  pthread_once (&registry_once, registry_init);
  struct timespec deadline = ps_deadline_after_ms (CLOCK_MONOTONIC, timeout_ms);
  pthread_mutex_lock (&registry_mu);
  registry_closed = true;
  for (ps_session *s = registry; s; s = s->reg_next)
    session_close (s);
  size_t left = 0;
  for (;;)
    {
      left = 0;
      for (ps_session *s = registry; s; s = s->reg_next)
        left++;
      if (left == 0 || pthread_cond_timedwait (&registry_cond, &registry_mu, &deadline) == ETIMEDOUT)
        break;
    }
  pthread_mutex_unlock (&registry_mu);
  if (left)
    ps_warn ("%zu session(s) still open after %d ms", left, timeout_ms);
  return left;
}

/* ---- serving an upgraded connection --------------------------------------------- */

struct session_thread
{
  ps_session *s;
  void (*release) (void *ud);
  void *release_ud;
};

/* The session's own thread: run it until the client hangs up, then close.
   Not the connection's thread: with TLS, the HTTP server relays the
   upgraded bytes on that thread, so session_serve_upgraded must return. */
static void *
session_thread_main (void *arg)
{
  struct session_thread *t = arg;
  cleanup_error ps_error *err = NULL;
  if (session_run (t->s, &err) < 0)
    ps_info ("%s", err->msg);
  /* Close before leaving the registry: session_registry_shutdown's wait
     then covers the HTTP server's part too.  The session touches the
     socket no more (its connection is dead); other threads' references
     stay valid. */
  t->release (t->release_ud);
  session_registry_remove (t->s);
  session_unref (t->s);
  free (t);
  return NULL;
}

void
session_serve_upgraded (int fd, const void *extra_in, size_t extra_len, const struct session_info *info,
                        void (*release) (void *ud), void *release_ud)
{
  cleanup_error ps_error *err = NULL;
  ps_session *s = session_new (fd, extra_in, extra_len, info, &err);
  if (s == NULL)
    {
      ps_warn ("session %s: %s", info->uuid, err->msg);
      release (release_ud);
      return;
    }
  /* A concurrent /session with the same id may have won since the request
     was validated: the 101 is out already, so all we can do is hang up. */
  if (session_registry_add (s, &err) < 0)
    {
      ps_warn ("session %s: %s; closing the new connection", info->uuid, err->msg);
      session_unref (s);
      release (release_ud);
      return;
    }
  struct session_thread *t = xmalloc (sizeof *t);
  t->s = s;
  t->release = release;
  t->release_ud = release_ud;
  int r = ps_thread_start (NULL, session_thread_main, t, 0, true);
  if (r != 0)
    session_thread_main (t); /* no thread: serve it here (fine without TLS) */
}

/* ---- Health ------------------------------------------------------------------- */

#define HEALTH_CHECK "/grpc.health.v1.Health/Check"

int
session_health_check (ps_session *s, int timeout_ms, ps_error **err)
{
  if (!session_has_method (s, HEALTH_CHECK))
    return ps_error_set (err, 501, "session %s does not serve %s", s->uuid, HEALTH_CHECK);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  size_t len = grpc__health__v1__health_check_request__get_packed_size (&req);
  cleanup_free uint8_t *buf = xmalloc (len + 1);
  grpc__health__v1__health_check_request__pack (&req, buf);
  cleanup_free void *resp = NULL;
  size_t resp_len = 0;
  /* grpc-go's health client sends a deadline; BuildKit uses "9999740u". */
  char timeout[32];
  snprintf (timeout, sizeof timeout, "%dm", timeout_ms > 0 ? timeout_ms : 1);
  struct grpc_metadata md[] = { { "grpc-timeout", timeout } };
  if (grpc_unary (s->conn, HEALTH_CHECK, md, ARRAY_SIZE (md), buf, len, &resp, &resp_len, timeout_ms, NULL, err)
      < 0)
    return ps_error_wrap (err, "session %s: health check", s->uuid);
  Grpc__Health__V1__HealthCheckResponse *r
      = grpc__health__v1__health_check_response__unpack (NULL, resp_len, resp);
  if (r == NULL)
    return ps_error_set (err, 502, "session %s: health check: undecodable HealthCheckResponse", s->uuid);
  int status = r->status;
  grpc__health__v1__health_check_response__free_unpacked (r, NULL);
  if (status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
    return ps_error_set (err, 502, "session %s: health check: client reports status %d, not SERVING", s->uuid,
                         status);
  return 0;
}
