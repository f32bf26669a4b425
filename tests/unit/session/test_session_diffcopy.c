/* test_session_diffcopy.c — the FileSync/DiffCopy receiver against a fake
 * docker CLI: what lands in the cache directory, what is requested on an
 * incremental transfer, and how every misbehaviour fails cleanly. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "schema/fsutil.pb-c.h"
#include "session/diffcopy.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

#define T0 1700000000123456789LL /* a modification time with nanoseconds */

struct fixture
{
  char *root;
  char *src;
  char *dest;
};

static void
fixture_init (struct fixture *f)
{
  f->root = test_mkdtemp ();
  f->src = xasprintf ("%s/src", f->root);
  f->dest = xasprintf ("%s/cache/context", f->root);
  ck_assert (mkdir (f->src, 0755) == 0);
}

static void
fixture_free (struct fixture *f)
{
  test_rm_rf (f->root);
  free (f->root);
  free (f->src);
  free (f->dest);
}

/* A context like a small project: files, nested dirs, a symlink, a hard
   link, an executable, an empty file, a file of many chunks. */
static void
make_tree (const char *src)
{
  char *p;
  test_write (src, "Dockerfile", "FROM scratch\nCOPY . /\n", 0644, T0);
  test_write (src, "empty", "", 0600, T0 + 1);
  test_write (src, "run.sh", "#!/bin/sh\necho hi\n", 0755, T0 + 2);
  p = xasprintf ("%s/src", src);
  mkdir (p, 0750);
  free (p);
  test_write (src, "src/main.c", "int main (void) { return 0; }\n", 0644, T0 + 3);
  p = xasprintf ("%s/src/deep", src);
  mkdir (p, 0755);
  free (p);
  test_write (src, "src/deep/leaf.txt", "leaf\n", 0640, T0 + 4);
  /* 200 KiB: several 32 KiB DATA chunks, interleaved with other files. */
  ps_buf big = { 0 };
  for (int i = 0; i < 200 * 1024 / 16; i++)
    ps_buf_printf (&big, "%015d\n", i);
  test_write (src, "big.bin", big.data, 0644, T0 + 5);
  ps_buf_free (&big);
  p = xasprintf ("%s/link", src);
  ck_assert (symlink ("src/main.c", p) == 0);
  free (p);
  p = xasprintf ("%s/pipe", src);
  ck_assert (mkfifo (p, 0620) == 0);
  free (p);
  char *a = xasprintf ("%s/run.sh", src);
  char *b = xasprintf ("%s/zz-hardlink", src);
  ck_assert (link (a, b) == 0);
  free (a);
  free (b);
  /* Directory times last: creating entries changed them. */
  p = xasprintf ("%s/src/deep", src);
  struct timespec ts[2] = { { T0 / 1000000000LL, 7 }, { T0 / 1000000000LL, 7 } };
  utimensat (AT_FDCWD, p, ts, 0);
  free (p);
}

static int
sync_once (struct fixture *f, const struct fake_config *cfg, const struct diffcopy_opts *o,
           struct diffcopy_stats *st, ps_error **err)
{
  struct peer_pair pp;
  pair_start_session (&pp, cfg, "sess-dc", NULL, 0);
  struct diffcopy_opts def = { .dir_name = "context" };
  int r = session_diffcopy (pp.session, f->dest, o ? o : &def, st, err);
  pair_stop (&pp);
  return r;
}

static struct fake_config
cfg_for (struct fixture *f, enum fake_mode mode)
{
  struct fake_config c = { .mode = mode };
  c.dirs[0] = (struct fake_dir) { "context", f->src };
  return c;
}

static void
assert_same_file (struct fixture *f, const char *rel)
{
  char *a = xasprintf ("%s/%s", f->src, rel);
  char *b = xasprintf ("%s/%s", f->dest, rel);
  struct stat sa, sb;
  ck_assert_msg (lstat (a, &sa) == 0, "%s", a);
  ck_assert_msg (lstat (b, &sb) == 0, "%s missing", b);
  ck_assert_int_eq (sa.st_mode, sb.st_mode);
  ck_assert_int_eq (sa.st_mtim.tv_sec, sb.st_mtim.tv_sec);
  ck_assert_int_eq (sa.st_mtim.tv_nsec, sb.st_mtim.tv_nsec);
  if (S_ISREG (sa.st_mode))
    {
      char *ca = test_read (f->src, rel), *cb = test_read (f->dest, rel);
      ck_assert_str_eq (ca, cb);
      free (ca);
      free (cb);
    }
  free (a);
  free (b);
}

START_TEST (first_transfer_copies_the_tree_with_metadata)
{
  struct fixture f;
  fixture_init (&f);
  make_tree (f.src);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  cfg.chunk = 4096;
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-first", NULL, 0);
  const char *ex[] = { "*.log", "!keep.log" };
  const char *inc[] = { "." };
  struct diffcopy_opts o = { .dir_name = "context", .exclude_patterns = ex, .n_exclude = 2,
                             .include_patterns = inc, .n_include = 1 };
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  int r = session_diffcopy (pp.session, f.dest, &o, &st, &err);
  ck_assert_msg (r == 0, "%s", err ? err->msg : "");

  /* §3.2 metadata, one header per value. */
  char *m = fake_peer_metadata (pp.peer, "dir-name");
  ck_assert_str_eq (m, "context");
  free (m);
  m = fake_peer_metadata (pp.peer, "exclude-patterns");
  ck_assert_str_eq (m, "*.log|!keep.log");
  free (m);
  m = fake_peer_metadata (pp.peer, "include-patterns");
  ck_assert_str_eq (m, ".");
  free (m);
  pair_stop (&pp);

  const char *files[] = { "Dockerfile", "empty", "run.sh", "src", "src/main.c", "src/deep", "src/deep/leaf.txt",
                          "big.bin", "zz-hardlink", "pipe" };
  for (size_t i = 0; i < ARRAY_SIZE (files); i++)
    assert_same_file (&f, files[i]);
  char *l = xasprintf ("%s/link", f.dest);
  char target[64] = "";
  ck_assert_int_eq (readlink (l, target, sizeof target - 1), 10);
  ck_assert_str_eq (target, "src/main.c");
  free (l);
  /* The hard link is a link, not a copy (and was never requested). */
  char *a = xasprintf ("%s/run.sh", f.dest), *b = xasprintf ("%s/zz-hardlink", f.dest);
  struct stat sa, sb;
  ck_assert (stat (a, &sa) == 0 && stat (b, &sb) == 0);
  ck_assert_int_eq (sa.st_ino, sb.st_ino);
  free (a);
  free (b);
  /* Regular files without linkname: Dockerfile empty run.sh main.c leaf big.bin */
  ck_assert_uint_eq (st.files_requested, 6);
  ck_assert_uint_eq (st.entries, 11);
  ck_assert_uint_eq (st.file_bytes, 200 * 1024 + 22 + 18 + 30 + 5);
  ck_assert_uint_eq (st.removed, 0);
  ck_assert (st.bytes > st.file_bytes);
  ck_assert_uint_eq (test_count_temporaries (f.dest), 0);
  fixture_free (&f);
}
END_TEST

START_TEST (second_transfer_requests_only_the_changed_file)
{
  struct fixture f;
  fixture_init (&f);
  for (int i = 0; i < 20; i++)
    {
      char name[32], content[32];
      snprintf (name, sizeof name, "file%02d.txt", i);
      snprintf (content, sizeof content, "content %d\n", i);
      test_write (f.src, name, content, 0644, T0 + i);
    }
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert_msg (sync_once (&f, &cfg, NULL, &st, &err) == 0, "%s", err ? err->msg : "");
  ck_assert_uint_eq (st.files_requested, 20);

  /* The user edits one file. */
  test_write (f.src, "file07.txt", "edited!\n", 0644, T0 + 1000);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-second", NULL, 0);
  struct diffcopy_opts o = { .dir_name = "context" };
  ck_assert_msg (session_diffcopy (pp.session, f.dest, &o, &st, &err) == 0, "%s", err ? err->msg : "");
  ck_assert_uint_eq (st.files_requested, 1);
  ck_assert_uint_eq (fake_peer_reqs (pp.peer), 1);
  ck_assert (fake_peer_requested (pp.peer, "file07.txt"));
  pair_stop (&pp);
  char *c = test_read (f.dest, "file07.txt");
  ck_assert_str_eq (c, "edited!\n");
  free (c);
  assert_same_file (&f, "file07.txt");

  /* Nothing changed: nothing requested. */
  ck_assert (sync_once (&f, &cfg, NULL, &st, &err) == 0);
  ck_assert_uint_eq (st.files_requested, 0);
  ck_assert_uint_eq (st.entries, 20);
  fixture_free (&f);
}
END_TEST

START_TEST (entries_gone_from_the_listing_are_removed)
{
  struct fixture f;
  fixture_init (&f);
  make_tree (f.src);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert (sync_once (&f, &cfg, NULL, &st, &err) == 0);

  /* Remove a file and a whole directory; turn a file into a directory and
     the symlink into a file. */
  char *p = xasprintf ("%s/empty", f.src);
  unlink (p);
  free (p);
  p = xasprintf ("%s/src/deep", f.src);
  ps_rm_rf (p, NULL);
  free (p);
  p = xasprintf ("%s/Dockerfile", f.src);
  unlink (p);
  mkdir (p, 0755);
  free (p);
  test_write (f.src, "Dockerfile/inner", "now a dir\n", 0644, T0);
  p = xasprintf ("%s/link", f.src);
  unlink (p);
  free (p);
  test_write (f.src, "link", "not a link any more\n", 0644, T0);

  ck_assert_msg (sync_once (&f, &cfg, NULL, &st, &err) == 0, "%s", err ? err->msg : "");
  ck_assert (!test_exists (f.dest, "empty"));
  ck_assert (!test_exists (f.dest, "src/deep"));
  ck_assert_uint_eq (st.removed, 2);
  assert_same_file (&f, "Dockerfile/inner");
  assert_same_file (&f, "link");
  assert_same_file (&f, "src/main.c");
  /* Only the two new files crossed the wire. */
  ck_assert_uint_eq (st.files_requested, 2);
  ck_assert_uint_eq (test_count_temporaries (f.dest), 0);
  fixture_free (&f);
}
END_TEST

START_TEST (mode_change_alone_is_applied_without_a_request)
{
  struct fixture f;
  fixture_init (&f);
  test_write (f.src, "script", "echo\n", 0644, T0);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert (sync_once (&f, &cfg, NULL, &st, &err) == 0);
  char *p = xasprintf ("%s/script", f.src);
  chmod (p, 0755);
  free (p);
  ck_assert (sync_once (&f, &cfg, NULL, &st, &err) == 0);
  ck_assert_uint_eq (st.files_requested, 0);
  assert_same_file (&f, "script");
  fixture_free (&f);
}
END_TEST

START_TEST (read_only_directories_are_still_updated)
{
  struct fixture f;
  fixture_init (&f);
  char *d = xasprintf ("%s/ro", f.src);
  mkdir (d, 0755);
  test_write (f.src, "ro/file", "v1\n", 0644, T0);
  chmod (d, 0555);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert_msg (sync_once (&f, &cfg, NULL, &st, &err) == 0, "%s", err ? err->msg : "");
  assert_same_file (&f, "ro");
  chmod (d, 0755);
  test_write (f.src, "ro/file", "v2 longer\n", 0644, T0 + 5);
  test_write (f.src, "ro/new", "new\n", 0644, T0);
  chmod (d, 0555);
  ck_assert_msg (sync_once (&f, &cfg, NULL, &st, &err) == 0, "%s", err ? err->msg : "");
  assert_same_file (&f, "ro/file");
  assert_same_file (&f, "ro/new");
  assert_same_file (&f, "ro");
  ck_assert_uint_eq (st.files_requested, 2);
  chmod (d, 0755);
  free (d);
  fixture_free (&f);
}
END_TEST

START_TEST (excluded_files_sent_anyway_are_dropped)
{
  struct fixture f;
  fixture_init (&f);
  test_write (f.src, "app.c", "x\n", 0644, T0);
  test_write (f.src, "debug.log", "secret log\n", 0644, T0);
  struct fake_config cfg = cfg_for (&f, FAKE_IGNORE_EXCLUDES);
  const char *ex[] = { "*.log" };
  struct diffcopy_opts o = { .dir_name = "context", .exclude_patterns = ex, .n_exclude = 1 };
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert (sync_once (&f, &cfg, &o, &st, &err) == 0);
  ck_assert (test_exists (f.dest, "app.c"));
  ck_assert (!test_exists (f.dest, "debug.log"));
  ck_assert_uint_eq (st.files_requested, 1);
  fixture_free (&f);
}
END_TEST

START_TEST (followpaths_are_forwarded)
{
  struct fixture f;
  fixture_init (&f);
  make_tree (f.src);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  const char *follow[] = { "Dockerfile", "Dockerfile.dockerignore" };
  struct diffcopy_opts o = { .dir_name = "context", .follow_paths = follow, .n_follow = 2 };
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert (sync_once (&f, &cfg, &o, &st, &err) == 0);
  assert_same_file (&f, "Dockerfile");
  ck_assert (!test_exists (f.dest, "big.bin"));
  ck_assert_uint_eq (st.entries, 1);
  fixture_free (&f);
}
END_TEST

static uint64_t last_progress;
static void
progress (void *ud, uint64_t bytes)
{
  ck_assert (bytes >= last_progress);
  last_progress = bytes;
  (*(int *) ud)++;
}

START_TEST (progress_reports_cumulative_packet_bytes)
{
  struct fixture f;
  fixture_init (&f);
  make_tree (f.src);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  int calls = 0;
  last_progress = 0;
  struct diffcopy_opts o = { .dir_name = "context", .progress = progress, .progress_ud = &calls };
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert (sync_once (&f, &cfg, &o, &st, &err) == 0);
  ck_assert (calls > 10);
  ck_assert_uint_eq (last_progress, st.bytes);
  fixture_free (&f);
}
END_TEST

/* ---- failures ---------------------------------------------------------------------------- */

/* Run a transfer that must fail: returns the error message; checks that
   no temporary is left and that nothing escaped dest. */
static char *
failing_sync (struct fixture *f, enum fake_mode mode, const struct diffcopy_opts *o, char **err_at_peer)
{
  struct fake_config cfg = cfg_for (f, mode);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-fail", NULL, 0);
  struct diffcopy_opts def = { .dir_name = "context", .idle_timeout_ms = 500 };
  struct diffcopy_stats st = { 0 };
  ps_error *err = NULL;
  ck_assert_int_eq (session_diffcopy (pp.session, f->dest, o ? o : &def, &st, &err), -1);
  ck_assert_ptr_nonnull (err);
  char *msg = xstrdup (err->msg);
  ps_error_free (err);
  if (err_at_peer)
    {
      for (int i = 0; i < 100 && (*err_at_peer = fake_peer_err_received (pp.peer)) == NULL; i++)
        usleep (10000);
    }
  pair_stop (&pp);
  ck_assert_uint_eq (test_count_temporaries (f->dest), 0);
  ck_assert (!test_exists (f->root, "x"));
  ck_assert (!test_exists (f->root, "cache/x"));
  return msg;
}

START_TEST (path_escaping_the_directory_is_refused)
{
  struct fixture f;
  fixture_init (&f);
  test_write (f.src, "a", "a\n", 0644, T0);
  char *peer_err = NULL;
  char *msg = failing_sync (&f, FAKE_STAT_DOTDOT, NULL, &peer_err);
  ck_assert_str_eq (msg, "transfer context from session sess-fail: path \"../x\" escapes the directory (\"..\")");
  /* The sender is told why (§3.5 step 7). */
  ck_assert_ptr_nonnull (peer_err);
  ck_assert_ptr_nonnull (strstr (peer_err, "escapes"));
  free (peer_err);
  free (msg);
  msg = failing_sync (&f, FAKE_STAT_ABSOLUTE, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "absolute path \"/abs\""));
  free (msg);
  fixture_free (&f);
}
END_TEST

START_TEST (listing_out_of_order_or_orphaned_is_refused)
{
  struct fixture f;
  fixture_init (&f);
  char *msg = failing_sync (&f, FAKE_STAT_NO_PARENT, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "\"missing/child\" arrived without its parent directory"));
  free (msg);
  msg = failing_sync (&f, FAKE_STAT_UNORDERED, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "entries out of order: \"a\" after \"b\""));
  free (msg);
  msg = failing_sync (&f, FAKE_HARDLINK_UNKNOWN, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "invalid link \"zz-link\" to unknown path \"nowhere\""));
  free (msg);
  fixture_free (&f);
}
END_TEST

START_TEST (data_for_an_unrequested_file_is_refused)
{
  struct fixture f;
  fixture_init (&f);
  test_write (f.src, "a", "a\n", 0644, T0);
  /* Already in the cache: it will not be requested. */
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  ps_error *err = NULL;
  ck_assert (sync_once (&f, &cfg, NULL, NULL, &err) == 0);
  char *msg = failing_sync (&f, FAKE_DATA_UNREQUESTED, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "invalid file request 0"));
  free (msg);
  char *c = test_read (f.dest, "a");
  ck_assert_str_eq (c, "a\n");
  free (c);
  fixture_free (&f);
}
END_TEST

START_TEST (connection_closed_mid_file_leaves_no_partial_file)
{
  struct fixture f;
  fixture_init (&f);
  ps_buf big = { 0 };
  for (int i = 0; i < 20000; i++)
    ps_buf_printf (&big, "line %d\n", i);
  test_write (f.src, "big", big.data, 0644, T0);
  /* The old version is in the cache from an earlier build. */
  ps_mkdir_p (f.dest, 0700, NULL);
  test_write (f.dest, "big", "old version\n", 0644, T0 - 1);
  char *msg = failing_sync (&f, FAKE_CLOSE_MID_FILE, NULL, NULL);
  ck_assert_msg (strstr (msg, "connection closed by the client") != NULL, "%s", msg);
  free (msg);
  char *c = test_read (f.dest, "big");
  ck_assert_str_eq (c, "old version\n");
  free (c);
  ps_buf_free (&big);
  fixture_free (&f);
}
END_TEST

START_TEST (err_packet_from_the_sender)
{
  struct fixture f;
  fixture_init (&f);
  test_write (f.src, "a", "a\n", 0644, T0);
  char *msg = failing_sync (&f, FAKE_ERR_PACKET, NULL, NULL);
  ck_assert_str_eq (msg, "transfer context from session sess-fail: error from sender: boom");
  free (msg);
  fixture_free (&f);
}
END_TEST

static bool
always (void *ud)
{
  return true;
}

START_TEST (oversize_message_silent_peer_and_cancellation)
{
  struct fixture f;
  fixture_init (&f);
  char *msg = failing_sync (&f, FAKE_HUGE_MESSAGE, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "DiffCopy: grpc status 8 (RESOURCE_EXHAUSTED): received message larger than max"));
  free (msg);
  msg = failing_sync (&f, FAKE_SILENT, NULL, NULL);
  ck_assert_str_eq (msg, "transfer context from session sess-fail: no packet from the client for 500 ms");
  free (msg);
  struct diffcopy_opts o = { .dir_name = "context", .cancelled = always };
  int64_t t0 = ps_monotonic_ns ();
  msg = failing_sync (&f, FAKE_SILENT, &o, NULL);
  ck_assert ((ps_monotonic_ns () - t0) < 2000000000LL);
  ck_assert_ptr_nonnull (strstr (msg, "cancelled"));
  free (msg);
  fixture_free (&f);
}
END_TEST

START_TEST (garbage_peer_fails_the_transfer)
{
  struct fixture f;
  fixture_init (&f);
  char *msg = failing_sync (&f, FAKE_GARBAGE, NULL, NULL);
  ck_assert_ptr_nonnull (strstr (msg, "protocol error"));
  free (msg);
  fixture_free (&f);
}
END_TEST

START_TEST (unknown_dir_name_and_method_not_exposed)
{
  struct fixture f;
  fixture_init (&f);
  struct diffcopy_opts o = { .dir_name = "nosuch" };
  char *msg = failing_sync (&f, FAKE_NORMAL, &o, NULL);
  ck_assert_str_eq (msg, "transfer nosuch from session sess-fail: FileSync/DiffCopy: grpc status 5 (NOT_FOUND): no "
                         "access allowed to dir \"nosuch\"");
  free (msg);

  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL);
  struct peer_pair pp;
  const char *only_auth[] = { "/moby.filesync.v1.Auth/Credentials" };
  pair_start_session (&pp, &cfg, "sess-noexp", only_auth, 1);
  struct diffcopy_opts o2 = { .dir_name = "context" };
  ps_error *err = NULL;
  ck_assert_int_eq (session_diffcopy (pp.session, f.dest, &o2, NULL, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "does not serve FileSync/DiffCopy"));
  ps_error_free (err);
  pair_stop (&pp);
  fixture_free (&f);
}
END_TEST

START_TEST (sender_ending_without_echoing_fin_is_accepted)
{
  struct fixture f;
  fixture_init (&f);
  test_write (f.src, "a", "a\n", 0644, T0);
  struct fake_config cfg = cfg_for (&f, FAKE_NO_FIN);
  ps_error *err = NULL;
  ck_assert_msg (sync_once (&f, &cfg, NULL, NULL, &err) == 0, "%s", err ? err->msg : "");
  assert_same_file (&f, "a");
  fixture_free (&f);
}
END_TEST

START_TEST (path_checks)
{
  ps_error *err = NULL;
  ck_assert_int_eq (diffcopy_check_path ("a/b.c", &err), 0);
  ck_assert_int_eq (diffcopy_check_path (".dockerignore", &err), 0);
  ck_assert_int_eq (diffcopy_check_path ("a..b/..c", &err), 0);
  const char *bad[] = { "", "/etc/passwd", "..", "../x", "a/../../x", "a/..", "./a", "a/./b", "a//b", "a/", "." };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      ck_assert_msg (diffcopy_check_path (bad[i], &err) == -1, "%s accepted", bad[i]);
      ck_assert_int_eq (err->status, 400);
      ps_error_free (err);
      err = NULL;
    }
  /* PS_MAX_CONTEXT_PATH for the whole path, NAME_MAX for one name. */
  char path[PS_MAX_CONTEXT_PATH + 2];
  for (size_t i = 0; i < sizeof path - 1; i++)
    path[i] = i % 100 == 99 ? '/' : 'p';
  path[PS_MAX_CONTEXT_PATH] = '\0';
  ck_assert_int_eq (diffcopy_check_path (path, &err), 0);
  path[PS_MAX_CONTEXT_PATH] = 'p';
  path[PS_MAX_CONTEXT_PATH + 1] = '\0';
  ck_assert_int_eq (diffcopy_check_path (path, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "is longer than 3072 bytes"));
  ps_error_free (err);
  err = NULL;
  char name[NAME_MAX + 2];
  memset (name, 'n', sizeof name - 1);
  name[NAME_MAX + 1] = '\0';
  ck_assert_int_eq (diffcopy_check_path (name, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "has a name longer than 255 bytes"));
  ps_error_free (err);
}
END_TEST

/* ---- the receiver without a connection (the seam the fuzzer drives) ------------- */

struct sent
{
  size_t reqs, fins, errs;
  uint32_t last_req;
  char *err_text;
};

static int
record_send (void *ud, const void *packet, size_t len, bool final, ps_error **err)
{
  struct sent *s = ud;
  Fsutil__Types__Packet *p = fsutil__types__packet__unpack (NULL, len, packet);
  ck_assert_ptr_nonnull (p);
  if (p->type == FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ)
    s->reqs++, s->last_req = p->id;
  else if (p->type == FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN)
    s->fins++;
  else if (p->type == FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR)
    {
      ck_assert (final);
      s->errs++;
      free (s->err_text);
      s->err_text = xstrndup ((const char *) p->data.data, p->data.len);
    }
  fsutil__types__packet__free_unpacked (p, NULL);
  return 0;
}

static int
feed_packet (diffcopy_receiver *r, int type, const char *path, uint32_t mode, uint32_t id, const char *data,
             ps_error **err)
{
  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  Fsutil__Types__Stat st = FSUTIL__TYPES__STAT__INIT;
  p.type = (Fsutil__Types__Packet__PacketType) type;
  p.id = id;
  if (path)
    {
      st.path = (char *) path;
      st.mode = mode;
      st.modtime = T0;
      p.stat = &st;
    }
  if (data)
    {
      p.data.data = (uint8_t *) data;
      p.data.len = strlen (data);
    }
  uint8_t buf[256];
  size_t len = fsutil__types__packet__pack (&p, buf);
  return diffcopy_receiver_packet (r, buf, len, err);
}

START_TEST (receiver_runs_packet_by_packet_and_fail_removes_the_temporary)
{
  struct fixture f;
  fixture_init (&f);
  struct diffcopy_opts o = { .dir_name = "context" };
  struct sent s = { 0 };
  ps_error *err = NULL;

  /* A complete transfer: STAT, end of listing -> REQ, DATA, empty DATA -> FIN,
     the sender's FIN, the call's end. */
  diffcopy_receiver *r = diffcopy_receiver_new ("unit", f.dest, &o, record_send, &s, &err);
  ck_assert_ptr_nonnull (r);
  ck_assert_int_eq (feed_packet (r, 0, "Dockerfile", 0644, 0, NULL, &err), 0);
  ck_assert_int_eq (feed_packet (r, 0, NULL, 0, 0, NULL, &err), 0);
  ck_assert_uint_eq (s.reqs, 1);
  ck_assert_int_eq (feed_packet (r, 2, NULL, 0, s.last_req, "FROM scratch\n", &err), 0);
  ck_assert_int_eq (feed_packet (r, 2, NULL, 0, s.last_req, NULL, &err), 0);
  ck_assert_uint_eq (s.fins, 1);
  ck_assert_int_eq (feed_packet (r, 3, NULL, 0, 0, NULL, &err), 0);
  ck_assert_int_eq (diffcopy_receiver_end (r, &err), 0);
  diffcopy_receiver_free (r);
  char *text = test_read (f.dest, "Dockerfile");
  ck_assert_str_eq (text, "FROM scratch\n");
  free (text);

  /* Half a changed file, then the sender breaks the protocol: ERR goes
     out as the final packet and no temporary is left. */
  s = (struct sent) { 0 };
  r = diffcopy_receiver_new ("unit", f.dest, &o, record_send, &s, &err);
  ck_assert_int_eq (feed_packet (r, 0, "Dockerfile", 0600, 0, NULL, &err), 0);
  ck_assert_int_eq (feed_packet (r, 0, NULL, 0, 0, NULL, &err), 0);
  ck_assert_int_eq (feed_packet (r, 2, NULL, 0, 0, "FROM bus", &err), 0);
  ck_assert_uint_eq (test_count_temporaries (f.dest), 1);
  ck_assert_int_eq (feed_packet (r, 3, NULL, 0, 0, NULL, &err), -1);
  ck_assert_str_eq (err->msg, "the client sent FIN before the transfer was complete");
  diffcopy_receiver_fail (r, err->msg);
  ck_assert_uint_eq (s.errs, 1);
  ck_assert_str_eq (s.err_text, err->msg);
  ck_assert_uint_eq (test_count_temporaries (f.dest), 0);
  /* Nothing more is accepted after the end. */
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (feed_packet (r, 0, NULL, 0, 0, NULL, &err), -1);
  ps_error_free (err);
  diffcopy_receiver_free (r);
  text = test_read (f.dest, "Dockerfile");
  ck_assert_str_eq (text, "FROM scratch\n");
  free (text);
  free (s.err_text);
  fixture_free (&f);
}
END_TEST

/* The entry limit (PS_MAX_CONTEXT_ENTRIES; lowered here): one entry more is
   413 before anything touches the disk, and the sender is told (ERR). */
START_TEST (listing_over_the_entry_limit_is_413)
{
  struct fixture f;
  fixture_init (&f);
  struct diffcopy_opts o = { .dir_name = "context", .max_entries = 3 };
  struct sent s = { 0 };
  ps_error *err = NULL;
  diffcopy_receiver *r = diffcopy_receiver_new ("unit", f.dest, &o, record_send, &s, &err);
  const char *names[] = { "a", "b", "c", "d" };
  for (size_t i = 0; i < 3; i++)
    ck_assert_int_eq (feed_packet (r, 0, names[i], 0644, 0, NULL, &err), 0);
  ck_assert_int_eq (feed_packet (r, 0, names[3], 0644, 0, NULL, &err), -1);
  ck_assert_int_eq (err->status, 413);
  ck_assert_str_eq (err->msg, "more than 3 entries");
  diffcopy_receiver_fail (r, err->msg);
  ck_assert_uint_eq (s.errs, 1);
  ck_assert_uint_eq (s.reqs, 0);
  diffcopy_receiver_free (r);
  ck_assert (!test_exists (f.dest, "a"));
  ps_error_free (err);
  free (s.err_text);
  fixture_free (&f);
}
END_TEST

PS_TEST_SUITE (session_diffcopy)
{
  Suite *s = suite_create ("session_diffcopy");
  TCase *tc = tcase_create ("diffcopy");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, first_transfer_copies_the_tree_with_metadata);
  tcase_add_test (tc, second_transfer_requests_only_the_changed_file);
  tcase_add_test (tc, entries_gone_from_the_listing_are_removed);
  tcase_add_test (tc, mode_change_alone_is_applied_without_a_request);
  tcase_add_test (tc, read_only_directories_are_still_updated);
  tcase_add_test (tc, excluded_files_sent_anyway_are_dropped);
  tcase_add_test (tc, followpaths_are_forwarded);
  tcase_add_test (tc, progress_reports_cumulative_packet_bytes);
  tcase_add_test (tc, path_escaping_the_directory_is_refused);
  tcase_add_test (tc, listing_out_of_order_or_orphaned_is_refused);
  tcase_add_test (tc, data_for_an_unrequested_file_is_refused);
  tcase_add_test (tc, connection_closed_mid_file_leaves_no_partial_file);
  tcase_add_test (tc, err_packet_from_the_sender);
  tcase_add_test (tc, oversize_message_silent_peer_and_cancellation);
  tcase_add_test (tc, garbage_peer_fails_the_transfer);
  tcase_add_test (tc, unknown_dir_name_and_method_not_exposed);
  tcase_add_test (tc, sender_ending_without_echoing_fin_is_accepted);
  tcase_add_test (tc, path_checks);
  tcase_add_test (tc, receiver_runs_packet_by_packet_and_fail_removes_the_temporary);
  tcase_add_test (tc, listing_over_the_entry_limit_is_413);
  suite_add_tcase (s, tc);
  return s;
}
