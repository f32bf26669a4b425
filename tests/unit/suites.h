/* suites.h — every Check suite of the unit test binary. */
#ifndef TESTS_UNIT_SUITES_H
#define TESTS_UNIT_SUITES_H

#include <check.h>

Suite *suite_common (void);
Suite *suite_build_params (void);
Suite *suite_context (void);
Suite *suite_dockerignore (void);
Suite *suite_buildah_output (void);
Suite *suite_jsonmessage (void);
Suite *suite_solve (void);
Suite *suite_llb (void);
Suite *suite_llb_remote (void);
Suite *suite_llb_merge (void);
Suite *suite_llb_fileop (void);
Suite *suite_trace (void);
Suite *suite_session_grpc (void);
Suite *suite_session_diffcopy (void);
Suite *suite_session (void);
Suite *suite_session_filesend (void);
Suite *suite_cache_prune (void);
Suite *suite_image_config (void);
Suite *suite_multipart (void);
Suite *suite_orphans (void);

#endif
