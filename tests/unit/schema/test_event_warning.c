/* test_event_warning.c — a SOLVER_EV_WARNING (LLBBridge.Warn) in every
 * encoder, as BuildKit shows a VertexWarning: StatusResponse.warnings in
 * Control.Status and the /build?version=2 trace, SolveStatus "warnings"
 * (base64 []byte fields) in /solve's NDJSON, its text line in the
 * JSONMessage stream; never an outcome. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"
#include "schema/jsonmessage.h"
#include "schema/solve_status.h"
#include "schema/status_response.h"
#include "schema/trace.h"
#include "tests/unit/unit.h"

static char *details[] = { (char *) "first line", (char *) "second", NULL };
static const struct solver_event warn_ev = {
  .kind = SOLVER_EV_WARNING,
  .vertex = (char *) "sha256:cc",
  .level = 1,
  .warning = (char *) "FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
  .details = details,
  .url = (char *) "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
  .text = (char *) "WARNING: FromAsCasing\n",
};

START_TEST (status_response_carries_the_warning)
{
  size_t len = 0;
  cleanup_free uint8_t *pb = schema_status_response_pack (&warn_ev, &len);
  ck_assert_ptr_nonnull (pb);
  Moby__Buildkit__V1__StatusResponse *r = moby__buildkit__v1__status_response__unpack (NULL, len, pb);
  ck_assert_ptr_nonnull (r);
  ck_assert_uint_eq (r->n_vertexes + r->n_statuses + r->n_logs, 0);
  ck_assert_uint_eq (r->n_warnings, 1);
  Moby__Buildkit__V1__VertexWarning *w = r->warnings[0];
  ck_assert_str_eq (w->vertex, "sha256:cc");
  ck_assert_int_eq (w->level, 1);
  ck_assert_uint_eq (w->short_.len, strlen (warn_ev.warning));
  ck_assert (memcmp (w->short_.data, warn_ev.warning, w->short_.len) == 0);
  ck_assert_uint_eq (w->n_detail, 2);
  ck_assert (w->detail[1].len == 6 && memcmp (w->detail[1].data, "second", 6) == 0);
  ck_assert_str_eq (w->url, warn_ev.url);
  moby__buildkit__v1__status_response__free_unpacked (r, NULL);

  /* The trace record wraps the same bytes. */
  struct event_encoder *tr = schema_trace_encoder_new (false);
  ps_buf line = { 0 };
  event_encoder_encode (tr, &warn_ev, &line);
  ck_assert_ptr_nonnull (strstr (line.data, "moby.buildkit.trace"));
  ps_buf_free (&line);
  event_encoder_free (tr);
}
END_TEST

START_TEST (solve_status_has_warnings)
{
  struct event_encoder *enc = schema_solve_encoder_new ("ref");
  ps_buf out = { 0 };
  event_encoder_encode (enc, &warn_ev, &out);
  cJSON *o = cJSON_ParseWithLength (out.data, out.len);
  ck_assert_ptr_nonnull (o);
  const cJSON *ws = cJSON_GetObjectItemCaseSensitive (cJSON_GetObjectItemCaseSensitive (o, "status"), "warnings");
  ck_assert_int_eq (cJSON_GetArraySize (ws), 1);
  const cJSON *w = cJSON_GetArrayItem (ws, 0);
  ck_assert_str_eq (cJSON_GetObjectItemCaseSensitive (w, "vertex")->valuestring, "sha256:cc");
  ck_assert_int_eq (cJSON_GetObjectItemCaseSensitive (w, "level")->valueint, 1);
  unsigned char *s = NULL;
  size_t n = 0;
  ck_assert_int_eq (ps_base64_decode (cJSON_GetObjectItemCaseSensitive (w, "short")->valuestring, &s, &n), 0);
  ck_assert_uint_eq (n, strlen (warn_ev.warning));
  free (s);
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItemCaseSensitive (w, "detail")), 2);
  ck_assert_str_eq (cJSON_GetObjectItemCaseSensitive (w, "url")->valuestring, warn_ev.url);
  ck_assert_ptr_null (cJSON_GetObjectItemCaseSensitive (o, "result"));
  ck_assert_ptr_null (cJSON_GetObjectItemCaseSensitive (o, "error"));
  cJSON_Delete (o);
  ps_buf_free (&out);
  event_encoder_free (enc);
}
END_TEST

START_TEST (jsonmessage_shows_the_text)
{
  struct event_encoder *enc = schema_jsonmessage_encoder_new (false, false);
  ps_buf out = { 0 };
  event_encoder_encode (enc, &warn_ev, &out);
  ck_assert_ptr_nonnull (strstr (out.data, "{\"stream\":\"WARNING: FromAsCasing\\n\"}"));
  ps_buf_free (&out);
  event_encoder_free (enc);
}
END_TEST

PS_TEST_SUITE (event_warning)
{
  Suite *s = suite_create ("event_warning");
  TCase *tc = tcase_create ("encode");
  tcase_add_test (tc, status_response_carries_the_warning);
  tcase_add_test (tc, solve_status_has_warnings);
  tcase_add_test (tc, jsonmessage_shows_the_text);
  suite_add_tcase (s, tc);
  return s;
}
