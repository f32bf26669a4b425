/* test_session_tunnel.c — Control.Session (session/tunnel.c) over a real
 * gRPC client and server on a socketpair: the pump between BytesMessages
 * and a socket, and the daemon's whole Control.Session (identity, the
 * session behind it, its end). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control.pb-c.h"
#include "session/grpc.h"
#include "session/session.h"
#include "session/tunnel.h"
#include "tests/unit/session/grpc_pair.h"
#include "tests/unit/unit.h"

/* The session end of the recording method: writes `say`, then reads
   until EOF into `heard`. */
static const char say[] = "from the session";
static ps_buf heard;

static void *
session_main (void *arg)
{
  int fd = *(int *) arg;
  ck_assert_int_eq (send (fd, say, sizeof say - 1, MSG_NOSIGNAL), (ssize_t) (sizeof say - 1));
  char buf[4096];
  ssize_t n;
  while ((n = read (fd, buf, sizeof buf)) > 0)
    ps_buf_append (&heard, buf, (size_t) n);
  return NULL;
}

static void
record (grpc_call *call, void *ud)
{
  int sv[2];
  ck_assert_int_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pthread_t th;
  pthread_create (&th, NULL, session_main, &sv[0]);
  session_tunnel_pump (call, sv[1]);
  pthread_join (th, NULL);
  close (sv[0]);
  close (sv[1]);
  grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

static void
real (grpc_call *call, void *ud)
{
  session_tunnel_serve (call);
}

static const struct grpc_method methods[] = {
  { "/moby.buildkit.v1.Control/Session", real, NULL },
  { "/unit.Tunnel/Record", record, NULL },
};
static const struct grpc_service_table table = { methods, ARRAY_SIZE (methods) };

/* The harness (grpc_pair.h) serving this file's table. */
static void
pair_up (struct grpc_pair *p)
{
  p->table = &table;
  grpc_pair_up (p);
}

static void
send_bytes (grpc_call *call, const char *s, size_t n)
{
  Moby__Buildkit__V1__BytesMessage m = MOBY__BUILDKIT__V1__BYTES_MESSAGE__INIT;
  m.data.data = (uint8_t *) s;
  m.data.len = n;
  uint8_t buf[256];
  size_t len = moby__buildkit__v1__bytes_message__pack (&m, buf);
  ps_error *err = NULL;
  ck_assert_int_eq (grpc_call_send (call, buf, len, &err), 0);
}

/* Data of BytesMessages until `want` bytes, or the end of the call. */
static void
receive (grpc_call *call, ps_buf *got, size_t want)
{
  while (got->len < want)
    {
      void *msg = NULL;
      size_t len = 0;
      ps_error *err = NULL;
      int r = grpc_call_recv (call, &msg, &len, 10000, &err);
      if (r < 0)
        ps_error_free (err);
      if (r <= 0)
        return;
      Moby__Buildkit__V1__BytesMessage *m = moby__buildkit__v1__bytes_message__unpack (NULL, len, msg);
      ck_assert_ptr_nonnull (m);
      ps_buf_append (got, m->data.data, m->data.len);
      moby__buildkit__v1__bytes_message__free_unpacked (m, NULL);
      free (msg);
    }
}

START_TEST (split_messages_reach_the_session_whole_until_one_is_not_bytes)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_buf_free (&heard);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (p.client, "/unit.Tunnel/Record", NULL, 0, &err);
  ck_assert_ptr_nonnull (call);
  ps_buf got = { 0 };
  receive (call, &got, sizeof say - 1);
  ck_assert_uint_eq (got.len, sizeof say - 1);
  ck_assert_mem_eq (got.data, say, got.len);
  send_bytes (call, "hel", 3);
  send_bytes (call, "lo ", 3);
  send_bytes (call, "", 0);
  send_bytes (call, "world", 5);
  /* not a BytesMessage (field 1 cut short): the tunnel ends here */
  ck_assert_int_eq (grpc_call_send (call, "\x0a\x05x", 3, &err), 0);
  grpc_call_send (call, "\x0a\x05never", 7, &err); /* may fail: the call may be over */
  ps_error_free (err), err = NULL;
  grpc_call_close_send (call, &err);
  ps_error_free (err), err = NULL;
  receive (call, &got, SIZE_MAX);
  ck_assert_uint_eq (got.len, sizeof say - 1);
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_OK);
  grpc_call_free (call);
  grpc_pair_down (&p);
  ck_assert_uint_eq (heard.len, 11);
  ck_assert_mem_eq (heard.data, "hello world", 11);
  ps_buf_free (&heard);
  ps_buf_free (&got);
}
END_TEST

START_TEST (control_session_serves_a_session_until_the_client_half_closes)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  /* no uuid: refused before any session exists */
  grpc_call *call = grpc_call_start (p.client, "/moby.buildkit.v1.Control/Session", NULL, 0, &err);
  ps_buf got = { 0 };
  receive (call, &got, SIZE_MAX);
  ck_assert_uint_eq (got.len, 0);
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_INVALID_ARGUMENT);
  grpc_call_free (call);

  const struct grpc_metadata md[] = {
    { "x-docker-expose-session-uuid", "unit-tunnel-1" },
    { "x-docker-expose-session-grpc-method", "/grpc.health.v1.Health/Check" },
  };
  call = grpc_call_start (p.client, "/moby.buildkit.v1.Control/Session", md, ARRAY_SIZE (md), &err);
  ck_assert_ptr_nonnull (call);
  /* the session's HTTP/2 client speaks first, through the tunnel */
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  receive (call, &got, sizeof preface - 1);
  ck_assert_uint_ge (got.len, sizeof preface - 1);
  ck_assert_mem_eq (got.data, preface, sizeof preface - 1);
  ck_assert (session_registry_has ("unit-tunnel-1"));
  /* a second tunnel for the same session is refused */
  grpc_call *dup = grpc_call_start (p.client, "/moby.buildkit.v1.Control/Session", md, ARRAY_SIZE (md), &err);
  ps_buf none = { 0 };
  receive (dup, &none, SIZE_MAX);
  ck_assert_int_eq (grpc_call_status (dup), GRPC_STATUS_ALREADY_EXISTS);
  grpc_call_free (dup);
  /* the client's server SETTINGS, then the half-close ends it all */
  send_bytes (call, "\x00\x00\x00\x04\x00\x00\x00\x00\x00", 9);
  ck_assert_int_eq (grpc_call_close_send (call, &err), 0);
  receive (call, &got, SIZE_MAX);
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_OK);
  grpc_call_free (call);
  for (int i = 0; i < 500 && session_registry_has ("unit-tunnel-1"); i++)
    usleep (10000);
  ck_assert (!session_registry_has ("unit-tunnel-1"));
  grpc_pair_down (&p);
  ps_buf_free (&got);
}
END_TEST

PS_TEST_SUITE (session_tunnel)
{
  Suite *s = suite_create ("session_tunnel");
  TCase *tc = tcase_create ("tunnel");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, split_messages_reach_the_session_whole_until_one_is_not_bytes);
  tcase_add_test (tc, control_session_serves_a_session_until_the_client_half_closes);
  suite_add_tcase (s, tc);
  return s;
}
