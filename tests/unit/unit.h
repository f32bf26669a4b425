/* unit.h — what every unit suite includes.
 *
 * A suite file defines its suite with
 *
 *   PS_TEST_SUITE (name)
 *   {
 *     Suite *s = suite_create ("name");
 *     ...
 *     return s;
 *   }
 *
 * and that is all: the macro also defines a constructor that registers the
 * suite's factory with main.c, which runs every registered suite sorted by
 * name.  Adding a suite means adding its file here and to
 * tests_unit_test_unit_SOURCES in Makefile.am.  Suites live in folders that
 * mirror the source tree (tests/unit/solver/llb/ tests solver/llb/...); see
 * tests/README.md. */
#ifndef TESTS_UNIT_UNIT_H
#define TESTS_UNIT_UNIT_H

#include <check.h>

typedef Suite *(*unit_suite_factory) (void);

/* Called by PS_TEST_SUITE's constructor, before main. */
void unit_register_suite (const char *name, unit_suite_factory factory);

#define PS_TEST_SUITE(name)                                                   \
  static Suite *suite_##name (void);                                          \
  __attribute__ ((constructor)) static void register_suite_##name (void)      \
  {                                                                           \
    unit_register_suite (#name, suite_##name);                                \
  }                                                                           \
  static Suite *suite_##name (void)

#endif
