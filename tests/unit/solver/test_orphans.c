/* test_orphans.c — reading containers-storage's records and deciding which
 * container a stopped build left behind. */
#define _GNU_SOURCE
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "solver/buildah.h"
#include "solver/orphans.h"
#include "tests/unit/unit.h"

START_TEST (storage_times_parse)
{
  struct timespec t;
  ck_assert (orphans_parse_time ("2026-11-21T07:12:56.663333687Z", &t));
  ck_assert_int_eq (t.tv_sec, 1795245176);
  ck_assert_int_eq (t.tv_nsec, 663333687);
  ck_assert (orphans_parse_time ("2026-11-21T07:12:56Z", &t));
  ck_assert_int_eq (t.tv_sec, 1795245176);
  ck_assert_int_eq (t.tv_nsec, 0);
  ck_assert (orphans_parse_time ("2026-11-21T08:12:56.5+01:00", &t));
  ck_assert_int_eq (t.tv_sec, 1795245176);
  ck_assert_int_eq (t.tv_nsec, 500000000);
  ck_assert (orphans_parse_time ("2026-11-21T02:12:56-05:00", &t));
  ck_assert_int_eq (t.tv_sec, 1795245176);
  const char *bad[] = { "", "yesterday", "2026-11-21T07:12:56", "2026-11-21T07:12:56Zjunk", "2026-11-21T07:12:56+1" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg (!orphans_parse_time (bad[i], &t), "%s", bad[i]);
  ck_assert (!orphans_parse_time (NULL, &t));
}
END_TEST

static const char RECORDS[]
    = "[{\"id\":\"aaa\",\"names\":[\"busybox-working-container\"],\"image\":\"96\",\"layer\":\"35\","
      "\"created\":\"2026-11-21T07:12:56.5Z\",\"flags\":{\"Volatile\":true}},"
      "{\"id\":\"bbb\",\"names\":[\"" PS_CONTAINER_PREFIX "0123456789abcdef\"],"
      "\"created\":\"2026-11-21T07:12:56.6Z\"},"
      "{\"id\":\"ccc\",\"names\":[\"web\"],\"metadata\":\"{\\\"image-name\\\":\\\"x\\\"}\","
      "\"created\":\"2026-11-21T07:12:56.7Z\"},"
      "{\"id\":\"ddd\",\"names\":[\"no-time\"]},"
      "{\"id\":\"eee\",\"created\":\"2026-11-21T07:12:58Z\"}]";

START_TEST (containers_records_parse)
{
  struct orphan_candidate *c;
  size_t n;
  ck_assert_int_eq (orphans_parse_containers (RECORDS, &c, &n), 0);
  ck_assert_uint_eq (n, 4); /* the record without a creation time is never a candidate */
  ck_assert_str_eq (c[0].id, "aaa");
  ck_assert_str_eq (c[0].name, "busybox-working-container");
  ck_assert (!c[0].has_metadata);
  ck_assert (c[2].has_metadata);
  ck_assert_str_eq (c[3].id, "eee");
  ck_assert_str_eq (c[3].name, "");
  orphans_candidates_free (c, n);

  ck_assert_int_eq (orphans_parse_containers ("{\"id\":1}", &c, &n), -1);
  ck_assert_int_eq (orphans_parse_containers ("not json", &c, &n), -1);
  ck_assert_int_eq (orphans_parse_containers ("[]", &c, &n), 0);
  ck_assert_uint_eq (n, 0);
  orphans_candidates_free (c, n);
}
END_TEST

START_TEST (only_anonymous_buildah_containers_inside_the_window_are_leaks)
{
  struct orphan_candidate *c;
  size_t n;
  ck_assert_int_eq (orphans_parse_containers (RECORDS, &c, &n), 0);
  struct timespec from, to;
  ck_assert (orphans_parse_time ("2026-11-21T07:12:56Z", &from));
  ck_assert (orphans_parse_time ("2026-11-21T07:12:57Z", &to));
  ck_assert (orphans_is_leak (&c[0], &from, &to));
  ck_assert (!orphans_is_leak (&c[1], &from, &to)); /* podsolve's own */
  ck_assert (!orphans_is_leak (&c[2], &from, &to)); /* Podman's */
  ck_assert (!orphans_is_leak (&c[3], &from, &to)); /* made after the build */
  /* the window's ends count: creation and death can share a tick */
  ck_assert (orphans_parse_time ("2026-11-21T07:12:56.5Z", &to));
  ck_assert (orphans_is_leak (&c[0], &from, &to));
  ck_assert (orphans_parse_time ("2026-11-21T07:12:56.500000001Z", &from));
  ck_assert (orphans_parse_time ("2026-11-21T07:12:59Z", &to));
  ck_assert (!orphans_is_leak (&c[0], &from, &to)); /* made before the build */
  orphans_candidates_free (c, n);
}
END_TEST

START_TEST (container_tag_is_the_state_dirs_hash_made_on_first_use)
{
  buildah_set_container_tag_source ("/var/lib/podsolve");
  /* sha256("/var/lib/podsolve"), its first 8 hex digits */
  ck_assert_str_eq (buildah_container_tag (), "9971308d");
  ck_assert_str_eq (buildah_container_tag (), "9971308d");
  cleanup_free char *name = buildah_container_name ();
  ck_assert_msg (strncmp (name, PS_CONTAINER_PREFIX "9971308d-", strlen (PS_CONTAINER_PREFIX) + 9) == 0, "%s", name);
}
END_TEST

PS_TEST_SUITE (orphans)
{
  Suite *s = suite_create ("orphans");
  TCase *tc = tcase_create ("records");
  tcase_add_test (tc, storage_times_parse);
  tcase_add_test (tc, container_tag_is_the_state_dirs_hash_made_on_first_use);
  tcase_add_test (tc, containers_records_parse);
  tcase_add_test (tc, only_anonymous_buildah_containers_inside_the_window_are_leaks);
  suite_add_tcase (s, tc);
  return s;
}
