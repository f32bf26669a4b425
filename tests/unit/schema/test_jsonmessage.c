/* test_jsonmessage.c — the Podman-compatible /build stream encoding. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "schema/jsonmessage.h"
#include "tests/unit/unit.h"

#define ID64 "65204c41aff7030161dc098389624827bd6a530983f4a633bf8306d98fb7b16c"

static struct solver_event
result_event (void)
{
  struct solver_event ev = { .kind = SOLVER_EV_RESULT };
  ev.image_id = (char *) ID64;
  static char *tags[] = { (char *) "y", NULL };
  ev.tags = tags;
  return ev;
}

START_TEST (compat_result_is_aux_built_tagged)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (true, false);
  struct solver_event ev = result_event ();
  ps_buf out = { 0 };
  event_encoder_encode (o, &ev, &out);
  ck_assert_str_eq (out.data, "{\"aux\":{\"ID\":\"sha256:" ID64 "\"}}\n"
                              "{\"stream\":\"Successfully built 65204c41aff7\\n\"}\n"
                              "{\"stream\":\"Successfully tagged y\\n\"}\n");
  ps_buf_free (&out);
  event_encoder_free (o);
}
END_TEST

START_TEST (libpod_result_adds_nothing_quiet_is_bare_id)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (false, false);
  struct solver_event ev = result_event ();
  ps_buf out = { 0 };
  event_encoder_encode (o, &ev, &out);
  ck_assert_uint_eq (out.len, 0);
  event_encoder_free (o);
  o = schema_jsonmessage_encoder_new (true, true);
  event_encoder_encode (o, &ev, &out);
  ck_assert_str_eq (out.data, "{\"stream\":\"" ID64 "\\n\"}\n");
  ps_buf_free (&out);
  event_encoder_free (o);
}
END_TEST

START_TEST (text_escapes_like_go)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (true, false);
  struct solver_event ev = { .kind = SOLVER_EV_VERTEX, .text = (char *) "STEP 2/4: RUN echo hello > /hello.txt && x\n" };
  ps_buf out = { 0 };
  event_encoder_encode (o, &ev, &out);
  ck_assert_str_eq (out.data, "{\"stream\":\"STEP 2/4: RUN echo hello \\u003e /hello.txt \\u0026\\u0026 x\\n\"}\n");
  ps_buf_free (&out);
  event_encoder_free (o);
}
END_TEST

START_TEST (error_carries_exit_code)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (true, false);
  struct solver_event ev = { .kind = SOLVER_EV_ERROR, .error = (char *) "building at STEP \"RUN exit 3\": exit status 3",
                             .exit_code = 3 };
  ps_buf out = { 0 };
  event_encoder_encode (o, &ev, &out);
  ck_assert_str_eq (out.data, "{\"errorDetail\":{\"code\":3,\"message\":\"building at STEP \\\"RUN exit 3\\\": exit "
                              "status 3\"},\"error\":\"building at STEP \\\"RUN exit 3\\\": exit status 3\"}\n");
  ps_buf_free (&out);
  event_encoder_free (o);
}
END_TEST

START_TEST (log_bytes_sanitised_to_utf8)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (true, false);
  struct solver_event ev = { .kind = SOLVER_EV_LOG, .data = (char *) "a\xff\0b\n", .len = 5, .stream = 1 };
  ps_buf out = { 0 };
  event_encoder_encode (o, &ev, &out);
  ck_assert_str_eq (out.data, "{\"stream\":\"a\xef\xbf\xbd\xef\xbf\xbd" "b\\n\"}\n");
  ps_buf_free (&out);
  event_encoder_free (o);
  char *s = schema_utf8_sanitize ("\xe2\x82\xac ok", 6);
  ck_assert_str_eq (s, "\xe2\x82\xac ok");
  free (s);
}
END_TEST

START_TEST (quiet_hides_progress)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (true, true);
  struct solver_event ev = { .kind = SOLVER_EV_TEXT, .text = (char *) "--> abc\n" };
  ps_buf out = { 0 };
  event_encoder_encode (o, &ev, &out);
  ck_assert_uint_eq (out.len, 0);
  ps_buf_free (&out);
  event_encoder_free (o);
}
END_TEST

/* Docker and Podman replay a quiet build's output when it fails. */
START_TEST (quiet_failure_replays_held_output)
{
  struct event_encoder *o = schema_jsonmessage_encoder_new (true, true);
  ps_buf out = { 0 };
  struct solver_event l = { .kind = SOLVER_EV_LOG, .data = (char *) "quiet-fail-X\n", .len = 13, .stream = 1 };
  event_encoder_encode (o, &l, &out);
  ck_assert_uint_eq (out.len, 0);
  struct solver_event e = { .kind = SOLVER_EV_ERROR, .error = (char *) "exit status 5", .exit_code = 5 };
  event_encoder_encode (o, &e, &out);
  ck_assert_str_eq (out.data, "{\"stream\":\"quiet-fail-X\\n\"}\n"
                              "{\"errorDetail\":{\"code\":5,\"message\":\"exit status 5\"},\"error\":\"exit status 5\"}\n");
  ps_buf_free (&out);
  event_encoder_free (o);
}
END_TEST

PS_TEST_SUITE (jsonmessage)
{
  Suite *s = suite_create ("jsonmessage");
  TCase *tc = tcase_create ("encode");
  tcase_add_test (tc, compat_result_is_aux_built_tagged);
  tcase_add_test (tc, libpod_result_adds_nothing_quiet_is_bare_id);
  tcase_add_test (tc, text_escapes_like_go);
  tcase_add_test (tc, error_carries_exit_code);
  tcase_add_test (tc, log_bytes_sanitised_to_utf8);
  tcase_add_test (tc, quiet_hides_progress);
  tcase_add_test (tc, quiet_failure_replays_held_output);
  suite_add_tcase (s, tc);
  return s;
}
