/* test_session_grpc.c — the HTTP/2 gRPC client against a fake peer:
 * framing, trailers, errors, limits, flow control, threads. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "schema/fsutil.pb-c.h"
#include "session/grpc.h"
#include "session/session_limits.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

static const struct fake_config normal = { .mode = FAKE_NORMAL };

static char *
call_unary (grpc_conn *c, const char *path, const char *req, int *status, ps_error **err)
{
  void *resp = NULL;
  size_t len = 0;
  if (grpc_unary (c, path, NULL, 0, req, strlen (req), &resp, &len, 5000, status, err) < 0)
    return NULL;
  return resp;
}

START_TEST (unary_call_round_trip)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  int status = -1;
  char *resp = call_unary (pp.conn, "/test.Echo/Unary", "hello", &status, &err);
  ck_assert_msg (resp != NULL, "%s", err ? err->msg : "");
  ck_assert_str_eq (resp, "hello");
  ck_assert_int_eq (status, 0);
  free (resp);
  /* The peer pinged on connect; nghttp2 answered for us.  The ACK may
     still be on its way when the call's answer is already back (a loaded
     machine): wait for it, bounded. */
  for (int i = 0; i < 200 && fake_peer_ping_acks (pp.peer) < 1; i++)
    usleep (10000);
  ck_assert_uint_ge (fake_peer_ping_acks (pp.peer), 1);
  pair_stop (&pp);
}
END_TEST

START_TEST (bidi_stream_interleaves_and_half_closes)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Stream", NULL, 0, &err);
  ck_assert_ptr_nonnull (call);
  const char *words[] = { "one", "two", "three" };
  for (size_t i = 0; i < 3; i++)
    {
      ck_assert_int_eq (grpc_call_send (call, words[i], strlen (words[i]), &err), 0);
      void *m = NULL;
      size_t n = 0;
      ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 1);
      ck_assert_uint_eq (n, strlen (words[i]));
      ck_assert_str_eq (m, words[i]);
      free (m);
    }
  ck_assert_int_eq (grpc_call_close_send (call, &err), 0);
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 0);
  ck_assert_int_eq (grpc_call_status (call), 0);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (several_messages_in_one_frame)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Batch", NULL, 0, &err);
  ck_assert_int_eq (grpc_call_send (call, "50", 2, &err), 0);
  grpc_call_close_send (call, &err);
  for (int i = 0; i < 50; i++)
    {
      void *m = NULL;
      size_t n = 0;
      char want[16];
      snprintf (want, sizeof want, "m%d", i);
      ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 1);
      ck_assert_str_eq (m, want);
      free (m);
    }
  /* A zero-length message is a message. */
  void *m = NULL;
  size_t n = 99;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 1);
  ck_assert_uint_eq (n, 0);
  free (m);
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 0);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (large_messages_reassemble_and_flow_control_replenishes)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  /* 6 x 4 MiB (the limit, inclusive) = 24 MiB: more than the connection
     window, so credit must come back as we read. */
  for (int round = 0; round < 6; round++)
    {
      char req[32];
      snprintf (req, sizeof req, "%d", PS_GRPC_MAX_MESSAGE);
      int status = -1;
      void *resp = NULL;
      size_t len = 0;
      ck_assert_msg (grpc_unary (pp.conn, "/test.Echo/Big", NULL, 0, req, strlen (req), &resp, &len, 10000, &status,
                                 &err)
                         == 0,
                     "%s", err ? err->msg : "");
      ck_assert_uint_eq (len, PS_GRPC_MAX_MESSAGE);
      const char *b = resp;
      ck_assert (b[0] == 'a' && b[25] == 'z' && b[len - 1] == (char) ('a' + (len - 1) % 26));
      free (resp);
    }
  /* One stream carrying more than its window: 4 x 3 MiB echoed. */
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Stream", NULL, 0, &err);
  size_t sz = 3 * 1024 * 1024;
  char *big = xmalloc (sz);
  memset (big, 'q', sz);
  for (int i = 0; i < 4; i++)
    ck_assert_int_eq (grpc_call_send (call, big, sz, &err), 0);
  grpc_call_close_send (call, &err);
  for (int i = 0; i < 4; i++)
    {
      void *m = NULL;
      size_t n = 0;
      ck_assert_msg (grpc_call_recv (call, &m, &n, 10000, &err) == 1, "%s", err ? err->msg : "");
      ck_assert_uint_eq (n, sz);
      ck_assert (memcmp (m, big, sz) == 0);
      free (m);
    }
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 0);
  free (big);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (trailers_only_error_is_percent_decoded)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  int status = -1;
  ck_assert_ptr_null (call_unary (pp.conn, "/test.Echo/Fail", "x", &status, &err));
  ck_assert_int_eq (status, GRPC_STATUS_INVALID_ARGUMENT);
  ck_assert_str_eq (err->msg, "Echo/Fail: grpc status 3 (INVALID_ARGUMENT): bad request: \xe2\x9c\x93%done");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

START_TEST (status_after_messages)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/FailAfter", NULL, 0, &err);
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 1);
  ck_assert_str_eq (m, "one");
  free (m);
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
  ck_assert_str_eq (err->msg, "Echo/FailAfter: grpc status 13 (INTERNAL): boom after one");
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_INTERNAL);
  ps_error_free (err);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (unimplemented_method)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  int status = -1;
  ck_assert_ptr_null (call_unary (pp.conn, "/moby.filesync.v1.FileSync/Nope", "x", &status, &err));
  ck_assert_int_eq (status, GRPC_STATUS_UNIMPLEMENTED);
  ck_assert_str_eq (err->msg,
                    "FileSync/Nope: grpc status 12 (UNIMPLEMENTED): unknown service /moby.filesync.v1.FileSync/Nope");
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

START_TEST (metadata_keys_repeat)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  struct grpc_metadata md[] = { { "x-a", "1" }, { "x-a", "2" }, { "x-b", "three" } };
  void *resp = NULL;
  size_t len = 0;
  ck_assert_int_eq (grpc_unary (pp.conn, "/test.Echo/Metadata", md, 3, "", 0, &resp, &len, 5000, NULL, &err), 0);
  ck_assert_str_eq (resp, "x-a=1;x-a=2;x-b=three;");
  free (resp);
  /* Keys must be lower case tokens; values printable. */
  struct grpc_metadata bad[] = { { "X-Upper", "1" } };
  ck_assert_ptr_null (grpc_call_start (pp.conn, "/test.Echo/Metadata", bad, 1, &err));
  ps_error_free (err);
  err = NULL;
  struct grpc_metadata crlf[] = { { "x-a", "1\r\nx-injected: 2" } };
  ck_assert_ptr_null (grpc_call_start (pp.conn, "/test.Echo/Metadata", crlf, 1, &err));
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

START_TEST (message_over_4mib_is_refused_and_stream_reset)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Huge", NULL, 0, &err);
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
  ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_RESOURCE_EXHAUSTED);
  ck_assert_str_eq (err->msg, "Echo/Huge: grpc status 8 (RESOURCE_EXHAUSTED): received message larger than max "
                              "(4194305 vs. 4194304 bytes)");
  ck_assert_int_eq (err->status, 413);
  ps_error_free (err);
  for (int i = 0; i < 100 && fake_peer_resets (pp.peer) == 0; i++)
    usleep (10000);
  ck_assert_uint_eq (fake_peer_resets (pp.peer), 1);
  /* The connection is fine: other calls still work. */
  err = NULL;
  char *resp = call_unary (pp.conn, "/test.Echo/Unary", "still here", NULL, &err);
  ck_assert_str_eq (resp, "still here");
  free (resp);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (recv_times_out_and_cancel_resets_the_stream)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Silent", NULL, 0, &err);
  void *m = NULL;
  size_t n = 0;
  int64_t t0 = ps_monotonic_ns ();
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 200, &err), -1);
  ck_assert ((ps_monotonic_ns () - t0) / 1000000 >= 190);
  ck_assert_int_eq (err->status, 504);
  ck_assert_int_eq (grpc_call_status (call), -1); /* still running */
  ps_error_free (err);
  err = NULL;
  grpc_call_cancel (call);
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 1000, &err), -1);
  ps_error_free (err);
  for (int i = 0; i < 100 && fake_peer_resets (pp.peer) == 0; i++)
    usleep (10000);
  ck_assert_uint_eq (fake_peer_resets (pp.peer), 1);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (stream_without_status_or_reset_by_peer_fails)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/NoStatus", NULL, 0, &err);
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 1);
  free (m);
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
  ck_assert_msg (strstr (err->msg, "without grpc-status") != NULL, "%s", err->msg);
  ps_error_free (err);
  err = NULL;
  grpc_call_free (call);

  call = grpc_call_start (pp.conn, "/test.Echo/Reset", NULL, 0, &err);
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
  ck_assert_msg (strstr (err->msg, "stream reset (HTTP/2 INTERNAL_ERROR)") != NULL, "%s", err->msg);
  ps_error_free (err);
  grpc_call_free (call);
  pair_stop (&pp);
}
END_TEST

START_TEST (garbage_after_connect_kills_the_connection)
{
  struct fake_config cfg = { .mode = FAKE_GARBAGE };
  struct peer_pair pp;
  pair_start (&pp, &cfg);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Unary", NULL, 0, &err);
  if (call)
    {
      void *m = NULL;
      size_t n = 0;
      ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
      ck_assert_msg (strstr (err->msg, "session connection lost: HTTP/2 protocol error") != NULL, "%s", err->msg);
      ck_assert_int_eq (grpc_call_status (call), GRPC_STATUS_UNAVAILABLE);
      ps_error_free (err);
      err = NULL;
      grpc_call_free (call);
    }
  else
    ps_error_free (err);
  err = NULL;
  pthread_join (pp.io, NULL);
  pp.joined = true;
  ck_assert_int_eq (pp.io_result, -1);
  ck_assert_ptr_nonnull (strstr (pp.io_error, "protocol error"));
  ck_assert (!grpc_conn_alive (pp.conn));
  /* Later calls fail at once. */
  ck_assert_ptr_null (grpc_call_start (pp.conn, "/test.Echo/Unary", NULL, 0, &err));
  ck_assert_ptr_nonnull (strstr (err->msg, "is gone"));
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

START_TEST (peer_hangup_fails_pending_calls)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Silent", NULL, 0, &err);
  usleep (50000);
  fake_peer_hangup (pp.peer);
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
  ck_assert_str_eq (err->msg, "Echo/Silent: session connection lost: connection closed by the client");
  ck_assert_int_eq (err->status, 502);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (grpc_call_send (call, "x", 1, &err), -1);
  ps_error_free (err);
  grpc_call_free (call);
  pair_stop (&pp);
  ck_assert_int_eq (pp.io_result, 0);
}
END_TEST

START_TEST (shutdown_fails_pending_calls)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Silent", NULL, 0, &err);
  usleep (50000);
  grpc_conn_shutdown (pp.conn);
  void *m = NULL;
  size_t n = 0;
  ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "closed by the daemon"));
  ps_error_free (err);
  grpc_call_free (call);
  pair_stop (&pp);
  ck_assert_int_eq (pp.io_result, 0);
}
END_TEST

/* The server ends these calls before we half-close; were such streams
   left open, the peer's 250-stream limit would stall call 251. */
START_TEST (finished_streams_do_not_linger)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  for (int i = 0; i < 300; i++)
    {
      ps_error *err = NULL;
      grpc_call *call = grpc_call_start (pp.conn, "/test.Echo/Metadata", NULL, 0, &err);
      void *m = NULL;
      size_t n = 0;
      ck_assert_msg (grpc_call_recv (call, &m, &n, 5000, &err) == 1, "call %d: %s", i, err ? err->msg : "");
      free (m);
      ck_assert_int_eq (grpc_call_recv (call, &m, &n, 5000, &err), 0);
      grpc_call_free (call);
    }
  pair_stop (&pp);
}
END_TEST

START_TEST (goaway_lets_running_calls_finish_and_refuses_new_ones)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  ps_error *err = NULL;
  char *resp = call_unary (pp.conn, "/test.Echo/GoAway", "x", NULL, &err);
  ck_assert_msg (resp != NULL, "%s", err ? err->msg : "");
  ck_assert_str_eq (resp, "served");
  free (resp);
  ck_assert (!grpc_conn_alive (pp.conn));
  ck_assert_ptr_null (grpc_call_start (pp.conn, "/test.Echo/Unary", NULL, 0, &err));
  ck_assert_msg (strstr (err->msg, "the client sent GOAWAY (NO_ERROR: bye)") != NULL, "%s", err->msg);
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

struct worker
{
  grpc_conn *conn;
  int id;
  int ok;
};

static void *
worker_main (void *arg)
{
  struct worker *w = arg;
  for (int i = 0; i < 25; i++)
    {
      char req[64];
      snprintf (req, sizeof req, "worker %d call %d", w->id, i);
      ps_error *err = NULL;
      void *resp = NULL;
      size_t len = 0;
      if (grpc_unary (w->conn, "/test.Echo/Unary", NULL, 0, req, strlen (req), &resp, &len, 10000, NULL, &err) == 0
          && strcmp (resp, req) == 0)
        w->ok++;
      free (resp);
      ps_error_free (err);
    }
  return NULL;
}

START_TEST (calls_from_many_threads)
{
  struct peer_pair pp;
  pair_start (&pp, &normal);
  struct worker w[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++)
    {
      w[i] = (struct worker) { .conn = pp.conn, .id = i };
      pthread_create (&th[i], NULL, worker_main, &w[i]);
    }
  for (int i = 0; i < 8; i++)
    {
      pthread_join (th[i], NULL);
      ck_assert_int_eq (w[i].ok, 25);
    }
  pair_stop (&pp);
}
END_TEST

START_TEST (helpers_labels_and_percent_decoding)
{
  char buf[64];
  ck_assert_str_eq (grpc_method_label ("/moby.filesync.v1.FileSync/DiffCopy", buf, sizeof buf), "FileSync/DiffCopy");
  ck_assert_str_eq (grpc_method_label ("/grpc.health.v1.Health/Check", buf, sizeof buf), "Health/Check");
  ck_assert_str_eq (grpc_method_label ("/Plain/Method", buf, sizeof buf), "Plain/Method");
  char *d = grpc_percent_decode ("a%20b%zz%4", 10);
  ck_assert_str_eq (d, "a b%zz%4");
  free (d);
  ck_assert_str_eq (grpc_status_name (12), "UNIMPLEMENTED");
  ck_assert_str_eq (grpc_status_name (99), "?");
}
END_TEST

/* The field numbers of schema/fsutil.proto produce the bytes of
   buildkit-protocols.md §3.6 and §1. */
START_TEST (fsutil_packets_match_the_documented_bytes)
{
  uint8_t buf[128];
  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ;
  p.id = 2;
  ck_assert_uint_eq (fsutil__types__packet__pack (&p, buf), 4);
  ck_assert_mem_eq (buf, "\x08\x01\x18\x02", 4);

  Fsutil__Types__Packet end = FSUTIL__TYPES__PACKET__INIT;
  ck_assert_uint_eq (fsutil__types__packet__pack (&end, buf), 0);

  Fsutil__Types__Stat st = FSUTIL__TYPES__STAT__INIT;
  st.path = (char *) "Dockerfile";
  st.mode = 420;
  st.size = 24;
  st.modtime = 1700000000123456789LL;
  Fsutil__Types__Packet sp = FSUTIL__TYPES__PACKET__INIT;
  sp.stat = &st;
  static const uint8_t want[] = { 0x12, 0x1b, 0x0a, 0x0a, 0x44, 0x6f, 0x63, 0x6b, 0x65, 0x72, 0x66, 0x69, 0x6c, 0x65,
                                  0x10, 0xa4, 0x03, 0x28, 0x18, 0x30, 0x95, 0x9a, 0x97, 0xec, 0xe3, 0x9f, 0xe7, 0xcb,
                                  0x17 };
  ck_assert_uint_eq (fsutil__types__packet__pack (&sp, buf), sizeof want);
  ck_assert_mem_eq (buf, want, sizeof want);

  Fsutil__Types__Packet e = FSUTIL__TYPES__PACKET__INIT;
  e.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR;
  e.data.data = (uint8_t *) "boom";
  e.data.len = 4;
  ck_assert_uint_eq (fsutil__types__packet__pack (&e, buf), 8);
  ck_assert_mem_eq (buf, "\x08\x04\x22\x04" "boom", 8);
}
END_TEST

/* ---- reassembly without a connection ------------------------------------------ */

struct collected
{
  ps_buf all; /* messages joined with '|' */
  size_t n;
  size_t last_len;
};

static void
collect (void *ud, const void *msg, size_t len)
{
  struct collected *c = ud;
  if (c->n++)
    ps_buf_append (&c->all, "|", 1);
  ps_buf_append (&c->all, msg, len);
  c->last_len = len;
}

static size_t
frame (uint8_t *out, uint8_t flag, uint32_t len, const char *payload)
{
  out[0] = flag;
  out[1] = (uint8_t) (len >> 24);
  out[2] = (uint8_t) (len >> 16);
  out[3] = (uint8_t) (len >> 8);
  out[4] = (uint8_t) len;
  if (payload)
    memcpy (out + 5, payload, strlen (payload));
  return 5 + (payload ? strlen (payload) : 0);
}

/* DATA frames may cut a message (or its prefix) anywhere: every way of
   cutting the stream into three chunks gives the same messages. */
START_TEST (reassembly_is_the_same_for_every_split)
{
  uint8_t stream[64];
  size_t n = 0;
  n += frame (stream + n, 0, 5, "alpha");
  n += frame (stream + n, 0, 0, NULL);
  n += frame (stream + n, 0, 13, "bravo-charlie");
  for (size_t i = 0; i <= n; i++)
    for (size_t j = i; j <= n; j++)
      {
        struct grpc_reassembly r = { 0 };
        struct collected c = { 0 };
        ps_error *err = NULL;
        ck_assert_int_eq (grpc_reassemble (&r, stream, i, collect, &c, NULL, &err), 0);
        ck_assert_int_eq (grpc_reassemble (&r, stream + i, j - i, collect, &c, NULL, &err), 0);
        ck_assert_int_eq (grpc_reassemble (&r, stream + j, n - j, collect, &c, NULL, &err), 0);
        ck_assert_uint_eq (c.n, 3);
        ck_assert_str_eq (c.all.data, "alpha||bravo-charlie");
        ck_assert_uint_eq (grpc_reassembly_pending (&r), 0);
        ps_buf_free (&c.all);
        grpc_reassembly_free (&r);
      }
}
END_TEST

/* 4 MiB is the largest message accepted (grpc-go's default, which the
   docker CLI keeps); one byte more is refused from its prefix alone. */
START_TEST (reassembly_takes_4mib_and_refuses_one_byte_more)
{
  size_t big = PS_GRPC_MAX_MESSAGE;
  uint8_t *stream = xcalloc (1, 5 + big + 5 + 3);
  frame (stream, 0, (uint32_t) big, NULL);
  memset (stream + 5, 'z', big);
  frame (stream + 5 + big, 0, (uint32_t) big + 1, NULL);
  memcpy (stream + 5 + big + 5, "xyz", 3);
  size_t total = 5 + big + 5 + 3;

  struct grpc_reassembly r = { 0 };
  struct collected c = { 0 };
  ps_error *err = NULL;
  size_t dropped = 0, off = 0;
  int code = 0;
  /* 16 KiB DATA frames (HTTP/2's default maximum frame size). */
  while (off < total && code == 0)
    {
      size_t chunk = total - off < 16384 ? total - off : 16384;
      code = grpc_reassemble (&r, stream + off, chunk, collect, &c, &dropped, &err);
      off += chunk;
    }
  ck_assert_uint_eq (c.n, 1);
  ck_assert_uint_eq (c.last_len, big);
  ck_assert_int_eq (code, GRPC_STATUS_RESOURCE_EXHAUSTED);
  ck_assert_int_eq (err->status, 413);
  ck_assert_str_eq (err->msg, "grpc status 8 (RESOURCE_EXHAUSTED): received message larger than max "
                              "(4194305 vs. 4194304 bytes)");
  /* The refused prefix and what followed it in its chunk get their flow
     control credit back; nothing of it was buffered. */
  ck_assert_uint_eq (dropped, 5 + 3);
  ck_assert_uint_eq (grpc_reassembly_pending (&r), 0);
  ps_error_free (err);
  ps_buf_free (&c.all);
  grpc_reassembly_free (&r);
  free (stream);
}
END_TEST

START_TEST (reassembly_refuses_a_compressed_message)
{
  uint8_t stream[32];
  size_t n = frame (stream, 0, 2, "ok");
  n += frame (stream + n, 1, 3, "zip");
  struct grpc_reassembly r = { 0 };
  struct collected c = { 0 };
  ps_error *err = NULL;
  size_t dropped = 0;
  /* The bad prefix arrives in two chunks. */
  ck_assert_int_eq (grpc_reassemble (&r, stream, 9, collect, &c, &dropped, &err), 0);
  ck_assert_uint_eq (grpc_reassembly_pending (&r), 2);
  ck_assert_int_eq (grpc_reassemble (&r, stream + 9, n - 9, collect, &c, &dropped, &err), GRPC_STATUS_INTERNAL);
  ck_assert_str_eq (c.all.data, "ok");
  ck_assert_str_eq (err->msg, "grpc status 13 (INTERNAL): compressed message (flag 1) but no compression was "
                              "negotiated");
  ck_assert_uint_eq (dropped, 5 + 3);
  ps_error_free (err);
  ps_buf_free (&c.all);
  grpc_reassembly_free (&r);
}
END_TEST

PS_TEST_SUITE (session_grpc)
{
  Suite *s = suite_create ("session_grpc");
  TCase *tc = tcase_create ("grpc");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, unary_call_round_trip);
  tcase_add_test (tc, bidi_stream_interleaves_and_half_closes);
  tcase_add_test (tc, several_messages_in_one_frame);
  tcase_add_test (tc, large_messages_reassemble_and_flow_control_replenishes);
  tcase_add_test (tc, trailers_only_error_is_percent_decoded);
  tcase_add_test (tc, status_after_messages);
  tcase_add_test (tc, unimplemented_method);
  tcase_add_test (tc, metadata_keys_repeat);
  tcase_add_test (tc, message_over_4mib_is_refused_and_stream_reset);
  tcase_add_test (tc, recv_times_out_and_cancel_resets_the_stream);
  tcase_add_test (tc, stream_without_status_or_reset_by_peer_fails);
  tcase_add_test (tc, garbage_after_connect_kills_the_connection);
  tcase_add_test (tc, peer_hangup_fails_pending_calls);
  tcase_add_test (tc, shutdown_fails_pending_calls);
  tcase_add_test (tc, calls_from_many_threads);
  tcase_add_test (tc, finished_streams_do_not_linger);
  tcase_add_test (tc, goaway_lets_running_calls_finish_and_refuses_new_ones);
  tcase_add_test (tc, helpers_labels_and_percent_decoding);
  tcase_add_test (tc, fsutil_packets_match_the_documented_bytes);
  tcase_add_test (tc, reassembly_is_the_same_for_every_split);
  tcase_add_test (tc, reassembly_takes_4mib_and_refuses_one_byte_more);
  tcase_add_test (tc, reassembly_refuses_a_compressed_message);
  suite_add_tcase (s, tc);
  return s;
}
