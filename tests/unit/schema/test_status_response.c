/* test_status_response.c — the Control.Status encoder: one bare
 * StatusResponse per progress event, byte for byte the one inside
 * /build?version=2's trace record for the same event, nothing for the
 * events that have no StatusResponse form. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"
#include "schema/status_response.h"
#include "schema/trace.h"
#include "tests/unit/unit.h"

/* The protobuf inside a trace line's "aux". */
static unsigned char *
trace_payload (const ps_buf *line, size_t *len)
{
  cJSON *o = cJSON_ParseWithLength (line->data, line->len);
  ck_assert_ptr_nonnull (o);
  const cJSON *aux = cJSON_GetObjectItemCaseSensitive (o, "aux");
  ck_assert (cJSON_IsString (aux));
  unsigned char *pb = NULL;
  ck_assert_int_eq (ps_base64_decode (aux->valuestring, &pb, len), 0);
  cJSON_Delete (o);
  return pb;
}

START_TEST (same_bytes_as_the_trace_records)
{
  char *inputs[] = { (char *) "sha256:aa", (char *) "sha256:cc", NULL };
  struct solver_event events[] = {
    { .kind = SOLVER_EV_VERTEX, .vertex = (char *) "sha256:bb", .name = (char *) "[1/2] RUN x", .inputs = inputs,
      .started_ns = 1700000000500000000LL },
    { .kind = SOLVER_EV_STATUS, .vertex = (char *) "sha256:bb", .status_id = (char *) "transferring context:",
      .current = 52, .total = 100, .time_ns = 1700000000000000000LL, .started_ns = 1700000000000000001LL },
    { .kind = SOLVER_EV_LOG, .vertex = (char *) "sha256:bb", .stream = 2, .data = (char *) "he\0lo", .len = 5,
      .time_ns = 1700000000000000042LL },
    { .kind = SOLVER_EV_VERTEX, .vertex = (char *) "sha256:bb", .name = (char *) "[1/2] RUN x", .inputs = inputs,
      .started_ns = 1700000000500000000LL, .completed_ns = 1700000001000000000LL, .cached = true,
      .error = (char *) "exit code: 3" },
  };
  struct event_encoder *sr = schema_status_response_encoder_new ();
  struct event_encoder *tr = schema_trace_encoder_new (false);
  for (size_t i = 0; i < ARRAY_SIZE (events); i++)
    {
      ps_buf a = { 0 }, b = { 0 };
      event_encoder_encode (sr, &events[i], &a);
      event_encoder_encode (tr, &events[i], &b);
      ck_assert_uint_gt (a.len, 0);
      size_t len = 0;
      cleanup_free unsigned char *pb = trace_payload (&b, &len);
      ck_assert_uint_eq (a.len, len);
      ck_assert_mem_eq (a.data, pb, len);

      /* and it is exactly one StatusResponse */
      Moby__Buildkit__V1__StatusResponse *r
          = moby__buildkit__v1__status_response__unpack (NULL, a.len, (const uint8_t *) a.data);
      ck_assert_ptr_nonnull (r);
      ck_assert_uint_eq (r->n_vertexes + r->n_statuses + r->n_logs, 1);
      moby__buildkit__v1__status_response__free_unpacked (r, NULL);
      ps_buf_free (&a);
      ps_buf_free (&b);
    }
  event_encoder_free (sr);
  event_encoder_free (tr);
}
END_TEST

START_TEST (vertex_decodes_back)
{
  char *inputs[] = { (char *) "sha256:aa", NULL };
  struct solver_event ev = { .kind = SOLVER_EV_VERTEX, .vertex = (char *) "sha256:bb", .name = (char *) "n",
                             .inputs = inputs, .completed_ns = 1700000001000000007LL };
  struct event_encoder *sr = schema_status_response_encoder_new ();
  ps_buf out = { 0 };
  event_encoder_encode (sr, &ev, &out);
  Moby__Buildkit__V1__StatusResponse *r
      = moby__buildkit__v1__status_response__unpack (NULL, out.len, (const uint8_t *) out.data);
  ck_assert_ptr_nonnull (r);
  ck_assert_uint_eq (r->n_vertexes, 1);
  ck_assert_str_eq (r->vertexes[0]->digest, "sha256:bb");
  ck_assert_uint_eq (r->vertexes[0]->n_inputs, 1);
  ck_assert_ptr_null (r->vertexes[0]->started);
  ck_assert_int_eq (r->vertexes[0]->completed->seconds, 1700000001);
  ck_assert_int_eq (r->vertexes[0]->completed->nanos, 7);
  moby__buildkit__v1__status_response__free_unpacked (r, NULL);
  ps_buf_free (&out);
  event_encoder_free (sr);
}
END_TEST

START_TEST (no_message_for_text_result_and_error)
{
  char *tags[] = { (char *) "app", NULL };
  struct solver_event events[] = {
    { .kind = SOLVER_EV_TEXT, .text = (char *) "--> 1a2b\n" },
    { .kind = SOLVER_EV_RESULT, .image_id = (char *) "ab12", .tags = tags },
    { .kind = SOLVER_EV_ERROR, .error = (char *) "exit status 3", .exit_code = 3 },
  };
  struct event_encoder *sr = schema_status_response_encoder_new ();
  ps_buf out = { 0 };
  for (size_t i = 0; i < ARRAY_SIZE (events); i++)
    {
      event_encoder_encode (sr, &events[i], &out);
      ck_assert_uint_eq (out.len, 0);
      size_t len = 0;
      ck_assert_ptr_null (schema_status_response_pack (&events[i], &len));
    }
  ps_buf_free (&out);
  event_encoder_free (sr);
}
END_TEST

PS_TEST_SUITE (status_response)
{
  Suite *s = suite_create ("status_response");
  TCase *tc = tcase_create ("encode");
  tcase_add_test (tc, same_bytes_as_the_trace_records);
  tcase_add_test (tc, vertex_decodes_back);
  tcase_add_test (tc, no_message_for_text_result_and_error);
  suite_add_tcase (s, tc);
  return s;
}
