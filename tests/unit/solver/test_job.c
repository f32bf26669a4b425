/* test_job.c — the registry of jobs by ref (solver/job.c): a lookup that
 * waits is woken by the registration itself (Control.Status arrives
 * before the Solve that registers its job), gives up after its timeout,
 * and finds a job that is already there at once. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "common/ps.h"
#include "solver/job.h"
#include "tests/unit/unit.h"

struct late
{
  pthread_t thread;
  solver_job *job;
  int delay_ms;
};

static void *
register_later (void *arg)
{
  struct late *l = arg;
  usleep ((useconds_t) l->delay_ms * 1000);
  ps_error *err = NULL;
  ck_assert_int_eq (solver_jobs_register (l->job, &err), 0);
  return NULL;
}

START_TEST (wait_is_woken_by_the_registration)
{
  char ref[64];
  snprintf (ref, sizeof ref, "waitjob%d", (int) getpid ());
  struct late l = { .job = solver_job_new (ref, NULL), .delay_ms = 100 };
  ck_assert_int_eq (pthread_create (&l.thread, NULL, register_later, &l), 0);
  int64_t t0 = ps_monotonic_ns ();
  solver_job *got = solver_jobs_wait_for (ref, 20000);
  int64_t waited_ms = (ps_monotonic_ns () - t0) / 1000000;
  pthread_join (l.thread, NULL);
  ck_assert_ptr_eq (got, l.job);
  /* Woken by the registration, long before the 20 s timeout (no bound on
     how soon: the machine may be loaded). */
  ck_assert_int_lt (waited_ms, 19000);
  solver_job_unref (got);
  solver_jobs_unregister (l.job);
  solver_job_unref (l.job);
}
END_TEST

START_TEST (wait_times_out_without_a_job)
{
  int64_t t0 = ps_monotonic_ns ();
  ck_assert_ptr_null (solver_jobs_wait_for ("no-such-job-ever", 150));
  ck_assert_int_ge ((ps_monotonic_ns () - t0) / 1000000, 150);
  ck_assert_ptr_null (solver_jobs_wait_for ("no-such-job-ever", 0));
}
END_TEST

START_TEST (registered_job_is_found_at_once)
{
  solver_job *job = solver_job_new ("there-already", NULL);
  ps_error *err = NULL;
  ck_assert_int_eq (solver_jobs_register (job, &err), 0);
  solver_job *got = solver_jobs_wait_for ("there-already", 0);
  ck_assert_ptr_eq (got, job);
  solver_job_unref (got);
  solver_jobs_unregister (job);
  solver_job_unref (job);
}
END_TEST

PS_TEST_SUITE (job)
{
  Suite *s = suite_create ("job");
  TCase *tc = tcase_create ("registry");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, wait_is_woken_by_the_registration);
  tcase_add_test (tc, wait_times_out_without_a_job);
  tcase_add_test (tc, registered_job_is_found_at_once);
  suite_add_tcase (s, tc);
  return s;
}
