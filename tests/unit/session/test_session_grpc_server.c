/* test_session_grpc_server.c — the server role of session/grpc.c
 * (grpc_serve) against its client role over a socketpair: dispatch,
 * metadata, statuses (trailers and trailers-only, percent-encoded
 * messages), streaming, cancellation, the 16 MiB limit. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/grpc.h"
#include "session/session_limits.h"
#include "tests/unit/session/grpc_pair.h"
#include "tests/unit/unit.h"

/* ---- handlers ---------------------------------------------------------------- */

static void
echo (grpc_call *call, void *ud)
{
  ps_error *err = NULL;
  void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_one (call, &msg, &len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  /* Answer "<request>|<x-k values>|<path>". */
  const char **vals;
  size_t n = grpc_call_metadata_all (call, "x-k", &vals);
  ps_buf out = { 0 };
  ps_buf_append (&out, msg, len);
  for (size_t i = 0; i < n; i++)
    ps_buf_printf (&out, "|%s", vals[i]);
  const char *first = grpc_call_metadata (call, "x-k");
  ps_buf_printf (&out, "|%s|%s", first ? first : "-", grpc_call_path (call));
  free (msg);
  if (grpc_call_send (call, out.data, out.len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
    }
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
  ps_buf_free (&out);
}

static void
fail_precondition (grpc_call *call, void *ud)
{
  grpc_call_finish (call, GRPC_STATUS_FAILED_PRECONDITION, "bad\nthing %d%%", 7);
  grpc_call_finish (call, GRPC_STATUS_OK, NULL); /* ignored: the first one counts */
}

static void
two_then_ok (grpc_call *call, void *ud)
{
  ps_error *err = NULL;
  ck_assert_int_eq (grpc_call_send (call, "one", 3, &err), 0);
  ck_assert_int_eq (grpc_call_send (call, "two", 3, &err), 0);
  grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

static int cancel_seen; /* atomic */

static void
wait_cancel (grpc_call *call, void *ud)
{
  for (int i = 0; i < 1000 && !grpc_call_cancelled (call); i++)
    usleep (10000);
  if (grpc_call_cancelled (call))
    {
      ps_error *err = NULL;
      void *msg;
      size_t len;
      /* recv and send fail on a cancelled call. */
      if (grpc_call_recv (call, &msg, &len, 1000, &err) < 0 && (ps_error_free (err), err = NULL, true)
          && grpc_call_send (call, "x", 1, &err) < 0)
        __atomic_store_n (&cancel_seen, 1, __ATOMIC_RELEASE);
      ps_error_free (err);
    }
  grpc_call_finish (call, GRPC_STATUS_CANCELLED, "cancelled");
}

static void
too_big (grpc_call *call, void *ud)
{
  ps_error *err = NULL;
  size_t n = PS_GRPC_SERVER_MAX_MESSAGE + 1;
  char *big = xcalloc (1, n);
  if (grpc_call_send (call, big, n, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
    }
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
  free (big);
}

static void
long_message (grpc_call *call, void *ud)
{
  char *m = xmalloc (100001);
  memset (m, '\n', 100000); /* each byte 3 on the wire */
  m[100000] = '\0';
  grpc_call_finish (call, GRPC_STATUS_INTERNAL, "%s", m);
  free (m);
}

/* Answers the connection's tag (grpc_serve_tagged), "-" for none. */
static void
tag (grpc_call *call, void *ud)
{
  const char *t = grpc_call_tag (call);
  ps_error *err = NULL;
  void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_one (call, &msg, &len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  free (msg);
  if (t == NULL)
    t = "-";
  if (grpc_call_send (call, t, strlen (t), &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
    }
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

static const struct grpc_method methods[] = {
  { "/t.S/Tag", tag, NULL },
  { "/t.S/Long", long_message, NULL },
  { "/t.S/Echo", echo, NULL },
  { "/t.S/Fail", fail_precondition, NULL },
  { "/t.S/Two", two_then_ok, NULL },
  { "/t.S/WaitCancel", wait_cancel, NULL },
  { "/t.S/TooBig", too_big, NULL },
};
static const struct grpc_service_table table = { methods, ARRAY_SIZE (methods) };

/* ---- a client and a server on a socketpair ---------------------------------- */

/* The harness (grpc_pair.h) serving this file's table. */
static void
pair_up (struct grpc_pair *p)
{
  p->table = &table;
  grpc_pair_up (p);
}

static int
unary (struct grpc_pair *p, const char *path, const char *req, char **resp, ps_error **err)
{
  struct grpc_metadata md[] = { { "x-k", "a" }, { "x-k", "b" } };
  void *r = NULL;
  size_t len = 0;
  int status = -1;
  int ret = grpc_unary (p->client, path, md, 2, req, strlen (req), &r, &len, 10000, &status, err);
  *resp = r;
  return ret < 0 ? (status >= 0 ? status : -1) : 0;
}

/* A frontend's stdio connection belongs to one build: its calls find the
   build in the connection's tag, and another connection's calls do not. */
START_TEST (server_tagged_connection_tags_its_calls)
{
  struct grpc_pair p = { .tag = "frontend-0123" };
  pair_up (&p);
  ps_error *err = NULL;
  char *resp = NULL;
  ck_assert_int_eq (unary (&p, "/t.S/Tag", "", &resp, &err), 0);
  ck_assert_str_eq (resp, "frontend-0123");
  free (resp);
  grpc_pair_down (&p);
  struct grpc_pair q = { 0 };
  pair_up (&q);
  ck_assert_int_eq (unary (&q, "/t.S/Tag", "", &resp, &err), 0);
  ck_assert_str_eq (resp, "-");
  free (resp);
  grpc_pair_down (&q);
}
END_TEST

START_TEST (server_unary_echo_sees_path_and_metadata)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  char *resp = NULL;
  ck_assert_int_eq (unary (&p, "/t.S/Echo", "hello", &resp, &err), 0);
  ck_assert_str_eq (resp, "hello|a|b|a|/t.S/Echo");
  free (resp);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (server_status_is_percent_encoded_and_first_finish_wins)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  char *resp = NULL;
  ck_assert_int_eq (unary (&p, "/t.S/Fail", "x", &resp, &err), GRPC_STATUS_FAILED_PRECONDITION);
  ck_assert_msg (strstr (err->msg, "bad\nthing 7%") != NULL, "%s", err->msg);
  ps_error_free (err);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (server_unknown_method_and_service_are_unimplemented)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  char *resp = NULL;
  ck_assert_int_eq (unary (&p, "/t.S/Nope", "x", &resp, &err), GRPC_STATUS_UNIMPLEMENTED);
  ck_assert_msg (strstr (err->msg, "unknown method Nope for service t.S") != NULL, "%s", err->msg);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (unary (&p, "/u.V/Nope", "x", &resp, &err), GRPC_STATUS_UNIMPLEMENTED);
  ck_assert_msg (strstr (err->msg, "unknown service u.V") != NULL, "%s", err->msg);
  ps_error_free (err);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (server_streams_messages_then_trailers)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (p.client, "/t.S/Two", NULL, 0, &err);
  ck_assert_ptr_nonnull (call);
  ck_assert_int_eq (grpc_call_close_send (call, &err), 0);
  void *msg;
  size_t len;
  ck_assert_int_eq (grpc_call_recv (call, &msg, &len, 10000, &err), 1);
  ck_assert_str_eq (msg, "one");
  free (msg);
  ck_assert_int_eq (grpc_call_recv (call, &msg, &len, 10000, &err), 1);
  ck_assert_str_eq (msg, "two");
  free (msg);
  ck_assert_int_eq (grpc_call_recv (call, &msg, &len, 10000, &err), 0);
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_OK);
  grpc_call_free (call);
  grpc_pair_down (&p);
}
END_TEST

/* A call to WaitCancel, its handler running. */
static grpc_call *
start_wait_cancel (struct grpc_pair *p)
{
  __atomic_store_n (&cancel_seen, 0, __ATOMIC_RELEASE);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (p->client, "/t.S/WaitCancel", NULL, 0, &err);
  ck_assert_ptr_nonnull (call);
  ck_assert_int_eq (grpc_call_send (call, "x", 1, &err), 0);
  for (int i = 0; i < 500 && grpc_server_handlers_running () == 0; i++)
    usleep (10000);
  ck_assert_uint_eq (grpc_server_handlers_running (), 1);
  return call;
}

START_TEST (server_sees_the_client_cancel)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  grpc_call *call = start_wait_cancel (&p);
  grpc_call_cancel (call);
  for (int i = 0; i < 500 && !__atomic_load_n (&cancel_seen, __ATOMIC_ACQUIRE); i++)
    usleep (10000);
  ck_assert_int_eq (__atomic_load_n (&cancel_seen, __ATOMIC_ACQUIRE), 1);
  grpc_call_free (call);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (server_hangup_cancels_running_handlers)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  grpc_call *call = start_wait_cancel (&p);
  grpc_pair_down (&p); /* the connection ends with the call open */
  ck_assert_int_eq (__atomic_load_n (&cancel_seen, __ATOMIC_ACQUIRE), 1);
  grpc_call_free (call);
}
END_TEST

START_TEST (server_send_over_16mib_is_resource_exhausted)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  char *resp = NULL;
  ck_assert_int_eq (unary (&p, "/t.S/TooBig", "x", &resp, &err), GRPC_STATUS_RESOURCE_EXHAUSTED);
  ck_assert_msg (strstr (err->msg, "over the 16777216-byte gRPC limit") != NULL, "%s", err->msg);
  ps_error_free (err);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (server_unary_without_a_request_is_invalid_argument)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (p.client, "/t.S/Echo", NULL, 0, &err);
  ck_assert_int_eq (grpc_call_close_send (call, &err), 0);
  void *msg;
  size_t len;
  ck_assert_int_eq (grpc_call_recv (call, &msg, &len, 10000, &err), -1);
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_INVALID_ARGUMENT);
  ck_assert_msg (strstr (err->msg, "no request message") != NULL, "%s", err->msg);
  ps_error_free (err);
  grpc_call_free (call);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (server_status_message_is_cut_to_16kib)
{
  struct grpc_pair p = { 0 };
  pair_up (&p);
  ps_error *err = NULL;
  char *resp = NULL;
  ck_assert_int_eq (unary (&p, "/t.S/Long", "x", &resp, &err), GRPC_STATUS_INTERNAL);
  const char *nl = strchr (err->msg, '\n');
  ck_assert_ptr_nonnull (nl);
  /* The status arrived (not a reset for an oversize header block); our
     client keeps the first 16 KiB of the encoded value: "%0A" each. */
  ck_assert_uint_eq (strspn (nl, "\n"), PS_GRPC_MAX_STATUS_MESSAGE / 3);
  ps_error_free (err);
  grpc_pair_down (&p);
}
END_TEST

START_TEST (percent_encoding_round_trips)
{
  char *e = grpc_percent_encode ("a b%\n\xff~");
  ck_assert_str_eq (e, "a b%25%0A%FF~");
  char *d = grpc_percent_decode (e, strlen (e));
  ck_assert_str_eq (d, "a b%\n\xff~");
  free (e);
  free (d);
}
END_TEST

START_TEST (reassembly_max_is_per_reassembly)
{
  /* A server reassembly (max 16 MiB) takes a 5 MiB prefix the client's
     4 MiB default refuses. */
  uint8_t prefix[5] = { 0, 0, 0x50, 0, 0 };
  struct grpc_reassembly r = { .max = PS_GRPC_SERVER_MAX_MESSAGE };
  ps_error *err = NULL;
  ck_assert_int_eq (grpc_reassemble (&r, prefix, 5, NULL, NULL, NULL, &err), 0);
  ck_assert_uint_eq (grpc_reassembly_pending (&r), 5);
  grpc_reassembly_free (&r);
  struct grpc_reassembly c = { 0 };
  ck_assert_int_eq (grpc_reassemble (&c, prefix, 5, NULL, NULL, NULL, &err), GRPC_STATUS_RESOURCE_EXHAUSTED);
  ps_error_free (err);
  grpc_reassembly_free (&c);
}
END_TEST

PS_TEST_SUITE (session_grpc_server)
{
  Suite *s = suite_create ("session_grpc_server");
  TCase *tc = tcase_create ("grpc_server");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, server_unary_echo_sees_path_and_metadata);
  tcase_add_test (tc, server_tagged_connection_tags_its_calls);
  tcase_add_test (tc, server_status_is_percent_encoded_and_first_finish_wins);
  tcase_add_test (tc, server_unknown_method_and_service_are_unimplemented);
  tcase_add_test (tc, server_streams_messages_then_trailers);
  tcase_add_test (tc, server_sees_the_client_cancel);
  tcase_add_test (tc, server_hangup_cancels_running_handlers);
  tcase_add_test (tc, server_send_over_16mib_is_resource_exhausted);
  tcase_add_test (tc, server_unary_without_a_request_is_invalid_argument);
  tcase_add_test (tc, server_status_message_is_cut_to_16kib);
  tcase_add_test (tc, percent_encoding_round_trips);
  tcase_add_test (tc, reassembly_max_is_per_reassembly);
  suite_add_tcase (s, tc);
  return s;
}
