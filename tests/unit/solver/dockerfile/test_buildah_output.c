/* test_buildah_output.c — one test per buildah output shape that podsolve
 * relies on (buildah_output.h), and the events they become. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "solver/dockerfile/buildah_output.h"
#include "tests/unit/unit.h"

#define ID64 "75ab9a58e9ebd9f014b9bd36b1c453e338e7ca15875652659cab2338ea9671a8"
#define ID64B "0bc88506fed65228ce77795f0e7c1094c1283aa65b11759136fbbc76a44f225a"

START_TEST (shape_step_single_stage)
{
  struct buildah_line l;
  buildah_line_classify ("STEP 2/4: RUN echo hello > /hello.txt", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_STEP);
  ck_assert_int_eq (l.step, 2);
  ck_assert_int_eq (l.nsteps, 4);
  ck_assert_int_eq (l.nstages, 0);
  ck_assert_str_eq (l.rest, "RUN echo hello > /hello.txt");
}
END_TEST

START_TEST (shape_step_multi_stage)
{
  struct buildah_line l;
  buildah_line_classify ("[2/3] STEP 1/2: FROM localhost/busybox:latest AS final", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_STEP);
  ck_assert_int_eq (l.stage, 2);
  ck_assert_int_eq (l.nstages, 3);
  ck_assert_int_eq (l.step, 1);
  ck_assert_str_eq (l.rest, "FROM localhost/busybox:latest AS final");
}
END_TEST

START_TEST (shape_using_cache)
{
  struct buildah_line l;
  buildah_line_classify ("--> Using cache " ID64, false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_USING_CACHE);
  ck_assert_str_eq (l.id, ID64);
}
END_TEST

START_TEST (shape_layer_id)
{
  struct buildah_line l;
  buildah_line_classify ("--> 75ab9a58e9e", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_LAYER);
  ck_assert_str_eq (l.id, "75ab9a58e9e");
  buildah_line_classify ("--> not-an-id", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_OTHER);
}
END_TEST

START_TEST (shape_commit)
{
  struct buildah_line l;
  buildah_line_classify ("COMMIT docker.io/library/x:latest", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_COMMIT);
  ck_assert_str_eq (l.rest, "docker.io/library/x:latest");
  buildah_line_classify ("[2/2] COMMIT multi", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_COMMIT);
  ck_assert_str_eq (l.rest, "multi");
  buildah_line_classify ("COMMIT", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_COMMIT);
  ck_assert_str_eq (l.rest, "");
}
END_TEST

START_TEST (shape_tagged_and_image_id)
{
  struct buildah_line l;
  buildah_line_classify ("Successfully tagged localhost/multi:latest", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_TAGGED);
  ck_assert_str_eq (l.rest, "localhost/multi:latest");
  buildah_line_classify (ID64, false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_IMAGE_ID);
  ck_assert_str_eq (l.id, ID64);
  /* the same text from a RUN on stderr is output, not an ID */
  buildah_line_classify (ID64, true, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_OTHER);
}
END_TEST

START_TEST (shape_error_and_exit_status)
{
  struct buildah_line l;
  buildah_line_classify ("Error: building at STEP \"RUN exit 3\": exit status 3", true, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_ERROR);
  ck_assert_str_eq (l.rest, "building at STEP \"RUN exit 3\": exit status 3");
  buildah_line_classify ("subprocess exited with status 3", true, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_SUBPROCESS_EXIT);
  ck_assert_int_eq (l.exit_code, 3);
  /* on stdout, the same words are a RUN's output */
  buildah_line_classify ("Error: from my program", false, &l);
  ck_assert_int_eq (l.kind, BUILDAH_LINE_OTHER);
}
END_TEST

static void
feed (buildah_progress *p, const char *line, bool err)
{
  buildah_progress_line (p, line, strlen (line), err);
}

static solver_job *
run_cached_build (void)
{
  solver_job *job = solver_job_new ("t", NULL);
  buildah_progress *p = buildah_progress_new (job, "root");
  feed (p, "STEP 1/3: FROM localhost/busybox:latest\n", false);
  feed (p, "STEP 2/3: RUN echo hi\n", false);
  feed (p, "--> Using cache " ID64 "\n", false);
  feed (p, "--> 75ab9a58e9e\n", false);
  feed (p, "STEP 3/3: RUN echo out; echo err >&2\n", false);
  feed (p, "out\n", false);
  feed (p, "err\n", true);
  feed (p, "COMMIT x\n", false);
  feed (p, ID64 "\n", false);
  buildah_progress_finish (p, true, NULL);
  ck_assert_str_eq (buildah_progress_image_id (p), ID64);
  buildah_progress_free (p);
  return job;
}

START_TEST (progress_events_vertices_cache_and_logs)
{
  solver_job *job = run_cached_build ();
  bool done;
  const struct solver_event *ev;
  size_t i = 0;
  int vertices_started = 0, cached = 0, logs1 = 0, logs2 = 0;
  const char *step2 = NULL, *step3_input = NULL;
  while ((ev = solver_job_next (job, i, 0, &done)) != NULL)
    {
      if (ev->kind == SOLVER_EV_VERTEX && ev->completed_ns == 0)
        {
          vertices_started++;
          if (strcmp (ev->name, "[2/3] RUN echo hi") == 0)
            step2 = ev->vertex;
          if (strncmp (ev->name, "[3/3]", 5) == 0)
            step3_input = ev->inputs ? ev->inputs[0] : NULL;
        }
      if (ev->kind == SOLVER_EV_VERTEX && ev->cached)
        {
          cached++;
          ck_assert_str_eq (ev->name, "[2/3] RUN echo hi");
          ck_assert_int_eq (ev->started_ns, ev->completed_ns);
        }
      if (ev->kind == SOLVER_EV_LOG)
        {
          if (ev->stream == 1)
            {
              logs1++;
              ck_assert_str_eq (ev->data, "out\n");
            }
          else
            {
              logs2++;
              ck_assert_str_eq (ev->data, "err\n");
            }
        }
      i++;
    }
  ck_assert_int_eq (vertices_started, 4); /* 3 steps + exporting to image */
  ck_assert_int_eq (cached, 1);
  ck_assert_int_eq (logs1, 1);
  ck_assert_int_eq (logs2, 1);
  ck_assert_ptr_nonnull (step2);
  ck_assert_ptr_nonnull (step3_input);
  ck_assert_str_eq (step3_input, step2);
  solver_job_unref (job);
}
END_TEST

/* The announced first step and buildah's own line make one vertex and one
   line of text; a line other than the announced one is its own step. */
START_TEST (announced_first_step_is_said_once)
{
  solver_job *job = solver_job_new ("t", NULL);
  buildah_progress *p = buildah_progress_new (job, "root");
  buildah_progress_announce (p, "STEP 1/2: FROM localhost/busybox:latest");
  bool done;
  const struct solver_event *ev = solver_job_next (job, 0, 0, &done);
  ck_assert_ptr_nonnull (ev); /* said before buildah printed anything */
  feed (p, "STEP 1/2: FROM localhost/busybox:latest\n", false);
  feed (p, "STEP 2/2: RUN echo hi\n", false);
  feed (p, "hi\n", false);
  buildah_progress_finish (p, true, NULL);
  buildah_progress_free (p);
  int from_started = 0, run_started = 0, from_text = 0;
  for (size_t i = 0; (ev = solver_job_next (job, i, 0, &done)) != NULL; i++)
    {
      if (ev->kind == SOLVER_EV_VERTEX && ev->completed_ns == 0)
        {
          from_started += strcmp (ev->name, "[1/2] FROM localhost/busybox:latest") == 0;
          run_started += strcmp (ev->name, "[2/2] RUN echo hi") == 0;
        }
      if (ev->text && strstr (ev->text, "STEP 1/2") != NULL)
        from_text++;
    }
  ck_assert_int_eq (from_started, 1);
  ck_assert_int_eq (run_started, 1);
  ck_assert_int_eq (from_text, 1);
  solver_job_unref (job);

  /* A different first line from buildah: both are steps, nothing lost. */
  job = solver_job_new ("t", NULL);
  p = buildah_progress_new (job, "root");
  buildah_progress_announce (p, "STEP 1/2: FROM a");
  feed (p, "STEP 1/2: FROM b\n", false);
  buildah_progress_finish (p, true, NULL);
  buildah_progress_free (p);
  int started = 0;
  for (size_t i = 0; (ev = solver_job_next (job, i, 0, &done)) != NULL; i++)
    started += ev->kind == SOLVER_EV_VERTEX && ev->completed_ns == 0;
  ck_assert_int_eq (started, 2);
  solver_job_unref (job);
}
END_TEST

START_TEST (progress_digests_are_deterministic)
{
  solver_job *a = run_cached_build ();
  solver_job *b = run_cached_build ();
  bool done;
  for (size_t i = 0;; i++)
    {
      const struct solver_event *ea = solver_job_next (a, i, 0, &done);
      const struct solver_event *eb = solver_job_next (b, i, 0, &done);
      if (ea == NULL || eb == NULL)
        {
          ck_assert_ptr_eq (ea, eb);
          break;
        }
      if (ea->vertex || eb->vertex)
        ck_assert_str_eq (ea->vertex, eb->vertex);
    }
  solver_job_unref (a);
  solver_job_unref (b);
}
END_TEST

START_TEST (progress_failure_marks_vertex)
{
  solver_job *job = solver_job_new ("f", NULL);
  buildah_progress *p = buildah_progress_new (job, "root");
  feed (p, "STEP 1/2: FROM localhost/busybox:latest\n", false);
  feed (p, "STEP 2/2: RUN echo about-to-fail && exit 3\n", false);
  feed (p, "about-to-fail\n", false);
  feed (p, "subprocess exited with status 3\n", true);
  feed (p, "Error: building at STEP \"RUN echo about-to-fail && exit 3\": exit status 3\n", true);
  buildah_progress_finish (p, false, NULL);
  ck_assert_int_eq (buildah_progress_exit_code (p), 3);
  ck_assert_str_eq (buildah_progress_error (p), "building at STEP \"RUN echo about-to-fail && exit 3\": exit status 3");
  bool done;
  const struct solver_event *ev, *last_vertex = NULL;
  for (size_t i = 0; (ev = solver_job_next (job, i, 0, &done)) != NULL; i++)
    if (ev->kind == SOLVER_EV_VERTEX)
      last_vertex = ev;
  ck_assert_ptr_nonnull (last_vertex);
  ck_assert_str_eq (last_vertex->name, "[2/2] RUN echo about-to-fail && exit 3");
  ck_assert_ptr_nonnull (last_vertex->error);
  ck_assert_int_ne (last_vertex->completed_ns, 0);
  buildah_progress_free (p);
  solver_job_unref (job);
}
END_TEST

START_TEST (progress_names_stages_like_buildkit)
{
  solver_job *job = solver_job_new ("m", NULL);
  buildah_progress *p = buildah_progress_new (job, "root");
  feed (p, "[1/2] STEP 1/2: FROM localhost/busybox:latest AS builder\n", false);
  feed (p, "[1/2] STEP 2/2: RUN echo built > /out.txt\n", false);
  feed (p, "[2/2] STEP 1/2: FROM localhost/busybox:latest\n", false);
  feed (p, "[2/2] STEP 2/2: COPY --from=builder /out.txt /out.txt\n", false);
  buildah_progress_finish (p, true, NULL);
  bool done;
  const struct solver_event *ev;
  ps_strv names = { 0 };
  for (size_t i = 0; (ev = solver_job_next (job, i, 0, &done)) != NULL; i++)
    if (ev->kind == SOLVER_EV_VERTEX && ev->completed_ns == 0)
      ps_strv_push (&names, ev->name);
  ck_assert_uint_eq (names.n, 4);
  ck_assert_str_eq (names.v[0], "[builder 1/2] FROM localhost/busybox:latest");
  ck_assert_str_eq (names.v[1], "[builder 2/2] RUN echo built > /out.txt");
  ck_assert_str_eq (names.v[2], "[stage-1 1/2] FROM localhost/busybox:latest");
  ck_assert_str_eq (names.v[3], "[stage-1 2/2] COPY --from=builder /out.txt /out.txt");
  ps_strv_free (&names);
  buildah_progress_free (p);
  solver_job_unref (job);
}
END_TEST

START_TEST (error_for_user_has_no_dumps_or_server_paths)
{
  const char *ctx = "/var/lib/podsolve/builds/1f2e/context";
  cleanup_free char *copy = buildah_error_for_user (
      "building at STEP \"COPY missing.txt /x\": checking on sources under "
      "\"/var/lib/podsolve/builds/1f2e/context\": copier: stat: \"/missing.txt\": no such file or directory",
      ctx);
  ck_assert_str_eq (copy, "building at STEP \"COPY missing.txt /x\": checking on sources in the build context: "
                          "copier: stat: \"/missing.txt\": no such file or directory");
  cleanup_free char *rel = buildah_error_for_user ("open /var/lib/podsolve/builds/1f2e/context/sub/a: denied", ctx);
  ck_assert_str_eq (rel, "open sub/a: denied");
  cleanup_free char *dump = buildah_error_for_user (
      "building at STEP \"ECHO \": Build error: Unknown instruction: \"ECHO\" &imagebuilder.Step{Env:[]string{}}",
      NULL);
  ck_assert_str_eq (dump, "building at STEP \"ECHO \": Build error: Unknown instruction: \"ECHO\"");
}
END_TEST

START_TEST (shape_ssh_missing_is_said_as_buildkit_does)
{
  cleanup_free char *m = buildah_error_message (
      "building at STEP \"RUN --mount=type=ssh,id=mykey,required=true true\": resolving mountpoints for container "
      "\"223497b52ac4\": ssh required but no ssh with id mykey found");
  ck_assert_str_eq (m, "building at STEP \"RUN --mount=type=ssh,id=mykey,required=true true\": resolving mountpoints "
                       "for container \"223497b52ac4\": no SSH key \"mykey\" forwarded from the client");
  cleanup_free char *other = buildah_error_message ("exit status 3");
  ck_assert_str_eq (other, "exit status 3");
}
END_TEST

/* The keys buildah pushed for ARG steps (and only those) are kept for the
   cache's ARG-step index (cache_registry.h). */
START_TEST (progress_keeps_the_arg_steps_cache_keys)
{
  solver_job *job = solver_job_new ("a", NULL);
  buildah_progress *p = buildah_progress_new (job, "root");
  feed (p, "[1/2] STEP 1/3: FROM localhost/busybox:latest AS tools\n", false);
  feed (p, "[1/2] STEP 2/3: ARG GREETING=hello\n", false);
  feed (p, "--> Pushing cache 127.0.0.1:5000/c:" ID64 "\n", false);
  feed (p, "[1/2] STEP 3/3: RUN echo \"$GREETING\"\n", false);
  feed (p, "--> Pushing cache 127.0.0.1:5000/c:" ID64B "\n", false);
  feed (p, "[2/2] STEP 1/2: FROM tools\n", false);
  feed (p, "[2/2] STEP 2/2: arg lower=case\n", false);
  feed (p, "--> Pushing cache 127.0.0.1:5000/c:" ID64B "\n", false);
  feed (p, "--> Pushing cache 127.0.0.1:5000/c:short\n", false);
  buildah_progress_finish (p, true, NULL);
  const ps_strv *keys = buildah_progress_arg_cache_keys (p);
  ck_assert_uint_eq (keys->n, 2);
  ck_assert_str_eq (keys->v[0], ID64);
  ck_assert_str_eq (keys->v[1], ID64B);
  buildah_progress_free (p);
  solver_job_unref (job);
}
END_TEST

PS_TEST_SUITE (buildah_output)
{
  Suite *s = suite_create ("buildah_output");
  TCase *tc = tcase_create ("shapes");
  tcase_add_test (tc, shape_step_single_stage);
  tcase_add_test (tc, shape_step_multi_stage);
  tcase_add_test (tc, shape_using_cache);
  tcase_add_test (tc, shape_layer_id);
  tcase_add_test (tc, shape_commit);
  tcase_add_test (tc, shape_tagged_and_image_id);
  tcase_add_test (tc, shape_error_and_exit_status);
  tcase_add_test (tc, error_for_user_has_no_dumps_or_server_paths);
  tcase_add_test (tc, shape_ssh_missing_is_said_as_buildkit_does);
  suite_add_tcase (s, tc);
  tc = tcase_create ("progress");
  tcase_add_test (tc, progress_events_vertices_cache_and_logs);
  tcase_add_test (tc, progress_digests_are_deterministic);
  tcase_add_test (tc, announced_first_step_is_said_once);
  tcase_add_test (tc, progress_failure_marks_vertex);
  tcase_add_test (tc, progress_names_stages_like_buildkit);
  tcase_add_test (tc, progress_keeps_the_arg_steps_cache_keys);
  suite_add_tcase (s, tc);
  return s;
}
