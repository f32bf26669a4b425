/* test_cache_prune.c — the options of POST /build/prune: Go durations for
 * the until filter and Docker's two JSON shapes of `filters`, every bad
 * value a 400 naming it; the exported images' layouts kept beside the cache. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "solver/cache_prune.h"
#include "solver/export_layout.h"
#include "tests/unit/unit.h"

START_TEST (go_durations_parse)
{
  static const struct
  {
    const char *text;
    int64_t ns;
  } ok[] = {
    { "0", 0 },
    { "24h", 24LL * 3600 * 1000000000 },
    { "1h30m", 5400LL * 1000000000 },
    { "90s", 90LL * 1000000000 },
    { "1.5h", 5400LL * 1000000000 },
    { "500ms", 500LL * 1000000 },
    { "2m3s", 123LL * 1000000000 },
    { "10us", 10000 },
    { "7ns", 7 },
    { ".5s", 500LL * 1000000 },
  };
  for (size_t i = 0; i < ARRAY_SIZE (ok); i++)
    {
      int64_t ns = -1;
      ps_error *err = NULL;
      ck_assert_msg (cache_prune_parse_duration (ok[i].text, &ns, &err) == 0, "%s", ok[i].text);
      ck_assert_msg (ns == ok[i].ns, "%s: %lld", ok[i].text, (long long) ns);
    }
  const char *bad[] = { "", "24", "h", "1d", "-1h", "1h-", "1.h2", "yesterday", "1e3s", "." };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      int64_t ns = 0;
      ps_error *err = NULL;
      ck_assert_msg (cache_prune_parse_duration (bad[i], &ns, &err) < 0, "%s", bad[i]);
      ck_assert_int_eq (err->status, 400);
      ck_assert (strstr (err->msg, "duration") != NULL);
      ps_error_free (err);
    }
}
END_TEST

START_TEST (filters_in_both_docker_shapes)
{
  struct cache_prune_opts o = { 0 };
  ps_error *err = NULL;
  ck_assert_int_eq (cache_prune_parse_filters ("{\"until\":[\"2h\"],\"type\":[\"llb.result\"],\"id\":[\"ab\"]}",
                                               &o, &err), 0);
  ck_assert (o.keep_duration_ns == 7200LL * 1000000000);
  ck_assert_uint_eq (o.types.n, 1);
  ck_assert_str_eq (o.types.v[0], "llb.result");
  ck_assert_str_eq (o.ids.v[0], "ab");
  cache_prune_opts_free (&o);

  /* What docker 20.10's filters.ToJSON writes. */
  struct cache_prune_opts o2 = { 0 };
  ck_assert_int_eq (cache_prune_parse_filters ("{\"unused-for\":{\"30m\":true}}", &o2, &err), 0);
  ck_assert (o2.keep_duration_ns == 1800LL * 1000000000);
  cache_prune_opts_free (&o2);

  struct cache_prune_opts o3 = { 0 };
  ck_assert_int_eq (cache_prune_parse_filters ("", &o3, &err), 0);
  ck_assert_int_eq (cache_prune_parse_filters ("{}", &o3, &err), 0);
  ck_assert (o3.keep_duration_ns == 0 && o3.types.n == 0);
}
END_TEST

START_TEST (bad_filters_are_400_naming_the_problem)
{
  static const struct
  {
    const char *json;
    const char *word;
  } bad[] = {
    { "[1]", "JSON object" },
    { "{nope", "JSON object" },
    { "{\"label\":[\"a=b\"]}", "label" },
    { "{\"until\":[\"1h\",\"2h\"]}", "exactly one" },
    { "{\"until\":[\"1h\"],\"unused-for\":[\"2h\"]}", "cannot be combined" },
    { "{\"until\":[\"soon\"]}", "soon" },
    { "{\"until\":\"1h\"}", "list" },
    { "{\"type\":[\"regular\"]}", "regular" },
    { "{\"id\":[1]}", "strings" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      struct cache_prune_opts o = { 0 };
      ps_error *err = NULL;
      ck_assert_msg (cache_prune_parse_filters (bad[i].json, &o, &err) < 0, "%s", bad[i].json);
      ck_assert_int_eq (err->status, 400);
      ck_assert_msg (strstr (err->msg, bad[i].word) != NULL, "%s: %s", bad[i].json, err->msg);
      ps_error_free (err);
      cache_prune_opts_free (&o);
    }
}
END_TEST

START_TEST (export_layouts_are_kept_by_image_id)
{
  char tmpl[] = "/tmp/ps-layout-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (tmpl));
  static const char id[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  ck_assert_ptr_null (export_layout_path (tmpl, "../../etc"));
  ck_assert_ptr_null (export_layout_path (tmpl, "0123"));
  ck_assert_ptr_null (export_layout_path (NULL, id));
  cleanup_free char *path = export_layout_path (tmpl, id);
  ck_assert_ptr_nonnull (strstr (path, "/" CACHE_EXPORT_LAYOUTS "/"));
  ck_assert (!export_layout_ready (path));

  /* A finished layout moves into place; a second one for the same image
     finds the first there and is left where it was. */
  char *built[2];
  for (int i = 0; i < 2; i++)
    {
      built[i] = xasprintf ("%s/job%d", tmpl, i);
      ck_assert_int_eq (mkdir (built[i], 0700), 0);
      cleanup_free char *index = xasprintf ("%s/index.json", built[i]);
      ck_assert_int_eq (ps_write_file (index, "{}", 2, 0600, NULL), 0);
    }
  ck_assert (export_layout_keep (built[0], path));
  ck_assert (export_layout_ready (path));
  ck_assert (access (built[0], F_OK) < 0);
  ck_assert (export_layout_keep (built[1], path));
  ck_assert (access (built[1], F_OK) == 0);
  /* A directory without index.json (an export cut short) is no layout. */
  cleanup_free char *index = xasprintf ("%s/index.json", path);
  unlink (index);
  ck_assert (!export_layout_ready (path));
  for (int i = 0; i < 2; i++)
    free (built[i]);
  ps_rm_rf (tmpl, NULL);
}
END_TEST

PS_TEST_SUITE (cache_prune)
{
  Suite *s = suite_create ("cache_prune");
  TCase *tc = tcase_create ("options");
  tcase_add_test (tc, go_durations_parse);
  tcase_add_test (tc, filters_in_both_docker_shapes);
  tcase_add_test (tc, bad_filters_are_400_naming_the_problem);
  tcase_add_test (tc, export_layouts_are_kept_by_image_id);
  suite_add_tcase (s, tc);
  return s;
}
