/* main.c — runs every unit suite; `make check` runs this binary.  Suites
 * register themselves (PS_TEST_SUITE in unit.h) and run sorted by name.
 * Set CK_RUN_SUITE=<name> to run one suite, CK_RUN_CASE=<tcase> for one
 * test case (see tests/README.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/unit.h"

#define MAX_SUITES 64

struct registered_suite
{
  const char *name;
  unit_suite_factory factory;
};

static struct registered_suite suites[MAX_SUITES];
static size_t n_suites;

void
unit_register_suite (const char *name, unit_suite_factory factory)
{
  if (n_suites == MAX_SUITES)
    {
      fprintf (stderr, "unit: more than %d suites, raise MAX_SUITES in %s\n", MAX_SUITES, __FILE__);
      abort ();
    }
  suites[n_suites].name = name;
  suites[n_suites].factory = factory;
  n_suites++;
}

static int
by_name (const void *a, const void *b)
{
  const struct registered_suite *x = a;
  const struct registered_suite *y = b;
  return strcmp (x->name, y->name);
}

int
main (void)
{
  if (n_suites == 0)
    {
      fprintf (stderr, "unit: no suite registered\n");
      return EXIT_FAILURE;
    }
  qsort (suites, n_suites, sizeof suites[0], by_name);
  SRunner *sr = srunner_create (suites[0].factory ());
  for (size_t i = 1; i < n_suites; i++)
    srunner_add_suite (sr, suites[i].factory ());
  srunner_run_all (sr, CK_NORMAL);
  int failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
