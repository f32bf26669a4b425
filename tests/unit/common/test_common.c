/* test_common.c — the shared helpers: errors, buffers, base64, paths. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "common/ps.h"
#include "schema/apierror.h"
#include "tests/unit/unit.h"

START_TEST (error_wrap_reads_like_a_path)
{
  ps_error *err = NULL;
  ck_assert_int_eq (ps_error_set (&err, 400, "entry %s escapes", "../x"), -1);
  ps_error_wrap (&err, "extract context");
  ps_error_wrap (&err, "build %s", "abc");
  ck_assert_str_eq (err->msg, "build abc: extract context: entry ../x escapes");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

START_TEST (base64_round_trip_and_url_alphabet)
{
  const char *in = "{\"a\":\"b?>\"}";
  char *enc = ps_base64_encode (in, strlen (in));
  unsigned char *dec = NULL;
  size_t n = 0;
  ck_assert_int_eq (ps_base64_decode (enc, &dec, &n), 0);
  ck_assert_uint_eq (n, strlen (in));
  ck_assert_mem_eq (dec, in, n);
  free (dec);
  free (enc);
  /* "e30=" is what the docker CLI sends for {} ; unpadded url-safe too. */
  ck_assert_int_eq (ps_base64_decode ("e30", &dec, &n), 0);
  ck_assert_str_eq ((char *) dec, "{}");
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("Pz8-", &dec, &n), 0);
  ck_assert_str_eq ((char *) dec, "?" "?>");
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("!!!!", &dec, &n), -1);
  /* Found by fuzz_llb: only padding wrote before the buffer. */
  ck_assert_int_eq (ps_base64_decode ("=", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("==", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("===", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("a===", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("ab=c", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("", &dec, &n), 0);
  ck_assert_uint_eq (n, 0);
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("YQ==", &dec, &n), 0);
  ck_assert_uint_eq (n, 1);
  ck_assert_str_eq ((char *) dec, "a");
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("YWI", &dec, &n), 0);
  ck_assert_str_eq ((char *) dec, "ab");
  free (dec);
}
END_TEST

START_TEST (path_containment)
{
  ck_assert (ps_path_is_contained ("a/b/c"));
  ck_assert (ps_path_is_contained (".dockerfile.abc"));
  ck_assert (ps_path_is_contained ("a..b/c"));
  ck_assert (!ps_path_is_contained ("../x"));
  ck_assert (!ps_path_is_contained ("a/../../x"));
  ck_assert (!ps_path_is_contained ("a/.."));
  ck_assert (!ps_path_is_contained ("/etc/passwd"));
  ck_assert (!ps_path_is_contained (""));
}
END_TEST

START_TEST (buffer_and_strv)
{
  ps_buf b = { 0 };
  ps_buf_printf (&b, "%d-%s", 42, "x");
  ps_buf_append (&b, "yz", 2);
  ck_assert_str_eq (b.data, "42-xyz");
  ck_assert_uint_eq (b.len, 6);
  ps_buf_free (&b);

  ps_strv v = { 0 };
  for (int i = 0; i < 40; i++)
    ps_strv_pushf (&v, "a%d", i);
  ck_assert_uint_eq (v.n, 40);
  ck_assert_str_eq (v.v[39], "a39");
  ck_assert_ptr_null (v.v[40]);
  ps_strv_free (&v);
}
END_TEST

START_TEST (api_error_body_has_podman_fields)
{
  char *s = schema_api_error_json (400, NULL, "failed to parse query parameter 'memory': \"x\": not an integer");
  ck_assert_str_eq (s, "{\"cause\":\"not an integer\",\"message\":\"failed to parse query parameter 'memory': "
                       "\\\"x\\\": not an integer\",\"response\":400}\n");
  free (s);
}
END_TEST

PS_TEST_SUITE (common)
{
  Suite *s = suite_create ("common");
  TCase *tc = tcase_create ("helpers");
  tcase_add_test (tc, error_wrap_reads_like_a_path);
  tcase_add_test (tc, base64_round_trip_and_url_alphabet);
  tcase_add_test (tc, path_containment);
  tcase_add_test (tc, buffer_and_strv);
  tcase_add_test (tc, api_error_body_has_podman_fields);
  suite_add_tcase (s, tc);
  return s;
}
