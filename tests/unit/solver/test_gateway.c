/* test_gateway.c — the registry of client-side gateway builds
 * (solver/gateway.c) without buildah: a build registers under its id,
 * LLBBridge calls find it (waiting for a late one), Return ends it with
 * the returned ref, nothing, or the client's error; a cancelled job or a
 * vanished Control.Solve call ends it with 499; ids are unique while
 * running.  Solving refs needs buildah: tests/integration/endpoints/
 * test_grpc_gateway.py. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "solver/gateway.h"
#include "tests/unit/unit.h"

struct runner
{
  pthread_t thread;
  char id[64];
  solver_job *job;
  struct gateway_build_opts opts;
  int ret;
  char *image;
  ps_error *err;
};

static void *
run_main (void *arg)
{
  struct runner *r = arg;
  r->ret = gateway_solve_run (r->id, &r->opts, r->job, &r->image, &r->err);
  return NULL;
}

static void
runner_start (struct runner *r, const char *id)
{
  memset (r, 0, sizeof *r);
  snprintf (r->id, sizeof r->id, "%s-%d", id, (int) getpid ());
  r->job = solver_job_new (r->id, "/nonexistent-gateway-test");
  r->opts.state_dir = "/nonexistent-gateway-test";
  ck_assert_int_eq (pthread_create (&r->thread, NULL, run_main, r), 0);
}

static void
runner_join (struct runner *r)
{
  pthread_join (r->thread, NULL);
  solver_job_unref (r->job);
}

static void
runner_free (struct runner *r)
{
  free (r->image);
  ps_error_free (r->err);
}

START_TEST (unknown_build_waits_then_is_absent)
{
  int64_t t0 = ps_monotonic_ns ();
  ck_assert_ptr_null (gateway_build_lookup ("no-such-build", 150));
  ck_assert_int_ge (ps_monotonic_ns () - t0, 140 * 1000000LL);
  ck_assert_ptr_null (gateway_build_lookup ("", 0));
  ck_assert_ptr_null (gateway_build_lookup (NULL, 0));
}
END_TEST

START_TEST (empty_return_ends_the_build_without_a_result)
{
  struct runner r;
  runner_start (&r, "empty");
  gateway_build *b = gateway_build_lookup (r.id, 5000);
  ck_assert_ptr_nonnull (b);
  ck_assert_ptr_eq (gateway_build_job (b), r.job);
  /* nothing to solve: no ref, no work */
  struct gateway_solve_req none = { 0 };
  char *ref = (char *) "x";
  ps_error *err = NULL;
  ck_assert_int_eq (gateway_build_solve (b, &none, NULL, NULL, &ref, &err), 0);
  ck_assert_ptr_null (ref);
  /* an unknown ref cannot be returned, read or evaluated */
  ck_assert_int_eq (gateway_build_return (b, "nope", 0, NULL, NULL, &err), -1);
  ck_assert_int_eq (err->status, 404);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (gateway_build_ref_check (b, "nope", &err), -1);
  ck_assert_int_eq (err->status, 404);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (gateway_build_return (b, NULL, 0, NULL, NULL, &err), 0);
  /* a second Return is refused */
  ck_assert_int_eq (gateway_build_return (b, NULL, 0, NULL, NULL, &err), -1);
  ck_assert_int_eq (err->status, 409);
  ps_error_free (err);
  gateway_build_unref (b);
  runner_join (&r);
  ck_assert_int_eq (r.ret, 0);
  ck_assert_ptr_null (r.image);
  ck_assert_ptr_null (gateway_build_lookup (r.id, 0));
  runner_free (&r);
}
END_TEST

START_TEST (returned_error_fails_the_build)
{
  struct runner r;
  runner_start (&r, "error");
  gateway_build *b = gateway_build_lookup (r.id, 5000);
  ck_assert_ptr_nonnull (b);
  ps_error *err = NULL;
  ck_assert_int_eq (gateway_build_return (b, "ignored", 3, "the frontend says no", NULL, &err), 0);
  gateway_build_unref (b);
  runner_join (&r);
  ck_assert_int_eq (r.ret, -1);
  ck_assert_int_eq (r.err->status, 400); /* INVALID_ARGUMENT */
  ck_assert_str_eq (r.err->msg, "the frontend says no");
  runner_free (&r);
}
END_TEST

START_TEST (unsupported_frontend_is_refused)
{
  struct runner r;
  runner_start (&r, "frontend");
  gateway_build *b = gateway_build_lookup (r.id, 5000);
  ck_assert_ptr_nonnull (b);
  struct gateway_solve_req req = { .frontend = "gateway.v0" };
  char *ref = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (gateway_build_solve (b, &req, NULL, NULL, &ref, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "gateway.v0"));
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (gateway_build_return (b, NULL, 0, NULL, NULL, &err), 0);
  gateway_build_unref (b);
  runner_join (&r);
  runner_free (&r);
}
END_TEST

START_TEST (duplicate_running_id_is_a_conflict)
{
  struct runner r;
  runner_start (&r, "dup");
  gateway_build *b = gateway_build_lookup (r.id, 5000);
  ck_assert_ptr_nonnull (b);
  solver_job *job = solver_job_new (NULL, "/nonexistent-gateway-test");
  struct gateway_build_opts o = { .state_dir = "/x" };
  char *image = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (gateway_solve_run (r.id, &o, job, &image, &err), -1);
  ck_assert_int_eq (err->status, 409);
  ps_error_free (err);
  solver_job_unref (job);
  err = NULL;
  ck_assert_int_eq (gateway_build_return (b, NULL, 0, NULL, NULL, &err), 0);
  gateway_build_unref (b);
  runner_join (&r);
  ck_assert_int_eq (r.ret, 0);
  runner_free (&r);
}
END_TEST

START_TEST (cancelled_job_ends_the_build)
{
  struct runner r;
  runner_start (&r, "cancel");
  gateway_build *b = gateway_build_lookup (r.id, 5000);
  ck_assert_ptr_nonnull (b);
  solver_job_cancel (r.job, "test");
  runner_join (&r);
  ck_assert_int_eq (r.ret, -1);
  ck_assert_int_eq (r.err->status, 499);
  /* the build left the registry; a late Return is refused */
  ck_assert_ptr_null (gateway_build_lookup (r.id, 0));
  ps_error *err = NULL;
  ck_assert_int_eq (gateway_build_return (b, NULL, 0, NULL, NULL, &err), -1);
  ck_assert_int_eq (err->status, 409);
  ps_error_free (err);
  gateway_build_unref (b);
  runner_free (&r);
}
END_TEST

static atomic_bool call_gone;

static bool
gone (void *ud)
{
  return atomic_load (&call_gone);
}

START_TEST (vanished_call_cancels_the_job)
{
  struct runner r;
  atomic_store (&call_gone, false);
  memset (&r, 0, sizeof r);
  snprintf (r.id, sizeof r.id, "gone-%d", (int) getpid ());
  r.job = solver_job_new (r.id, "/nonexistent-gateway-test");
  r.opts.cancelled = gone;
  ck_assert_int_eq (pthread_create (&r.thread, NULL, run_main, &r), 0);
  gateway_build *b = gateway_build_lookup (r.id, 5000);
  ck_assert_ptr_nonnull (b);
  atomic_store (&call_gone, true);
  pthread_join (r.thread, NULL);
  ck_assert_int_eq (r.ret, -1);
  ck_assert_int_eq (r.err->status, 499);
  ck_assert (solver_job_cancelled (r.job));
  gateway_build_unref (b);
  solver_job_unref (r.job);
  runner_free (&r);
}
END_TEST

PS_TEST_SUITE (gateway)
{
  Suite *s = suite_create ("gateway");
  TCase *tc = tcase_create ("registry");
  tcase_set_timeout (tc, 30);
  tcase_add_test (tc, unknown_build_waits_then_is_absent);
  tcase_add_test (tc, empty_return_ends_the_build_without_a_result);
  tcase_add_test (tc, returned_error_fails_the_build);
  tcase_add_test (tc, unsupported_frontend_is_refused);
  tcase_add_test (tc, duplicate_running_id_is_a_conflict);
  tcase_add_test (tc, cancelled_job_ends_the_build);
  tcase_add_test (tc, vanished_call_cancels_the_job);
  suite_add_tcase (s, tc);
  return s;
}
