/* grpc.c — POST /grpc: answer "101 Switching Protocols" (Upgrade: h2c)
 * and serve BuildKit's gRPC API on the socket (the daemon is the HTTP/2
 * server here, unlike /session); also the service table that
 * --buildkit-listen connections get, with the two services that live
 * here: grpc.health.v1.Health and OpenTelemetry's TraceService (buildx
 * exports its traces to the daemon it builds on; we drop them). */
#define _GNU_SOURCE
#include "handlers/grpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/process.h"
#include "handlers/session.h"
#include "schema/health.pb-c.h"

/* ---- unary helpers ------------------------------------------------------------------- */

/* The one request message (malloc'd), or NULL after finishing the call
   with why not. */
static void *
unary_request (grpc_call *call, size_t *len)
{
  cleanup_error ps_error *err = NULL;
  void *msg = NULL;
  if (grpc_call_recv_one (call, &msg, len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      return NULL;
    }
  return msg;
}

/* Send the one response and end the call OK (or with why not). */
static void
unary_reply (grpc_call *call, const void *resp, size_t len)
{
  cleanup_error ps_error *err = NULL;
  if (grpc_call_send (call, resp, len, &err) < 0)
    grpc_call_finish_error (call, err);
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

/* ---- grpc.health.v1.Health ------------------------------------------------------ */

static void
health_check (grpc_call *call, void *ud)
{
  size_t len = 0;
  cleanup_free void *msg = unary_request (call, &len);
  if (msg == NULL)
    return;
  Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack (NULL, len, msg);
  if (req == NULL)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "undecodable HealthCheckRequest");
      return;
    }
  /* "" is the server as a whole; every service we serve is up with it. */
  grpc__health__v1__health_check_request__free_unpacked (req, NULL);
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  size_t n = grpc__health__v1__health_check_response__get_packed_size (&resp);
  cleanup_free uint8_t *buf = xmalloc (n + 1);
  grpc__health__v1__health_check_response__pack (&resp, buf);
  unary_reply (call, buf, n);
}

/* ---- opentelemetry.proto.collector.trace.v1.TraceService ------------------------------ */

/* buildx sends its spans to the daemon (BuildKit forwards them to its own
   collector, if any).  We keep no traces: accept and drop, answering the
   empty ExportTraceServiceResponse. */
static void
trace_export (grpc_call *call, void *ud)
{
  size_t len = 0;
  cleanup_free void *msg = unary_request (call, &len);
  if (msg == NULL)
    return;
  unary_reply (call, "", 0);
}

static const struct grpc_method base_methods[] = {
  { "/grpc.health.v1.Health/Check", health_check, NULL },
  { "/opentelemetry.proto.collector.trace.v1.TraceService/Export", trace_export, NULL },
};

/* ---- the service table ------------------------------------------------------------ */

/* Every file's table, concatenated once.
   >>> Merge point: the lead adds the other service files' tables here as
   they land (one line each; the externs are in handlers/grpc.h):
       { grpc_control_methods, &grpc_control_n_methods },   handlers/grpc_control.c
       { grpc_bridge_methods, &grpc_bridge_n_methods },     handlers/grpc_bridge.c  <<< */
static const size_t base_n_methods = ARRAY_SIZE (base_methods);
static const struct
{
  const struct grpc_method *methods;
  const size_t *n;
} service_parts[] = {
  { base_methods, &base_n_methods },
  { grpc_control_methods, &grpc_control_n_methods },
  { grpc_bridge_methods, &grpc_bridge_n_methods },
};

static struct grpc_service_table services;
static pthread_once_t services_once = PTHREAD_ONCE_INIT;

static void
services_build (void)
{
  size_t n = 0;
  for (size_t i = 0; i < ARRAY_SIZE (service_parts); i++)
    n += *service_parts[i].n;
  struct grpc_method *m = xcalloc (n ? n : 1, sizeof *m);
  size_t k = 0;
  for (size_t i = 0; i < ARRAY_SIZE (service_parts); i++)
    for (size_t j = 0; j < *service_parts[i].n; j++)
      m[k++] = service_parts[i].methods[j];
  services.methods = m;
  services.n = n;
}

/* What a frontend container's stdio is served: LLBBridge (and health), never
   Control: a frontend drives its own build and nothing else. */
static struct grpc_service_table frontend_services;
static pthread_once_t frontend_services_once = PTHREAD_ONCE_INIT;

static void
frontend_services_build (void)
{
  size_t n = base_n_methods + grpc_bridge_n_methods, k = 0;
  struct grpc_method *m = xcalloc (n, sizeof *m);
  for (size_t j = 0; j < base_n_methods; j++)
    m[k++] = base_methods[j];
  for (size_t j = 0; j < grpc_bridge_n_methods; j++)
    m[k++] = grpc_bridge_methods[j];
  frontend_services.methods = m;
  frontend_services.n = n;
}

/* ---- connections ------------------------------------------------------------------ */

struct grpc_thread
{
  int fd;
  ps_buf extra;
  char *label;
  void (*release) (void *ud);
  void *release_ud;
};

/* "7 (unix:///run/buildkit.sock)": connections numbered in the order they came. */
static char *
connection_label (const char *origin)
{
  static unsigned counter;
  return xasprintf ("%u (%s)", __atomic_add_fetch (&counter, 1, __ATOMIC_RELAXED), origin);
}

/* A peer that breaks HTTP/2 (or a port scanner) is its own problem: info,
   not an error of ours. */
static void
serve_logged (int fd, const struct grpc_transport *transport, const void *extra_in, size_t extra_len,
              const char *label)
{
  cleanup_error ps_error *err = NULL;
  pthread_once (&services_once, services_build);
  int r = transport ? grpc_serve_transport (fd, transport, label, &services, &err)
                    : grpc_serve (fd, extra_in, extra_len, label, &services, &err);
  if (r < 0)
    ps_info ("%s", err->msg);
}

void
handlers_grpc_serve_here (int fd, const struct grpc_transport *transport, const char *origin)
{
  cleanup_free char *label = connection_label (origin);
  serve_logged (fd, transport, NULL, 0, label);
}

char *
handlers_grpc_serve_frontend (int fd, const char *build_id, const char *origin)
{
  pthread_once (&frontend_services_once, frontend_services_build);
  cleanup_free char *label = connection_label (origin);
  cleanup_error ps_error *err = NULL;
  if (grpc_serve_tagged (fd, label, &frontend_services, build_id, &err) < 0)
    {
      ps_info ("%s", err->msg);
      return xstrdup (err->msg);
    }
  return NULL;
}

/* The threads of handlers_grpc_serve until their `release` has run: an
   upgraded /grpc connection's release is MHD_upgrade_action, which must
   come before MHD_stop_daemon (after it, it reads a freed connection). */
static pthread_mutex_t threads_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t threads_cond = PTHREAD_COND_INITIALIZER;
static unsigned threads;

static void
thread_gone (void)
{
  pthread_mutex_lock (&threads_mu);
  if (--threads == 0)
    pthread_cond_broadcast (&threads_cond);
  pthread_mutex_unlock (&threads_mu);
}

static void *
grpc_thread_main (void *arg)
{
  struct grpc_thread *t = arg;
  serve_logged (t->fd, NULL, t->extra.data, t->extra.len, t->label);
  t->release (t->release_ud);
  thread_gone ();
  ps_buf_free (&t->extra);
  free (t->label);
  free (t);
  return NULL;
}

void
handlers_grpc_serve (int fd, const void *extra_in, size_t extra_len, const char *origin, void (*release) (void *ud),
                     void *release_ud)
{
  struct grpc_thread *t = xcalloc (1, sizeof *t);
  t->fd = fd;
  if (extra_len)
    ps_buf_append (&t->extra, extra_in, extra_len);
  t->label = connection_label (origin);
  t->release = release;
  t->release_ud = release_ud;
  pthread_mutex_lock (&threads_mu);
  threads++;
  pthread_mutex_unlock (&threads_mu);
  int r = ps_thread_start (NULL, grpc_thread_main, t, 0, true);
  if (r != 0)
    {
      ps_warn ("grpc %s: cannot start its thread: %s", t->label, strerror (r));
      release (release_ud);
      thread_gone ();
      ps_buf_free (&t->extra);
      free (t->label);
      free (t);
    }
}

void
handlers_grpc_shutdown (int grace_ms)
{
  struct timespec deadline = ps_deadline_after_ms (CLOCK_REALTIME, grace_ms);
  grpc_serve_shutdown (grace_ms);
  pthread_mutex_lock (&threads_mu);
  while (threads > 0 && pthread_cond_timedwait (&threads_cond, &threads_mu, &deadline) != ETIMEDOUT)
    ;
  pthread_mutex_unlock (&threads_mu);
}

/* ---- POST /grpc ------------------------------------------------------------------- */

static void
release_upgraded (void *u)
{
  http_upgraded_close (u);
}

static void
on_upgraded (void *ud, int fd, const char *extra_in, size_t extra_in_size, struct http_upgraded *u)
{
  handlers_grpc_serve (fd, extra_in, extra_in_size, "/grpc", release_upgraded, u);
}

static int
grpc_complete (struct ps_request *req, ps_error **err)
{
  if (handlers_check_h2c_upgrade (req, "/grpc", err) < 0)
    return -1;
  return http_respond_upgrade (req, "h2c", NULL, on_upgraded, NULL, err);
}

const struct ps_handler handler_grpc = { .on_complete = grpc_complete };
