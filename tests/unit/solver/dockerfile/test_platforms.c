/* test_platforms.c — platform names as Docker clients write them, and the
 * preflight of a multi-platform build: a RUN for a platform this machine
 * cannot execute fails before buildah starts; a stage FROM
 * --platform=$BUILDPLATFORM runs on the host; stages the target does not
 * need are not looked at. */
#define _GNU_SOURCE
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "solver/dockerfile/platforms.h"
#include "solver/worker.h"
#include "tests/unit/unit.h"

START_TEST (normalize_and_compare)
{
  cleanup_free char *a = platform_normalize ("Linux/aarch64/v8");
  ck_assert_str_eq (a, "linux/arm64");
  cleanup_free char *b = platform_normalize ("linux/x86_64");
  ck_assert_str_eq (b, "linux/amd64");
  cleanup_free char *c = platform_normalize ("linux/arm/v7");
  ck_assert_str_eq (c, "linux/arm/v7");
  ck_assert (platform_equal ("linux/arm64", "linux/arm64/v8"));
  ck_assert (platform_equal ("linux/arm", "linux/arm/v7"));
  ck_assert (!platform_equal ("linux/arm/v6", "linux/arm/v7"));
  ck_assert (!platform_equal ("linux/amd64", "linux/arm64"));
  ck_assert (!platform_equal ("windows/amd64", "linux/amd64"));
}
END_TEST

/* A platform no handler runs here: s390x unless the host is one or has
   qemu for it. */
static const char *
foreign (void)
{
  ps_strv p = { 0 };
  worker_platforms (&p);
  const char *candidates[] = { "linux/s390x", "linux/riscv64", "linux/ppc64le" };
  const char *pick = NULL;
  for (size_t c = 0; c < 3 && pick == NULL; c++)
    {
      bool runnable = false;
      for (size_t i = 0; i < p.n; i++)
        runnable = runnable || platform_equal (p.v[i], candidates[c]);
      if (!runnable)
        pick = candidates[c];
    }
  ps_strv_free (&p);
  return pick;
}

static int
preflight (const char *dockerfile, const char *platform, const char *target, ps_error **err)
{
  struct dockerfile_build b;
  memset (&b, 0, sizeof b);
  build_options_init (&b.opts);
  ps_strv_push (&b.opts.platforms, platform);
  b.opts.target = target ? xstrdup (target) : NULL;
  b.opts.pull = BUILD_PULL_ALWAYS; /* no storage here: skip the base image lookups */
  ps_strv notes = { 0 };
  int r = platform_preflight (&b, dockerfile, strlen (dockerfile), "Dockerfile", &notes, err);
  ps_strv_free (&notes);
  build_options_free (&b.opts);
  return r;
}

START_TEST (foreign_run_fails_naming_line_and_stage)
{
  const char *plat = foreign ();
  if (plat == NULL)
    return;
  cleanup_error ps_error *err = NULL;
  ck_assert_int_eq (preflight ("FROM alpine AS base\nENV A=1\nRUN true\n", plat, NULL, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "Dockerfile:3: RUN in stage \"base\""));
  ck_assert_ptr_nonnull (strstr (err->msg, "qemu-user"));
}
END_TEST

START_TEST (buildplatform_stages_and_unneeded_stages_pass)
{
  const char *plat = foreign ();
  if (plat == NULL)
    return;
  cleanup_error ps_error *err = NULL;
  /* The RUN is on the host; the target's stage only copies. */
  ck_assert_int_eq (preflight ("FROM --platform=$BUILDPLATFORM alpine AS build\nRUN make\n"
                               "FROM scratch\nCOPY --from=build /out /out\n",
                               plat, NULL, &err),
                    0);
  /* A stage the target does not reach may RUN anything. */
  ck_assert_int_eq (preflight ("FROM alpine AS tests\nRUN make test\n"
                               "FROM scratch AS release\nCOPY a /a\n",
                               plat, "release", &err),
                    0);
  /* ...but one it reaches by COPY --from may not. */
  ck_assert_int_eq (preflight ("FROM alpine AS gen\nRUN make\n"
                               "FROM scratch AS release\nCOPY --from=gen /o /o\n",
                               plat, "release", &err),
                    -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "Dockerfile:2: RUN in stage \"gen\""));
}
END_TEST

START_TEST (host_platform_runs)
{
  cleanup_free char *host = platform_host ();
  cleanup_error ps_error *err = NULL;
  ck_assert_int_eq (preflight ("FROM alpine\nRUN true\n", host, NULL, &err), 0);
}
END_TEST

PS_TEST_SUITE (platforms)
{
  Suite *s = suite_create ("platforms");
  TCase *tc = tcase_create ("platforms");
  tcase_add_test (tc, normalize_and_compare);
  tcase_add_test (tc, foreign_run_fails_naming_line_and_stage);
  tcase_add_test (tc, buildplatform_stages_and_unneeded_stages_pass);
  tcase_add_test (tc, host_platform_runs);
  suite_add_tcase (s, tc);
  return s;
}
