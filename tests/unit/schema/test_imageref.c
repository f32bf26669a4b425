/* test_imageref.c — which registries Docker Engine trusts over plain HTTP
 * without --insecure-registry: those on the loopback interface. */
#include "schema/imageref.h"
#include "tests/unit/unit.h"

START_TEST (loopback_registries_are_recognised)
{
  const char *yes[] = { "127.0.0.1:5000/app:1", "127.0.0.1:5000", "127.1.2.3:80/team/app", "localhost:5000/app",
                        "LOCALHOST/app", "localhost", "[::1]:5000/app", "docker://127.0.0.1:443/cache",
                        "127.0.0.1/app" };
  const char *no[] = { "app", "app:1", "team/app", "localhost.example.com/app", "128.0.0.1:5000/app",
                       "registry.example:5000/app", "[::2]:5000/app", "docker.io/library/busybox", "127/app",
                       "127.0.0.1.example/app", "[::1/app", "" };
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
    ck_assert_msg (schema_imageref_loopback_registry (yes[i]), "%s is a loopback registry", yes[i]);
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    ck_assert_msg (!schema_imageref_loopback_registry (no[i]), "%s is not a loopback registry", no[i]);
}
END_TEST

PS_TEST_SUITE (imageref)
{
  Suite *s = suite_create ("imageref");
  TCase *tc = tcase_create ("loopback");
  tcase_add_test (tc, loopback_registries_are_recognised);
  suite_add_tcase (s, tc);
  return s;
}
