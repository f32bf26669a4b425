/* test_runc_state.c — reading runc's state.json and removing the records
 * (and bundles) of the containers a killed buildah ran, and no others. */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ps.h"
#include "solver/runc_state.h"
#include "tests/unit/unit.h"

/* The fields podsolved reads, as runc 1.1 writes them (most of "config"
   left out). */
static char *
state_json (const char *id, int pid, unsigned long long start, const char *bundle)
{
  return xasprintf ("{\"id\":\"%s\",\"init_process_pid\":%d,\"init_process_start\":%llu,"
                    "\"created\":\"2026-12-06T20:53:56.485095895Z\",\"config\":{\"no_pivot_root\":false,"
                    "\"rootfs\":\"%s/mnt/rootfs\",\"labels\":[\"bundle=%s\"]},\"rootless\":false,"
                    "\"cgroup_paths\":{\"pids\":\"/sys/fs/cgroup/pids/%s\"}}",
                    id, pid, start, bundle, bundle, id);
}

START_TEST (state_json_parses)
{
  struct runc_state s;
  char *json = state_json ("buildah-buildah221059379", 29524, 7895706ULL,
                           "/var/tmp/x/tmp/buildah221059379");
  ck_assert_int_eq (runc_state_parse (json, &s), 0);
  ck_assert_str_eq (s.id, "buildah-buildah221059379");
  ck_assert_int_eq (s.init_pid, 29524);
  ck_assert (s.init_start == 7895706ULL);
  ck_assert_str_eq (s.bundle, "/var/tmp/x/tmp/buildah221059379");
  runc_state_clear (&s);
  free (json);

  /* no labels: no bundle, still a record */
  ck_assert_int_eq (runc_state_parse ("{\"id\":\"c\",\"init_process_pid\":7,\"init_process_start\":0}", &s), 0);
  ck_assert_ptr_null (s.bundle);
  runc_state_clear (&s);

  const char *bad[] = { "not json", "[]", "{\"id\":\"c\"}", "{\"id\":\"\",\"init_process_pid\":7,\"init_process_start\":1}",
                        "{\"id\":\"c\",\"init_process_pid\":0,\"init_process_start\":1}",
                        "{\"id\":\"c\",\"init_process_pid\":\"7\",\"init_process_start\":1}",
                        "{\"id\":\"c\",\"init_process_pid\":7}" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg (runc_state_parse (bad[i], &s) == -1, "%s", bad[i]);
  ck_assert_int_eq (runc_state_parse (NULL, &s), -1);
}
END_TEST

START_TEST (init_must_match_pid_and_start_time)
{
  struct runc_state s = { .id = (char *) "c", .init_pid = 100, .init_start = 5000 };
  struct ps_proc_id seen[] = { { 99, 5000 }, { 100, 4999 }, { 101, 5000 } };
  ck_assert (!runc_state_init_among (&s, seen, 3)); /* a recycled pid is not the init */
  seen[1].start = 5000;
  ck_assert (runc_state_init_among (&s, seen, 3));
  ck_assert (!runc_state_init_among (&s, seen, 0));
}
END_TEST

START_TEST (only_a_buildah_bundle_named_after_the_container_is_removed)
{
  struct runc_state s = { .id = (char *) "buildah-buildah123", .bundle = (char *) "/var/tmp/buildah123" };
  ck_assert_str_eq (runc_state_buildah_bundle (&s), "/var/tmp/buildah123");
  struct
  {
    const char *id, *bundle;
  } no[] = {
    { "buildah-buildah123", "/var/tmp/buildah124" }, /* another's */
    { "buildah-buildah123", "buildah123" },          /* relative */
    { "buildah-buildah123", "/var/tmp x/buildah123" }, /* mountinfo would escape it */
    { "buildah-buildah12a", "/var/tmp/buildah12a" },
    { "buildah-buildah", "/var/tmp/buildah" },
    { "podman-ctr", "/var/lib/containers/storage/overlay-containers/ctr/userdata" },
    { "buildah-buildah123", NULL },
  };
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
    {
      struct runc_state t = { .id = (char *) no[i].id, .bundle = (char *) no[i].bundle };
      ck_assert_msg (runc_state_buildah_bundle (&t) == NULL, "%s %s", no[i].id, no[i].bundle ? no[i].bundle : "");
    }
}
END_TEST

static void
put_state (const char *root, const char *id, int pid, unsigned long long start, const char *bundle)
{
  char *dir = xasprintf ("%s/%s", root, id);
  ck_assert_int_eq (mkdir (dir, 0700), 0);
  char *path = xasprintf ("%s/state.json", dir);
  char *json = state_json (id, pid, start, bundle);
  ck_assert_int_eq (ps_write_file (path, json, strlen (json), 0600, NULL), 0);
  ck_assert_int_eq (mkdir (bundle, 0700), 0);
  char *config = xasprintf ("%s/config.json", bundle);
  ck_assert_int_eq (ps_write_file (config, "{}", 2, 0600, NULL), 0);
  free (config);
  free (json);
  free (path);
  free (dir);
}

/* A fake runtime: logs its arguments and removes the state directory, as
   `runc --root R delete --force ID` does. */
START_TEST (only_the_killed_builds_containers_are_deleted)
{
  char tmpl[] = "/tmp/podsolve-runc-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (tmpl));
  char *root = xasprintf ("%s/run", tmpl);
  ck_assert_int_eq (mkdir (root, 0700), 0);
  char *log = xasprintf ("%s/log", tmpl);
  char *runtime = xasprintf ("%s/runc", tmpl);
  char *script = xasprintf ("#!/bin/sh\necho \"$*\" >> %s\n"
                            "case \"$1\" in --root=*) rm -r \"${1#--root=}/$4\";; esac\n",
                            log);
  ck_assert_int_eq (ps_write_file (runtime, script, strlen (script), 0755, NULL), 0);

  char *b1 = xasprintf ("%s/buildah1", tmpl), *b2 = xasprintf ("%s/buildah2", tmpl);
  char *b3 = xasprintf ("%s/buildah3", tmpl);
  put_state (root, "buildah-buildah1", 4242, 777, b1); /* the killed build's */
  put_state (root, "buildah-buildah2", 4242, 778, b2); /* same pid, another process */
  put_state (root, "buildah-buildah3", 5353, 777, b3); /* another build's */
  struct ps_proc_id seen[] = { { 4240, 770 }, { 4242, 777 } };

  ck_assert_uint_eq (runc_state_remove_of (root, runtime, seen, 2), 1);
  char *log_text = NULL;
  ck_assert_int_eq (ps_read_file (log, 4096, &log_text, NULL, NULL), 0);
  char *want = xasprintf ("--root=%s delete --force buildah-buildah1\n", root);
  ck_assert_str_eq (log_text, want);
  char *gone = xasprintf ("%s/buildah-buildah1", root), *kept2 = xasprintf ("%s/buildah-buildah2", root);
  ck_assert_int_ne (access (gone, F_OK), 0);
  ck_assert_int_ne (access (b1, F_OK), 0);
  ck_assert_int_eq (access (kept2, F_OK), 0);
  ck_assert_int_eq (access (b2, F_OK), 0);
  ck_assert_int_eq (access (b3, F_OK), 0);
  /* nothing seen, nothing done */
  ck_assert_uint_eq (runc_state_remove_of (root, runtime, NULL, 0), 0);

  ck_assert_int_eq (ps_rm_rf (tmpl, NULL), 0);
  free (gone), free (kept2), free (want), free (log_text);
  free (b1), free (b2), free (b3), free (script), free (runtime), free (log), free (root);
}
END_TEST

PS_TEST_SUITE (runc_state)
{
  Suite *s = suite_create ("runc_state");
  TCase *tc = tcase_create ("records");
  tcase_add_test (tc, state_json_parses);
  tcase_add_test (tc, init_must_match_pid_and_start_time);
  tcase_add_test (tc, only_a_buildah_bundle_named_after_the_container_is_removed);
  tcase_add_test (tc, only_the_killed_builds_containers_are_deleted);
  suite_add_tcase (s, tc);
  return s;
}
