/* main.c — runs every unit suite; `make check` runs this binary.  Set
 * CK_RUN_SUITE=<name> to run one suite. */
#include <stdlib.h>

#include "tests/unit/suites.h"

int
main (void)
{
  SRunner *sr = srunner_create (suite_common ());
  srunner_add_suite (sr, suite_build_params ());
  srunner_add_suite (sr, suite_context ());
  srunner_add_suite (sr, suite_dockerignore ());
  srunner_add_suite (sr, suite_buildah_output ());
  srunner_add_suite (sr, suite_jsonmessage ());
  srunner_add_suite (sr, suite_solve ());
  srunner_add_suite (sr, suite_llb ());
  srunner_add_suite (sr, suite_llb_remote ());
  srunner_add_suite (sr, suite_llb_merge ());
  srunner_add_suite (sr, suite_llb_fileop ());
  srunner_add_suite (sr, suite_trace ());
  srunner_add_suite (sr, suite_session_grpc ());
  srunner_add_suite (sr, suite_session_diffcopy ());
  srunner_add_suite (sr, suite_session ());
  srunner_add_suite (sr, suite_session_filesend ());
  srunner_add_suite (sr, suite_cache_prune ());
  srunner_add_suite (sr, suite_image_config ());
  srunner_add_suite (sr, suite_multipart ());
  srunner_add_suite (sr, suite_orphans ());
  srunner_run_all (sr, CK_NORMAL);
  int failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
