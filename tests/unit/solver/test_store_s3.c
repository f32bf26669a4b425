/* test_store_s3.c — the pure parts of the S3 backend: BuildKit's attrs,
 * object keys and URLs as SigV4 signs them, and how a large blob is cut
 * into parts. */
#define _GNU_SOURCE
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "solver/store_s3.h"
#include "tests/unit/unit.h"

static struct solve_attrs
attrs_of (char **kv)
{
  size_t n = 0;
  while (kv[2 * n])
    n++;
  return (struct solve_attrs) { kv, n };
}

START_TEST (buildkit_attrs_parse_with_buildkit_defaults)
{
  unsetenv ("AWS_REGION");
  unsetenv ("AWS_DEFAULT_REGION");
  char *kv[] = { "bucket", "b", "region", "eu-west-1", NULL };
  struct solve_attrs a = attrs_of (kv);
  struct s3_config c;
  ps_error *err = NULL;
  ck_assert_int_eq (s3_config_parse (&c, &a, S3_LAYOUT_CACHE, "cache.exports[0]", &err), 0);
  ck_assert_str_eq (c.bucket, "b");
  ck_assert_str_eq (c.region, "eu-west-1");
  ck_assert_str_eq (c.prefix, "");
  ck_assert_str_eq (c.blobs_prefix, "blobs/");
  ck_assert_str_eq (c.manifests_prefix, "manifests/");
  ck_assert (!c.use_path_style); /* AWS: virtual-hosted */
  ck_assert_ptr_null (c.access_key_id);
  ck_assert_int_eq (c.upload_parallelism, 4);
  ck_assert_int_eq (c.touch_refresh, 24 * 3600);
  s3_config_free (&c);

  char *kv2[] = { "bucket", "b", "endpoint_url", "http://127.0.0.1:9000/", "upload_parallelism", "2",
                  "touch_refresh", "1h30m", "access_key_id", "AK", "secret_access_key", "SK", NULL };
  a = attrs_of (kv2);
  ck_assert_int_eq (s3_config_parse (&c, &a, S3_LAYOUT_CACHE, "x", &err), 0);
  ck_assert_str_eq (c.region, "us-east-1");
  ck_assert_str_eq (c.endpoint_url, "http://127.0.0.1:9000");
  ck_assert (c.use_path_style); /* an endpoint_url (MinIO): path-style */
  ck_assert_int_eq (c.upload_parallelism, 2);
  ck_assert_int_eq (c.touch_refresh, 5400);
  ck_assert_str_eq (c.secret_access_key, "SK");
  s3_config_free (&c);
}
END_TEST

START_TEST (bad_attrs_are_400s_naming_the_attr)
{
  static const struct
  {
    const char *k1, *v1, *k2, *v2;
    enum s3_layout layout;
    const char *names;
  } cases[] = {
    { "region", "x", NULL, NULL, S3_LAYOUT_CACHE, "attrs.bucket" },
    { "bucket", "b", "use_path_style", "yes", S3_LAYOUT_CACHE, "attrs.use_path_style" },
    { "bucket", "b", "upload_parallelism", "0", S3_LAYOUT_CACHE, "attrs.upload_parallelism" },
    { "bucket", "b", "touch_refresh", "tomorrow", S3_LAYOUT_CACHE, "attrs.touch_refresh" },
    { "bucket", "b", "endpoint_url", "ftp://h", S3_LAYOUT_CACHE, "attrs.endpoint_url" },
    { "bucket", "b", "secret_access_key", "s", S3_LAYOUT_CACHE, "access_key_id and secret_access_key" },
    { "bucket", "b", "blobs_prefix", "x/", S3_LAYOUT_OCI, "OCI image layout" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      char *kv[] = { (char *) cases[i].k1, (char *) cases[i].v1, (char *) cases[i].k2, (char *) cases[i].v2, NULL };
      struct solve_attrs a = attrs_of (kv);
      struct s3_config c;
      ps_error *err = NULL;
      ck_assert_int_eq (s3_config_parse (&c, &a, cases[i].layout, "exporters[0]", &err), -1);
      ck_assert_int_eq (err->status, 400);
      ck_assert_msg (strstr (err->msg, cases[i].names), "%s", err->msg);
      ck_assert_msg (strstr (err->msg, "exporters[0]"), "%s", err->msg);
      ps_error_free (err);
      s3_config_free (&c);
    }
}
END_TEST

START_TEST (durations_as_go_writes_them)
{
  int64_t s;
  ck_assert_int_eq (s3_parse_duration ("24h", &s), 0);
  ck_assert_int_eq (s, 86400);
  ck_assert_int_eq (s3_parse_duration ("1h2m3s", &s), 0);
  ck_assert_int_eq (s, 3723);
  ck_assert_int_eq (s3_parse_duration ("0", &s), 0);
  ck_assert_int_eq (s, 0);
  const char *bad[] = { "", "h", "10", "5ms", "-1h", "1d" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg (s3_parse_duration (bad[i], &s) < 0, "%s", bad[i]);
}
END_TEST

START_TEST (keys_follow_buildkit_for_caches_and_oci_for_images)
{
  struct s3_config c = { .layout = S3_LAYOUT_CACHE, .bucket = "b", .region = "us-east-1", .prefix = "ci/",
                         .blobs_prefix = "blobs/", .manifests_prefix = "manifests/" };
  const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  char *k = s3_blob_key (&c, d);
  ck_assert_str_eq (k, "ci/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  free (k);
  k = s3_manifest_key (&c, "cache/app", "podsolve-arg-steps");
  ck_assert_str_eq (k, "ci/manifests/cache/app/podsolve-arg-steps");
  free (k);
  c.layout = S3_LAYOUT_OCI;
  k = s3_blob_key (&c, d);
  ck_assert_str_eq (k, "ci/blobs/sha256/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  free (k);
}
END_TEST

START_TEST (urls_escape_keys_as_sigv4_signs_them)
{
  char *e = s3_uri_escape ("blobs/sha256:ab c+~", true);
  ck_assert_str_eq (e, "blobs/sha256%3Aab%20c%2B~");
  free (e);
  e = s3_uri_escape ("a/b=", false);
  ck_assert_str_eq (e, "a%2Fb%3D");
  free (e);
  struct s3_config c = { .bucket = "bk", .region = "eu-west-1" };
  char *u = s3_object_url (&c, "blobs/sha256:x");
  ck_assert_str_eq (u, "https://bk.s3.eu-west-1.amazonaws.com/blobs/sha256%3Ax");
  free (u);
  c.use_path_style = true;
  u = s3_object_url (&c, NULL);
  ck_assert_str_eq (u, "https://s3.eu-west-1.amazonaws.com/bk/");
  free (u);
  c.endpoint_url = "http://127.0.0.1:9000";
  u = s3_object_url (&c, "k");
  ck_assert_str_eq (u, "http://127.0.0.1:9000/bk/k");
  free (u);
  c.use_path_style = false;
  u = s3_object_url (&c, "k");
  ck_assert_str_eq (u, "http://bk.127.0.0.1:9000/k");
  free (u);
}
END_TEST

START_TEST (multipart_plan_cuts_large_blobs_into_parts)
{
  struct s3_part_plan p;
  const uint64_t mib = 1024 * 1024;
  ck_assert (!s3_multipart_plan (0, &p));
  ck_assert (!s3_multipart_plan (64 * mib, &p));
  ck_assert (s3_multipart_plan (64 * mib + 1, &p));
  ck_assert_uint_eq (p.part_size, 16 * mib);
  ck_assert_uint_eq (p.parts, 5);
  ck_assert (s3_multipart_plan (100 * mib, &p));
  ck_assert_uint_eq (p.parts, 7);
  /* 10000 parts at most: a 1 TiB blob gets larger parts, whole MiB */
  ck_assert (s3_multipart_plan (1024 * 1024 * mib, &p));
  ck_assert_uint_le (p.parts, 10000);
  ck_assert_uint_eq (p.part_size % mib, 0);
  ck_assert_uint_ge ((uint64_t) p.parts * p.part_size, 1024 * 1024 * mib);
}
END_TEST

PS_TEST_SUITE (store_s3)
{
  Suite *s = suite_create ("store_s3");
  TCase *tc = tcase_create ("pure");
  tcase_add_test (tc, buildkit_attrs_parse_with_buildkit_defaults);
  tcase_add_test (tc, bad_attrs_are_400s_naming_the_attr);
  tcase_add_test (tc, durations_as_go_writes_them);
  tcase_add_test (tc, keys_follow_buildkit_for_caches_and_oci_for_images);
  tcase_add_test (tc, urls_escape_keys_as_sigv4_signs_them);
  tcase_add_test (tc, multipart_plan_cuts_large_blobs_into_parts);
  suite_add_tcase (s, tc);
  return s;
}
