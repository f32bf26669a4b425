/* test_session_filesend.c — the build's output to the client over
 * FileSend/DiffCopy, against a fake docker CLI receiving `--output`: a tar
 * arrives byte for byte in 3 MiB messages, a tree arrives in fsutil's
 * order with its modes, times, links and contents, and every misbehaving
 * receiver fails the export with a clear error and nothing leaked. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "session/filesend.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

#define T0 1700000000123456789LL /* a modification time with nanoseconds */
#define MIB (1024 * 1024)

/* What the docker CLI exposes with `--output`: FileSend next to the rest. */
static const char *const with_filesend[] = {
  "/grpc.health.v1.Health/Check",
  "/moby.filesync.v1.FileSync/DiffCopy",
  "/moby.filesync.v1.FileSend/DiffCopy",
  "/moby.filesync.v1.Auth/Credentials",
};
/* ... and without `--output`. */
static const char *const without_filesend[] = {
  "/grpc.health.v1.Health/Check",
  "/moby.filesync.v1.FileSync/DiffCopy",
  "/moby.filesync.v1.Auth/Credentials",
};

struct fixture
{
  char *root;
  char *src; /* the tree or file we export */
  char *out; /* where the client writes it */
  size_t fds_before;
};

static size_t
count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  ck_assert_ptr_nonnull (d);
  size_t n = 0;
  while (readdir (d) != NULL)
    n++;
  closedir (d);
  return n;
}

static void
fixture_init (struct fixture *f)
{
  f->fds_before = count_fds ();
  f->root = test_mkdtemp ();
  f->src = xasprintf ("%s/src", f->root);
  f->out = xasprintf ("%s/out", f->root);
}

static void
fixture_free (struct fixture *f)
{
  test_rm_rf (f->root);
  free (f->root);
  free (f->src);
  free (f->out);
  /* Every descriptor the export opened (files, directories, the call's
     plumbing) is closed again. */
  ck_assert_uint_eq (count_fds (), f->fds_before);
}

static void
write_pattern (const char *path, size_t size)
{
  unsigned char *buf = xmalloc (size + 1);
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < size; i++)
    {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      buf[i] = (unsigned char) x;
    }
  ck_assert_int_eq (ps_write_file (path, buf, size, 0644, NULL), 0);
  free (buf);
}

static bool
same_contents (const char *a, const char *b)
{
  char *ca = NULL, *cb = NULL;
  size_t la = 0, lb = 0;
  ck_assert_int_eq (ps_read_file (a, 64 * MIB, &ca, &la, NULL), 0);
  ck_assert_int_eq (ps_read_file (b, 64 * MIB, &cb, &lb, NULL), 0);
  bool same = la == lb && memcmp (ca, cb, la) == 0;
  free (ca);
  free (cb);
  return same;
}

struct progress_log
{
  size_t calls;
  uint64_t last;
};

static void
on_progress (void *ud, uint64_t bytes)
{
  struct progress_log *l = ud;
  ck_assert (bytes > l->last); /* cumulative: strictly growing */
  l->last = bytes;
  l->calls++;
}

static struct fake_config
cfg_for (struct fixture *f, enum fake_mode mode, bool local)
{
  struct fake_config c = { .mode = mode, .filesend_dest = f->out, .filesend_local = local };
  return c;
}

/* ---- type=tar: one file ----------------------------------------------------------------- */

START_TEST (tar_output_arrives_intact_in_3_mib_messages)
{
  struct fixture f;
  fixture_init (&f);
  size_t size = 7 * MIB + MIB / 2 + 123; /* two full messages and a tail */
  write_pattern (f.src, size);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL, false);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-fs", with_filesend, ARRAY_SIZE (with_filesend));
  struct progress_log log = { 0 };
  ps_error *err = NULL;
  int r = session_filesend_file (pp.session, f.src, on_progress, &log, &err);
  ck_assert_msg (r == 0, "%s", err ? err->msg : "");

  struct fake_filesend_stats st;
  fake_peer_filesend_stats (pp.peer, &st);
  pair_stop (&pp);
  ck_assert_uint_eq (st.calls, 1);
  ck_assert_uint_eq (st.messages, 3);
  /* Under the client's 4 MiB limit: 3 MiB of data plus the field's 5 bytes. */
  ck_assert_uint_eq (st.max_message, 3 * MIB + 5);
  ck_assert_uint_eq (st.bytes, size);
  ck_assert (st.half_closed && st.ok);
  ck_assert (same_contents (f.src, f.out));
  ck_assert_uint_eq (log.calls, 3);
  ck_assert_uint_eq (log.last, size);
  free (st.paths);
  free (st.problem);
  fixture_free (&f);
}
END_TEST

START_TEST (empty_tar_output_still_creates_the_file)
{
  struct fixture f;
  fixture_init (&f);
  write_pattern (f.src, 0);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL, false);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-fs", with_filesend, ARRAY_SIZE (with_filesend));
  ps_error *err = NULL;
  ck_assert_msg (session_filesend_file (pp.session, f.src, NULL, NULL, &err) == 0, "%s", err ? err->msg : "");
  struct fake_filesend_stats st;
  fake_peer_filesend_stats (pp.peer, &st);
  pair_stop (&pp);
  ck_assert_uint_eq (st.messages, 0);
  ck_assert (st.ok);
  struct stat sb;
  ck_assert (stat (f.out, &sb) == 0 && S_ISREG (sb.st_mode) && sb.st_size == 0);
  free (st.paths);
  free (st.problem);
  fixture_free (&f);
}
END_TEST

/* Run an export that must fail; returns the error (caller frees). */
static ps_error *
failing_export (struct fixture *f, enum fake_mode mode, bool local, const char *const *methods, size_t n_methods,
                char **err_at_peer, struct fake_filesend_stats *st_out)
{
  struct fake_config cfg = cfg_for (f, mode, local);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-fs", methods ? methods : with_filesend,
                      methods ? n_methods : ARRAY_SIZE (with_filesend));
  ps_error *err = NULL;
  int r = local ? session_filesend_dir (pp.session, f->src, NULL, NULL, &err)
                : session_filesend_file (pp.session, f->src, NULL, NULL, &err);
  ck_assert_int_eq (r, -1);
  ck_assert_ptr_nonnull (err);
  if (err_at_peer)
    for (int i = 0; i < 100 && (*err_at_peer = fake_peer_err_received (pp.peer)) == NULL; i++)
      usleep (10000);
  if (st_out)
    fake_peer_filesend_stats (pp.peer, st_out);
  pair_stop (&pp);
  return err;
}

START_TEST (declined_target_is_a_clear_error)
{
  struct fixture f;
  fixture_init (&f);
  /* Small (declined before anything is sent) and large (declined while
     the first messages are in flight): the same answer. */
  size_t sizes[] = { 10, 10 * MIB };
  for (size_t i = 0; i < ARRAY_SIZE (sizes); i++)
    {
      write_pattern (f.src, sizes[i]);
      ps_error *err = failing_export (&f, FAKE_FS_DECLINE, false, NULL, 0, NULL, NULL);
      ck_assert_str_eq (err->msg, "send the output to session sess-fs: the client declined the output: "
                                  "FileSend/DiffCopy: grpc status 6 (ALREADY_EXISTS): target already exists");
      ck_assert_int_eq (err->status, 409);
      ps_error_free (err);
    }
  fixture_free (&f);
}
END_TEST

START_TEST (an_output_needs_the_client_to_expose_filesend)
{
  struct fixture f;
  fixture_init (&f);
  write_pattern (f.src, 10);
  struct fake_filesend_stats st;
  ps_error *err = failing_export (&f, FAKE_NORMAL, false, without_filesend, ARRAY_SIZE (without_filesend), NULL, &st);
  ck_assert_str_eq (err->msg, "send the output to session sess-fs: the client did not ask for an output over the "
                              "session (FileSend/DiffCopy is not listed in X-Docker-Expose-Session-Grpc-Method)");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  ck_assert_uint_eq (st.calls, 0);
  free (st.paths);
  free (st.problem);

  unlink (f.src);
  ck_assert (mkdir (f.src, 0755) == 0);
  err = failing_export (&f, FAKE_NORMAL, true, without_filesend, ARRAY_SIZE (without_filesend), NULL, &st);
  ck_assert_ptr_nonnull (strstr (err->msg, "the client did not ask for an output over the session"));
  ps_error_free (err);
  ck_assert_uint_eq (st.calls, 0);
  free (st.paths);
  free (st.problem);
  fixture_free (&f);
}
END_TEST

START_TEST (unreadable_sources_fail_before_any_call)
{
  struct fixture f;
  fixture_init (&f);
  struct fake_filesend_stats st;
  ps_error *err = failing_export (&f, FAKE_NORMAL, false, NULL, 0, NULL, &st);
  ck_assert_ptr_nonnull (strstr (err->msg, "send the output to session sess-fs: open "));
  ck_assert_ptr_nonnull (strstr (err->msg, "No such file or directory"));
  ps_error_free (err);
  free (st.paths);
  free (st.problem);
  err = failing_export (&f, FAKE_NORMAL, true, NULL, 0, NULL, &st);
  ck_assert_ptr_nonnull (strstr (err->msg, "No such file or directory"));
  ps_error_free (err);
  ck_assert_uint_eq (st.calls, 0);
  free (st.paths);
  free (st.problem);
  /* A directory is not a tar. */
  ck_assert (mkdir (f.src, 0755) == 0);
  err = failing_export (&f, FAKE_NORMAL, false, NULL, 0, NULL, &st);
  ck_assert_ptr_nonnull (strstr (err->msg, "is not a regular file"));
  ps_error_free (err);
  free (st.paths);
  free (st.problem);
  fixture_free (&f);
}
END_TEST

START_TEST (client_gone_mid_tar_fails_the_export)
{
  struct fixture f;
  fixture_init (&f);
  write_pattern (f.src, 12 * MIB);
  ps_error *err = failing_export (&f, FAKE_FS_HANGUP, false, NULL, 0, NULL, NULL);
  ck_assert_msg (strstr (err->msg, "send the output to session sess-fs: ") == err->msg, "%s", err->msg);
  ck_assert_msg (strstr (err->msg, "closed") != NULL, "%s", err->msg);
  ps_error_free (err);
  fixture_free (&f);
}
END_TEST

/* ---- type=local: a tree ------------------------------------------------------------------- */

static void
set_mtime (const char *dir, const char *rel, int64_t ns)
{
  char *p = xasprintf ("%s/%s", dir, rel);
  struct timespec ts[2] = { { ns / 1000000000LL, ns % 1000000000LL }, { ns / 1000000000LL, ns % 1000000000LL } };
  ck_assert (utimensat (AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW) == 0);
  free (p);
}

static void
make_dir (const char *dir, const char *rel, mode_t mode)
{
  char *p = xasprintf ("%s/%s", dir, rel);
  ck_assert (mkdir (p, mode) == 0);
  chmod (p, mode);
  free (p);
}

static bool xattrs_supported;

/* A root file system in miniature: nested directories, a name that sorts
   between a directory and its children by full path ("a-b"), upper case
   before lower case, a symlink, an empty file, a 100 KB file (4 DATA
   chunks), setuid and executable modes, a fifo, a hard link, a socket. */
static void
make_tree (const char *src)
{
  ck_assert (mkdir (src, 0755) == 0);
  test_write (src, "Zeta", "upper case sorts first\n", 0644, T0);
  make_dir (src, "a", 0750);
  make_dir (src, "a/b", 0755);
  test_write (src, "a/b/c.txt", "deep\n", 0640, T0 + 1);
  test_write (src, "a-b", "dash\n", 0644, T0 + 2);
  char *p = xasprintf ("%s/big.bin", src);
  write_pattern (p, 100 * 1000);
  free (p);
  set_mtime (src, "big.bin", T0 + 3);
  test_write (src, "empty", "", 0600, T0 + 4);
  p = xasprintf ("%s/link", src);
  ck_assert (symlink ("a/b/c.txt", p) == 0);
  free (p);
  set_mtime (src, "link", T0 + 5);
  p = xasprintf ("%s/pipe", src);
  ck_assert (mkfifo (p, 0620) == 0);
  chmod (p, 0620);
  free (p);
  set_mtime (src, "pipe", T0 + 6);
  test_write (src, "run.sh", "#!/bin/sh\necho hi\n", 0755, T0 + 7);
  test_write (src, "suid", "setuid\n", 04755, T0 + 8);
  char *a = xasprintf ("%s/run.sh", src), *b = xasprintf ("%s/zz-hard", src);
  ck_assert (link (a, b) == 0);
  free (a);
  free (b);
  /* A socket: not content, left out. */
  int sfd = socket (AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s/sock", src);
  ck_assert (bind (sfd, (struct sockaddr *) &sa, sizeof sa) == 0);
  close (sfd);
  p = xasprintf ("%s/a-b", src);
  xattrs_supported = setxattr (p, "user.origin", "podsolve", 8, 0) == 0;
  free (p);
  set_mtime (src, "a-b", T0 + 2);
  /* Directory times last: creating entries changed them. */
  set_mtime (src, "a/b", T0 + 10);
  set_mtime (src, "a", T0 + 11);
}

static void
assert_same_entry (struct fixture *f, const char *rel)
{
  char *a = xasprintf ("%s/%s", f->src, rel);
  char *b = xasprintf ("%s/%s", f->out, rel);
  struct stat sa, sb;
  ck_assert_msg (lstat (a, &sa) == 0, "%s", a);
  ck_assert_msg (lstat (b, &sb) == 0, "%s missing", b);
  ck_assert_msg (sa.st_mode == sb.st_mode, "%s: mode %o, sent as %o", rel, sa.st_mode, sb.st_mode);
  ck_assert_msg (sa.st_mtim.tv_sec == sb.st_mtim.tv_sec && sa.st_mtim.tv_nsec == sb.st_mtim.tv_nsec, "%s: mtime",
                 rel);
  if (S_ISREG (sa.st_mode))
    ck_assert_msg (same_contents (a, b), "%s: contents differ", rel);
  if (S_ISLNK (sa.st_mode))
    {
      char ta[256] = "", tb[256] = "";
      ck_assert (readlink (a, ta, sizeof ta - 1) > 0 && readlink (b, tb, sizeof tb - 1) > 0);
      ck_assert_str_eq (ta, tb);
    }
  free (a);
  free (b);
}

START_TEST (local_output_arrives_in_fsutil_order_with_metadata)
{
  struct fixture f;
  fixture_init (&f);
  make_tree (f.src);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL, true);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-fs", with_filesend, ARRAY_SIZE (with_filesend));
  struct progress_log log = { 0 };
  ps_error *err = NULL;
  int r = session_filesend_dir (pp.session, f.src, on_progress, &log, &err);
  ck_assert_msg (r == 0, "%s", err ? err->msg : "");
  struct fake_filesend_stats st;
  fake_peer_filesend_stats (pp.peer, &st);
  pair_stop (&pp);

  /* §3.5 sender step 1: depth first, names by byte value, a directory
     before its children, no socket. */
  ck_assert_str_eq (st.paths, "Zeta|a|a/b|a/b/c.txt|a-b|big.bin|empty|link|pipe|run.sh|suid|zz-hard");
  ck_assert_ptr_null (st.problem);
  ck_assert_uint_eq (st.stats, 12);
  /* Every regular file but the hard link was requested and sent once. */
  ck_assert_uint_eq (st.reqs, 7);
  ck_assert_uint_eq (st.bytes, 23 + 5 + 5 + 100 * 1000 + 0 + 18 + 7);
  ck_assert (st.fin_received && st.half_closed && st.ok);

  const char *entries[] = { "Zeta", "a", "a/b", "a/b/c.txt", "a-b", "big.bin", "empty",
                            "link", "pipe", "run.sh",  "suid",      "zz-hard" };
  for (size_t i = 0; i < ARRAY_SIZE (entries); i++)
    assert_same_entry (&f, entries[i]);
  ck_assert (!test_exists (f.out, "sock"));
  /* The hard link arrived as a link to run.sh, not as a copy. */
  char *a = xasprintf ("%s/run.sh", f.out), *b = xasprintf ("%s/zz-hard", f.out);
  struct stat sa, sb;
  ck_assert (stat (a, &sa) == 0 && stat (b, &sb) == 0);
  ck_assert_int_eq (sa.st_ino, sb.st_ino);
  free (a);
  free (b);
  if (xattrs_supported)
    {
      char *p = xasprintf ("%s/a-b", f.out);
      char v[32] = "";
      ck_assert_int_eq (getxattr (p, "user.origin", v, sizeof v - 1), 8);
      ck_assert_str_eq (v, "podsolve");
      free (p);
    }
  /* Progress counts packet bytes: more than the file bytes, grows. */
  ck_assert (log.calls > 12 + 7);
  ck_assert (log.last > st.bytes);
  free (st.paths);
  free (st.problem);
  fixture_free (&f);
}
END_TEST

START_TEST (local_output_of_an_empty_directory)
{
  struct fixture f;
  fixture_init (&f);
  ck_assert (mkdir (f.src, 0755) == 0);
  struct fake_config cfg = cfg_for (&f, FAKE_NORMAL, true);
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-fs", with_filesend, ARRAY_SIZE (with_filesend));
  ps_error *err = NULL;
  ck_assert_msg (session_filesend_dir (pp.session, f.src, NULL, NULL, &err) == 0, "%s", err ? err->msg : "");
  struct fake_filesend_stats st;
  fake_peer_filesend_stats (pp.peer, &st);
  pair_stop (&pp);
  ck_assert_str_eq (st.paths, "");
  ck_assert_uint_eq (st.reqs, 0);
  ck_assert (st.fin_received && st.ok);
  free (st.paths);
  free (st.problem);
  fixture_free (&f);
}
END_TEST

/* d/ (id 0), d/f (id 1), g (id 2): ids the misbehaving receivers misuse. */
static void
make_small_tree (const char *src)
{
  ck_assert (mkdir (src, 0755) == 0);
  make_dir (src, "d", 0755);
  test_write (src, "d/f", "f\n", 0644, T0);
  char *p = xasprintf ("%s/g", src);
  write_pattern (p, 2 * MIB); /* many DATA packets: room to hang up mid-file */
  free (p);
}

START_TEST (receiver_requests_outside_the_listing_are_refused)
{
  struct fixture f;
  fixture_init (&f);
  make_small_tree (f.src);
  struct
  {
    enum fake_mode mode;
    const char *want;
  } cases[] = {
    { FAKE_FS_REQ_DIR, "invalid file id 0 (not a regular file)" },
    { FAKE_FS_REQ_TWICE, "invalid file id 1 (requested twice)" },
    { FAKE_FS_REQ_PAST, "invalid file id 8 (past the listing)" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      test_rm_rf (f.out);
      char *peer_err = NULL;
      ps_error *err = failing_export (&f, cases[i].mode, true, NULL, 0, &peer_err, NULL);
      cleanup_free char *want = xasprintf ("send the output to session sess-fs: %s", cases[i].want);
      ck_assert_str_eq (err->msg, want);
      ck_assert_int_eq (err->status, 400);
      /* The receiver is told why, as an ERR packet. */
      ck_assert_ptr_nonnull (peer_err);
      ck_assert_str_eq (peer_err, cases[i].want);
      free (peer_err);
      ps_error_free (err);
    }
  fixture_free (&f);
}
END_TEST

START_TEST (err_from_the_receiver_fails_the_export)
{
  struct fixture f;
  fixture_init (&f);
  make_small_tree (f.src);
  char *peer_err = NULL;
  ps_error *err = failing_export (&f, FAKE_FS_ERR, true, NULL, 0, &peer_err, NULL);
  ck_assert_str_eq (err->msg, "send the output to session sess-fs: error from receiver: no space left on device");
  ps_error_free (err);
  /* Its own ERR is not echoed back. */
  ck_assert_ptr_null (peer_err);
  fixture_free (&f);
}
END_TEST

START_TEST (client_gone_mid_tree_fails_the_export)
{
  struct fixture f;
  fixture_init (&f);
  make_small_tree (f.src);
  ps_error *err = failing_export (&f, FAKE_FS_HANGUP, true, NULL, 0, NULL, NULL);
  ck_assert_msg (strstr (err->msg, "send the output to session sess-fs: ") == err->msg, "%s", err->msg);
  ck_assert_msg (strstr (err->msg, "closed") != NULL, "%s", err->msg);
  ps_error_free (err);
  fixture_free (&f);
}
END_TEST

START_TEST (go_file_modes)
{
  /* Go's os.FileMode for each POSIX type (§3.4), as fsutil sends it. */
  ck_assert_uint_eq (filesend_go_mode (S_IFREG | 0644), 0644);
  ck_assert_uint_eq (filesend_go_mode (S_IFDIR | 0755), 0x80000000u | 0755);
  ck_assert_uint_eq (filesend_go_mode (S_IFLNK | 0777), 0x08000000u | 0777);
  ck_assert_uint_eq (filesend_go_mode (S_IFBLK | 0660), 0x04000000u | 0660);
  ck_assert_uint_eq (filesend_go_mode (S_IFCHR | 0666), 0x04200000u | 0666);
  ck_assert_uint_eq (filesend_go_mode (S_IFIFO | 0620), 0x02000000u | 0620);
  ck_assert_uint_eq (filesend_go_mode (S_IFSOCK | 0755), 0x01000000u | 0755);
  ck_assert_uint_eq (filesend_go_mode (S_IFREG | 04755), 0x00800000u | 0755);
  ck_assert_uint_eq (filesend_go_mode (S_IFREG | 02755), 0x00400000u | 0755);
  ck_assert_uint_eq (filesend_go_mode (S_IFDIR | 01777), 0x80000000u | 0x00100000u | 0777);
}
END_TEST

PS_TEST_SUITE (session_filesend)
{
  Suite *s = suite_create ("session_filesend");
  TCase *tc = tcase_create ("filesend");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, tar_output_arrives_intact_in_3_mib_messages);
  tcase_add_test (tc, empty_tar_output_still_creates_the_file);
  tcase_add_test (tc, declined_target_is_a_clear_error);
  tcase_add_test (tc, an_output_needs_the_client_to_expose_filesend);
  tcase_add_test (tc, unreadable_sources_fail_before_any_call);
  tcase_add_test (tc, client_gone_mid_tar_fails_the_export);
  tcase_add_test (tc, local_output_arrives_in_fsutil_order_with_metadata);
  tcase_add_test (tc, local_output_of_an_empty_directory);
  tcase_add_test (tc, receiver_requests_outside_the_listing_are_refused);
  tcase_add_test (tc, err_from_the_receiver_fails_the_export);
  tcase_add_test (tc, client_gone_mid_tree_fails_the_export);
  tcase_add_test (tc, go_file_modes);
  suite_add_tcase (s, tc);
  return s;
}
