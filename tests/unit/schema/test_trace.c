/* test_trace.c — /build?version=2 trace records: the protobuf decodes back
 * to the event (BuildKit's field numbers), and the line shapes are moby's. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"
#include "schema/status_response.h"
#include "schema/trace.h"
#include "tests/unit/unit.h"

START_TEST (vertex_round_trips_through_protobuf)
{
  char *inputs[] = { (char *) "sha256:aa", NULL };
  struct solver_event ev = { .kind = SOLVER_EV_VERTEX, .vertex = (char *) "sha256:bb", .name = (char *) "[1/2] RUN x",
                             .inputs = inputs, .started_ns = 1700000000500000000LL,
                             .completed_ns = 1700000001000000000LL, .cached = true, .error = (char *) "bad" };
  size_t len = 0;
  uint8_t *pb = schema_status_response_pack (&ev, &len);
  Moby__Buildkit__V1__StatusResponse *r = moby__buildkit__v1__status_response__unpack (NULL, len, pb);
  ck_assert_ptr_nonnull (r);
  ck_assert_uint_eq (r->n_vertexes, 1);
  Moby__Buildkit__V1__Vertex *v = r->vertexes[0];
  ck_assert_str_eq (v->digest, "sha256:bb");
  ck_assert_str_eq (v->name, "[1/2] RUN x");
  ck_assert_uint_eq (v->n_inputs, 1);
  ck_assert_str_eq (v->inputs[0], "sha256:aa");
  ck_assert (v->cached);
  ck_assert_int_eq (v->started->seconds, 1700000000);
  ck_assert_int_eq (v->started->nanos, 500000000);
  ck_assert_int_eq (v->completed->seconds, 1700000001);
  ck_assert_str_eq (v->error, "bad");
  /* field 1 (vertexes), wire type 2: the first byte is 0x0a */
  ck_assert_uint_eq (pb[0], 0x0a);
  moby__buildkit__v1__status_response__free_unpacked (r, NULL);
  free (pb);
}
END_TEST

START_TEST (log_and_status_carry_timestamps)
{
  struct solver_event l = { .kind = SOLVER_EV_LOG, .vertex = (char *) "sha256:bb", .stream = 2,
                            .data = (char *) "he\0lo", .len = 5, .time_ns = 1700000000000000042LL };
  size_t len = 0;
  uint8_t *pb = schema_status_response_pack (&l, &len);
  Moby__Buildkit__V1__StatusResponse *r = moby__buildkit__v1__status_response__unpack (NULL, len, pb);
  ck_assert_uint_eq (r->n_logs, 1);
  ck_assert_int_eq (r->logs[0]->stream, 2);
  ck_assert_uint_eq (r->logs[0]->msg.len, 5);
  ck_assert_mem_eq (r->logs[0]->msg.data, "he\0lo", 5);
  ck_assert_int_eq (r->logs[0]->timestamp->nanos, 42);
  moby__buildkit__v1__status_response__free_unpacked (r, NULL);
  free (pb);

  struct solver_event s = { .kind = SOLVER_EV_STATUS, .vertex = (char *) "sha256:bb",
                            .status_id = (char *) "transferring context:", .current = 52, .total = 100,
                            .time_ns = 1700000000000000000LL };
  pb = schema_status_response_pack (&s, &len);
  r = moby__buildkit__v1__status_response__unpack (NULL, len, pb);
  ck_assert_uint_eq (r->n_statuses, 1);
  ck_assert_str_eq (r->statuses[0]->id, "transferring context:");
  ck_assert_int_eq (r->statuses[0]->current, 52);
  ck_assert_int_eq (r->statuses[0]->total, 100);
  ck_assert_ptr_nonnull (r->statuses[0]->timestamp);
  moby__buildkit__v1__status_response__free_unpacked (r, NULL);
  free (pb);
}
END_TEST

START_TEST (lines_are_moby_shaped)
{
  struct event_encoder *enc = schema_trace_encoder_new (false);
  ps_buf out = { 0 };
  struct solver_event v = { .kind = SOLVER_EV_VERTEX, .vertex = (char *) "sha256:bb", .name = (char *) "n" };
  event_encoder_encode (enc, &v, &out);
  ck_assert (ps_str_has_prefix (out.data, "{\"id\":\"moby.buildkit.trace\",\"aux\":\""));
  ck_assert (ps_str_has_suffix (out.data, "\"}\r\n"));
  ps_buf_reset (&out);

  char *tags[] = { (char *) "app", NULL };
  struct solver_event r = { .kind = SOLVER_EV_RESULT, .image_id = (char *) "ab12", .tags = tags };
  event_encoder_encode (enc, &r, &out);
  ck_assert_str_eq (out.data, "{\"id\":\"moby.image.id\",\"aux\":{\"ID\":\"sha256:ab12\"}}\r\n"
                              "{\"stream\":\"Successfully tagged app\\n\"}\r\n");
  ps_buf_reset (&out);

  /* quiet: progress held back, released before an error */
  event_encoder_free (enc);
  enc = schema_trace_encoder_new (true);
  event_encoder_encode (enc, &v, &out);
  ck_assert_uint_eq (out.len, 0);
  struct solver_event e = { .kind = SOLVER_EV_ERROR, .error = (char *) "exit status 3", .exit_code = 3 };
  event_encoder_encode (enc, &e, &out);
  ck_assert (ps_str_has_prefix (out.data, "{\"id\":\"moby.buildkit.trace\""));
  ck_assert (strstr (out.data, "{\"errorDetail\":{\"code\":3,\"message\":\"exit status 3\"},\"error\":\"exit status 3\"}\r\n")
             != NULL);
  ps_buf_free (&out);
  event_encoder_free (enc);
}
END_TEST

/* A quiet build that succeeds shows the image ID only: the held progress
   is dropped. */
START_TEST (quiet_success_is_the_id_only)
{
  struct event_encoder *enc = schema_trace_encoder_new (true);
  ps_buf out = { 0 };
  struct solver_event l = { .kind = SOLVER_EV_LOG, .vertex = (char *) "sha256:bb", .data = (char *) "hi\n", .len = 3,
                            .stream = 1, .time_ns = 1700000000000000000LL };
  event_encoder_encode (enc, &l, &out);
  ck_assert_uint_eq (out.len, 0);
  char *tags[] = { (char *) "app", NULL };
  struct solver_event r = { .kind = SOLVER_EV_RESULT, .image_id = (char *) "ab12", .tags = tags };
  event_encoder_encode (enc, &r, &out);
  ck_assert_str_eq (out.data, "{\"stream\":\"sha256:ab12\\n\"}\r\n");
  ps_buf_free (&out);
  event_encoder_free (enc);
}
END_TEST

PS_TEST_SUITE (trace)
{
  Suite *s = suite_create ("trace");
  TCase *tc = tcase_create ("encode");
  tcase_add_test (tc, vertex_round_trips_through_protobuf);
  tcase_add_test (tc, log_and_status_carry_timestamps);
  tcase_add_test (tc, lines_are_moby_shaped);
  tcase_add_test (tc, quiet_success_is_the_id_only);
  suite_add_tcase (s, tc);
  return s;
}
