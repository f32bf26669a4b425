/* test_llb_merge.c — the tree work behind LLB MergeOp and DiffOp
 * (solver/llb/merge.c) on plain directories, no buildah: what a diff
 * keeps and records as deleted, how a layer applies over another, that
 * whiteouts delete without following symlinks, that Merge(A, Diff(A, B))
 * is B again, and the whiteout record on disk. */
#define _GNU_SOURCE
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "solver/llb/merge.h"
#include "solver/rootfs_export.h"
#include "common/archive.h"

#include <openssl/sha.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

static char *g_root;   /* per test case, made and removed by Check's parent process */
static char *g_base;   /* per test */
static char *g_victim; /* outside every tree: symlinks aim here, nothing may change it */

static void
setup_root (void)
{
  g_root = test_mkdtemp ();
}

static void
teardown_root (void)
{
  test_rm_tree (&g_root);
}

static void
setup (void)
{
  g_base = xasprintf ("%s/t-XXXXXX", g_root);
  ck_assert_ptr_nonnull (mkdtemp (g_base));
  g_victim = xasprintf ("%s/victim", g_base);
  ck_assert_int_eq (mkdir (g_victim, 0755), 0);
}

static void
teardown (void)
{
  free (g_base);
  free (g_victim);
}

/* ---- helpers ------------------------------------------------------------------ */

#define T0 1600000000

static char *
dir_in_base (const char *name)
{
  char *p = xasprintf ("%s/%s", g_base, name);
  ck_assert_int_eq (mkdir (p, 0755), 0);
  return p;
}

static void
put (const char *root, const char *rel, const char *data, mode_t mode)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  ps_error *err = NULL;
  ck_assert_msg (ps_write_file (p, data, strlen (data), mode, &err) == 0, "%s", err ? err->msg : "");
  ck_assert_int_eq (chmod (p, mode), 0);
}

static void
mk (const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  ck_assert_int_eq (mkdir (p, 0755), 0);
}

static void
ln_s (const char *target, const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  ck_assert_int_eq (symlink (target, p), 0);
}

static bool
exists (const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  struct stat st;
  return lstat (p, &st) == 0;
}

static char *
slurp (const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  char *data = NULL;
  ps_error *err = NULL;
  ck_assert_msg (ps_read_file (p, 1 << 20, &data, NULL, &err) == 0, "%s", err ? err->msg : "");
  return data;
}

static struct stat
lst (const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  struct stat st;
  ck_assert_msg (lstat (p, &st) == 0, "lstat %s", p);
  return st;
}

/* Every entry below (and including) `rel` gets mtime T0, children first. */
static void
stamp (const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s%s%s", root, *rel ? "/" : "", rel);
  struct stat st;
  ck_assert_int_eq (lstat (p, &st), 0);
  if (S_ISDIR (st.st_mode))
    {
      struct dirent **names = NULL;
      int n = scandir (p, &names, NULL, alphasort);
      ck_assert_int_ge (n, 0);
      for (int i = 0; i < n; i++)
        {
          if (strcmp (names[i]->d_name, ".") && strcmp (names[i]->d_name, ".."))
            {
              cleanup_free char *child = *rel ? xasprintf ("%s/%s", rel, names[i]->d_name) : xstrdup (names[i]->d_name);
              stamp (root, child);
            }
          free (names[i]);
        }
      free (names);
    }
  struct timespec t[2] = { { T0, 0 }, { T0, 0 } };
  ck_assert_int_eq (utimensat (AT_FDCWD, p, t, AT_SYMLINK_NOFOLLOW), 0);
}

static void
set_mtime (const char *root, const char *rel, long nsec)
{
  cleanup_free char *p = xasprintf ("%s/%s", root, rel);
  struct timespec t[2] = { { T0, nsec }, { T0, nsec } };
  ck_assert_int_eq (utimensat (AT_FDCWD, p, t, AT_SYMLINK_NOFOLLOW), 0);
}

/* One line per entry in name order: path, type+mode, owner, mtime, and
   the content or link target — what a merged tree must reproduce. */
static void
listing_into (ps_buf *b, const char *root, const char *rel)
{
  cleanup_free char *p = xasprintf ("%s%s%s", root, *rel ? "/" : "", rel);
  struct stat st;
  ck_assert_int_eq (lstat (p, &st), 0);
  ps_buf_printf (b, "/%s %o %u:%u %lld.%09ld", rel, (unsigned) st.st_mode, (unsigned) st.st_uid,
                 (unsigned) st.st_gid, (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  if (S_ISLNK (st.st_mode))
    {
      char t[4096];
      ssize_t l = readlink (p, t, sizeof t - 1);
      ck_assert_int_ge (l, 0);
      t[l] = '\0';
      ps_buf_printf (b, " -> %s\n", t);
    }
  else if (S_ISREG (st.st_mode))
    {
      cleanup_free char *data = slurp (root, rel);
      ps_buf_printf (b, " = %s\n", data);
    }
  else
    ps_buf_puts (b, "\n");
  if (!S_ISDIR (st.st_mode))
    return;
  struct dirent **names = NULL;
  int n = scandir (p, &names, NULL, alphasort);
  ck_assert_int_ge (n, 0);
  for (int i = 0; i < n; i++)
    {
      if (strcmp (names[i]->d_name, ".") && strcmp (names[i]->d_name, ".."))
        {
          cleanup_free char *child = *rel ? xasprintf ("%s/%s", rel, names[i]->d_name) : xstrdup (names[i]->d_name);
          listing_into (b, root, child);
        }
      free (names[i]);
    }
  free (names);
}

static char *
listing (const char *root)
{
  ps_buf b = { 0 };
  listing_into (&b, root, "");
  return ps_buf_steal (&b);
}

static char *
joined (const ps_strv *w)
{
  ps_buf b = { 0 };
  ps_buf_puts (&b, "");
  for (size_t i = 0; i < w->n; i++)
    ps_buf_printf (&b, "%s%s", i ? "," : "", w->v[i]);
  return ps_buf_steal (&b);
}

static void
ok (int r, ps_error *err)
{
  ck_assert_msg (r == 0, "%s", err ? err->msg : "failed");
}

/* ---- diff ---------------------------------------------------------------------- */

/* lower -> upper: one file rewritten with the same size and (whole
   second) mtime, one chmod, one touched, one deleted file, one deleted
   directory, a new file in an otherwise unchanged directory, a file turned
   into a directory, a link retargeted, new hard links; the rest unchanged,
   one of them with a time that lost its nanoseconds. */
static void
make_pair (const char *lower, const char *upper)
{
  const char *both[] = { lower, upper };
  for (int i = 0; i < 2; i++)
    {
      const char *r = both[i];
      put (r, "same", "same\n", 0644);
      put (r, "mod", i ? "bbbb" : "aaaa", 0644);
      put (r, "chmod", "x", i ? 0600 : 0644);
      mk (r, "dir");
      put (r, "dir/keep", "keep", 0644);
      mk (r, "quiet");
      put (r, "quiet/x", "x", 0644);
      ln_s (i ? "b" : "a", r, "link");
      ln_s ("same", r, "samelink");
      put (r, "touched", "t", 0644);
      put (r, "trunc", "t", 0644);
    }
  put (lower, "gone", "gone", 0644);
  mk (lower, "olddir");
  put (lower, "olddir/x", "x", 0644);
  put (lower, "f2d", "file", 0644);
  mk (upper, "f2d");
  put (upper, "f2d/inner", "inner", 0644);
  put (upper, "dir/new", "new", 0640);
  put (upper, "h1", "linked", 0644);
  cleanup_free char *h1 = xasprintf ("%s/h1", upper), *h2 = xasprintf ("%s/h2", upper);
  ck_assert_int_eq (link (h1, h2), 0);
  stamp (lower, "");
  stamp (upper, "");
  set_mtime (lower, "touched", 100);
  set_mtime (upper, "touched", 200);
  set_mtime (lower, "trunc", 500000000); /* upper's went through a tar: 0 ns */
}

START_TEST (test_diff_keeps_changes_and_records_deletions)
{
  cleanup_free char *lower = dir_in_base ("lower"), *upper = dir_in_base ("upper"), *out = dir_in_base ("out");
  make_pair (lower, upper);
  ps_strv w = { 0 };
  ps_error *err = NULL;
  ok (llb_tree_diff (lower, upper, out, &w, "test", &err), err);

  cleanup_free char *mod = slurp (out, "mod");
  ck_assert_str_eq (mod, "bbbb"); /* same size and mtime: found by content */
  ck_assert_int_eq (lst (out, "chmod").st_mode & 07777, 0600);
  cleanup_free char *newf = slurp (out, "dir/new");
  ck_assert_str_eq (newf, "new");
  ck_assert_int_eq (lst (out, "dir/new").st_mode & 07777, 0640);
  ck_assert (!exists (out, "dir/keep"));          /* unchanged, beside a change */
  ck_assert_int_eq (lst (out, "dir").st_mtim.tv_sec, T0); /* upper's metadata */
  cleanup_free char *inner = slurp (out, "f2d/inner");
  ck_assert_str_eq (inner, "inner");
  char t[16] = { 0 };
  cleanup_free char *lp = xasprintf ("%s/link", out);
  ck_assert_int_eq (readlink (lp, t, sizeof t - 1), 1);
  ck_assert_str_eq (t, "b");
  ck_assert_int_eq (lst (out, "h1").st_ino, lst (out, "h2").st_ino); /* still one file */
  ck_assert_int_eq (lst (out, "touched").st_mtim.tv_nsec, 200);
  for (const char *absent[] = { "same", "samelink", "quiet", "gone", "olddir", "trunc" }, **a = absent;
       a < absent + ARRAY_SIZE (absent); a++)
    ck_assert_msg (!exists (out, *a), "%s should not be in the diff", *a);

  ps_strv sorted = { 0 };
  ok (llb_whiteouts_absent (out, &w, &sorted, &err), err);
  cleanup_free char *ws = joined (&sorted);
  ck_assert_str_eq (ws, "gone,olddir"); /* a deleted directory is one whiteout */
  ck_assert_uint_eq (w.n, 2);
  ps_strv_free (&w);
  ps_strv_free (&sorted);
}
END_TEST

START_TEST (test_diff_against_nothing)
{
  cleanup_free char *lower = dir_in_base ("lower"), *upper = dir_in_base ("upper"), *out = dir_in_base ("out");
  make_pair (lower, upper);
  ps_strv w = { 0 };
  ps_error *err = NULL;
  /* upper empty: everything of lower's top level is deleted */
  ok (llb_tree_diff (lower, NULL, out, &w, "test", &err), err);
  ps_strv sorted = { 0 };
  ok (llb_whiteouts_absent (out, &w, &sorted, &err), err);
  cleanup_free char *ws = joined (&sorted);
  ck_assert_str_eq (ws, "chmod,dir,f2d,gone,link,mod,olddir,quiet,same,samelink,touched,trunc");
  ps_strv_free (&w);
  ps_strv_free (&sorted);
  /* lower empty: all of upper, nothing deleted */
  cleanup_free char *out2 = dir_in_base ("out2");
  ok (llb_tree_diff (NULL, upper, out2, &w, "test", &err), err);
  ck_assert_uint_eq (w.n, 0);
  cleanup_free char *a = listing (upper), *b = listing (out2);
  ck_assert_str_eq (a, b);
}
END_TEST

/* ---- merge ----------------------------------------------------------------------- */

START_TEST (test_apply_merges_directories_and_replaces_the_rest)
{
  cleanup_free char *dst = dir_in_base ("dst"), *src = dir_in_base ("src");
  mk (dst, "d");
  put (dst, "d/a", "a", 0644);
  put (dst, "d/b", "old", 0644);
  put (dst, "f", "file", 0644);
  mk (dst, "g");
  put (dst, "g/x", "x", 0644);
  ln_s (g_victim, dst, "esc");
  ln_s ("../../../../../../../..", dst, "up");

  mk (src, "d");
  cleanup_free char *sd = xasprintf ("%s/d", src);
  ck_assert_int_eq (chmod (sd, 0700), 0);
  put (src, "d/b", "new", 0600);
  put (src, "d/c", "c", 0644);
  mk (src, "f");
  put (src, "f/inner", "inner", 0644);
  put (src, "g", "now a file", 0644);
  mk (src, "esc");
  put (src, "esc/pwn", "pwn", 0644);
  mk (src, "up");
  put (src, "up/pwn", "pwn", 0644);
  ln_s ("/etc/passwd", src, "abs");

  ps_error *err = NULL;
  ok (llb_tree_apply (dst, src, "test", &err), err);
  cleanup_free char *a = slurp (dst, "d/a"), *b = slurp (dst, "d/b"), *c = slurp (dst, "d/c");
  ck_assert_str_eq (a, "a"); /* directories merge */
  ck_assert_str_eq (b, "new");
  ck_assert_str_eq (c, "c");
  ck_assert_int_eq (lst (dst, "d").st_mode & 07777, 0700); /* the later directory's metadata */
  ck_assert_int_eq (lst (dst, "d/b").st_mode & 07777, 0600);
  ck_assert (S_ISDIR (lst (dst, "f").st_mode) && exists (dst, "f/inner"));
  ck_assert (S_ISREG (lst (dst, "g").st_mode));
  /* a symlink in the lower tree is replaced, never written through */
  ck_assert (S_ISDIR (lst (dst, "esc").st_mode) && exists (dst, "esc/pwn"));
  ck_assert (S_ISDIR (lst (dst, "up").st_mode) && exists (dst, "up/pwn"));
  ck_assert (!exists (g_victim, "pwn"));
  ck_assert (S_ISLNK (lst (dst, "abs").st_mode)); /* copied as a link, not followed */
}
END_TEST

START_TEST (test_delete_never_follows_symlinks)
{
  cleanup_free char *dst = dir_in_base ("dst");
  put (g_victim, "x", "keep me", 0644);
  ln_s (g_victim, dst, "l");
  mk (dst, "d");
  put (dst, "d/y", "y", 0644);
  put (dst, "d/z", "z", 0644);
  put (dst, "f", "f", 0644);
  mk (dst, "tree");
  mk (dst, "tree/sub");
  put (dst, "tree/sub/deep", "deep", 0644);

  ps_strv w = { 0 };
  const char *paths[] = { "l/x", "d/y", "missing/z", "f", "f/under-a-file", "tree", "l" };
  for (size_t i = 0; i < ARRAY_SIZE (paths); i++)
    ps_strv_push (&w, paths[i]);
  ps_error *err = NULL;
  ok (llb_tree_delete (dst, &w, &err), err);
  ck_assert (exists (g_victim, "x"));
  ck_assert (!exists (dst, "l")); /* the link itself goes */
  ck_assert (!exists (dst, "d/y") && exists (dst, "d/z"));
  ck_assert (!exists (dst, "f") && !exists (dst, "tree"));
  ps_strv_free (&w);
}
END_TEST

START_TEST (test_whiteouts_absent_sorts_dedupes_and_keeps_paths_behind_links)
{
  cleanup_free char *root = dir_in_base ("root");
  put (g_victim, "x", "x", 0644);
  ln_s (g_victim, root, "l");
  mk (root, "d");
  put (root, "f", "f", 0644);
  ps_strv w = { 0 }, out = { 0 };
  const char *paths[] = { "f/x", "d", "l/x", "d/y", "d/y", "l" };
  for (size_t i = 0; i < ARRAY_SIZE (paths); i++)
    ps_strv_push (&w, paths[i]);
  ps_error *err = NULL;
  ok (llb_whiteouts_absent (root, &w, &out, &err), err);
  cleanup_free char *s = joined (&out);
  ck_assert_str_eq (s, "d/y,f/x,l/x");
  ps_strv_free (&w);
  ps_strv_free (&out);
}
END_TEST

/* BuildKit's defining property: Merge(A, Diff(A, B)) == B. */
START_TEST (test_merge_of_lower_and_diff_is_upper)
{
  cleanup_free char *lower = dir_in_base ("lower"), *upper = dir_in_base ("upper"), *out = dir_in_base ("out");
  cleanup_free char *merged = dir_in_base ("merged");
  make_pair (lower, upper);
  set_mtime (lower, "trunc", 0); /* equal only up to truncation would stay lower's */
  ps_strv w = { 0 };
  ps_error *err = NULL;
  ok (llb_tree_diff (lower, upper, out, &w, "test", &err), err);
  ok (llb_tree_apply (merged, lower, "test", &err), err);
  ok (llb_tree_delete (merged, &w, &err), err);
  ok (llb_tree_apply (merged, out, "test", &err), err);
  cleanup_free char *want = listing (upper), *got = listing (merged);
  ck_assert_str_eq (got, want);
  ck_assert_int_eq (lst (merged, "h1").st_ino, lst (merged, "h2").st_ino);

  /* and diffing the result against upper finds nothing */
  cleanup_free char *out2 = dir_in_base ("out2");
  ps_strv w2 = { 0 };
  ok (llb_tree_diff (merged, upper, out2, &w2, "test", &err), err);
  ck_assert_uint_eq (w2.n, 0);
  DIR *d = opendir (out2);
  int entries = 0;
  for (struct dirent *de; (de = readdir (d)) != NULL;)
    entries += strcmp (de->d_name, ".") && strcmp (de->d_name, "..");
  closedir (d);
  ck_assert_int_eq (entries, 0);
  ps_strv_free (&w);
  ps_strv_free (&w2);
}
END_TEST

/* ---- the record ----------------------------------------------------------------------- */

#define ID "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

START_TEST (test_whiteout_record_round_trip)
{
  ps_strv w = { 0 }, back = { 0 };
  ps_strv_push (&w, "etc/motd");
  ps_strv_push (&w, "odd name/with\nnewline");
  ps_error *err = NULL;
  ok (llb_whiteouts_write (g_base, ID, &w, &err), err);
  ok (llb_whiteouts_read (g_base, ID, &back, &err), err);
  cleanup_free char *a = joined (&w), *b = joined (&back);
  ck_assert_str_eq (a, b);
  ps_strv_free (&back);

  /* an empty set removes the record; no record reads as none */
  ps_strv none = { 0 };
  ok (llb_whiteouts_write (g_base, ID, &none, &err), err);
  cleanup_free char *path = xasprintf ("%s/llb-whiteouts/%s", g_base, ID);
  ck_assert (access (path, F_OK) < 0);
  ok (llb_whiteouts_read (g_base, ID, &back, &err), err);
  ck_assert_uint_eq (back.n, 0);
  ps_strv_free (&w);
}
END_TEST

START_TEST (test_whiteout_record_rejects_bad_input)
{
  ps_error *err = NULL;
  ps_strv w = { 0 }, back = { 0 };
  const char *bad[] = { "/abs", "a/../b", "..", "a//b", "a/", "./a", "" };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      ps_strv_push (&w, bad[i]);
      ck_assert_msg (llb_whiteouts_write (g_base, ID, &w, &err) < 0, "accepted \"%s\"", bad[i]);
      ps_error_free (err);
      err = NULL;
      ps_strv_free (&w);
    }
  ps_strv_push (&w, "ok");
  ck_assert_int_lt (llb_whiteouts_write (g_base, "../../etc/x", &w, &err), 0);
  ps_error_free (err);
  err = NULL;
  ps_strv_free (&w);

  /* a record that is not ours, or names a path outside, is an error */
  cleanup_free char *dir = xasprintf ("%s/llb-whiteouts", g_base);
  cleanup_free char *path = xasprintf ("%s/%s", dir, ID);
  ck_assert_int_eq (mkdir (dir, 0700), 0);
  const char escape[] = "podsolve-llb-whiteouts-v1\nok\0../../x";
  const char *bodies[] = { "something else", escape };
  size_t lens[] = { 14, sizeof escape };
  for (size_t i = 0; i < ARRAY_SIZE (bodies); i++)
    {
      ok (ps_write_file (path, bodies[i], lens[i], 0600, &err), err);
      ck_assert_int_lt (llb_whiteouts_read (g_base, ID, &back, &err), 0);
      ck_assert_int_eq (err->status, 500);
      ps_error_free (err);
      err = NULL;
      ps_strv_free (&back);
    }
}
END_TEST

/* An overlay upper directory as the kernel writes one: a whiteout (a 0/0
   character device) for "x", "d" made anew over a deleted directory
   (opaque), "e" changed in place. */
static void
make_upper (const char *src)
{
  cleanup_free char *wh = xasprintf ("%s/x", src);
  ck_assert_int_eq (mknod (wh, S_IFCHR | 0000, makedev (0, 0)), 0);
  mk (src, "d");
  put (src, "d/new", "new", 0644);
  cleanup_free char *d = xasprintf ("%s/d", src);
  ck_assert_int_eq (lsetxattr (d, "trusted.overlay.opaque", "y", 1, 0), 0);
  mk (src, "e");
  put (src, "e/more", "more", 0644);
  put (src, "cap", "bin", 0755);
  cleanup_free char *cap = xasprintf ("%s/cap", src);
  ck_assert_int_eq (lsetxattr (cap, "user.kept", "v", 1, 0), 0);
}

START_TEST (test_apply_upper_deletes_whiteouts_and_replaces_opaque_directories)
{
  cleanup_free char *dst = dir_in_base ("dst"), *src = dir_in_base ("src");
  put (dst, "x", "doomed", 0644);
  mk (dst, "d");
  put (dst, "d/old", "old", 0644);
  mk (dst, "e");
  put (dst, "e/kept", "kept", 0644);
  make_upper (src);

  ps_error *err = NULL;
  ok (llb_tree_apply_upper (dst, src, "test", &err), err);
  ck_assert (!exists (dst, "x"));
  ck_assert (!exists (dst, "d/old")); /* an opaque directory hides what was below */
  cleanup_free char *n = slurp (dst, "d/new"), *k = slurp (dst, "e/kept"), *m = slurp (dst, "e/more");
  ck_assert_str_eq (n, "new");
  ck_assert_str_eq (k, "kept"); /* a directory that is not opaque merges */
  ck_assert_str_eq (m, "more");
  cleanup_free char *dd = xasprintf ("%s/d", dst), *cap = xasprintf ("%s/cap", dst);
  char v[8];
  ck_assert_int_lt (lgetxattr (dd, "trusted.overlay.opaque", v, sizeof v), 0); /* overlay's own: not copied */
  ck_assert_int_eq (lgetxattr (cap, "user.kept", v, sizeof v), 1);

  /* the same upper over a tree without those entries: a whiteout of nothing is nothing */
  cleanup_free char *empty = dir_in_base ("empty");
  ok (llb_tree_apply_upper (empty, src, "test", &err), err);
  ck_assert (!exists (empty, "x") && exists (empty, "d/new"));
}
END_TEST

START_TEST (test_layer_tar_of_an_upper_has_oci_whiteouts)
{
  cleanup_free char *src = dir_in_base ("src"), *tar = xasprintf ("%s/layer.tar", g_base);
  make_upper (src);
  cleanup_free char *diff_id = NULL;
  uint64_t bytes = 0;
  ps_error *err = NULL;
  ok (rootfs_write_layer_tar (src, tar, &diff_id, &bytes, &err), err);

  /* the diff ID is the tar's own digest */
  cleanup_free char *data = NULL;
  size_t len = 0;
  ck_assert_int_eq (ps_read_file (tar, 1 << 24, &data, &len, NULL), 0);
  ck_assert_uint_eq (len, bytes);
  char hex[65];
  ps_sha256_hex (data, len, hex);
  cleanup_free char *want = xasprintf ("sha256:%s", hex);
  ck_assert_str_eq (diff_id, want);

  struct archive *a = archive_read_new ();
  archive_read_support_format_tar (a);
  ck_assert_int_eq (archive_read_open_filename (a, tar, 10240), ARCHIVE_OK);
  struct archive_entry *e;
  bool wh_x = false, opq = false, d_new = false, dev = false, overlay_xattr = false, user_xattr = false;
  while (archive_read_next_header (a, &e) == ARCHIVE_OK)
    {
      const char *p = archive_entry_pathname (e);
      wh_x |= strcmp (p, ".wh.x") == 0 && archive_entry_filetype (e) == AE_IFREG && archive_entry_size (e) == 0;
      opq |= strcmp (p, "d/.wh..wh..opq") == 0;
      d_new |= strcmp (p, "d/new") == 0;
      dev |= archive_entry_filetype (e) == AE_IFCHR;
      const char *name;
      const void *v;
      size_t n;
      archive_entry_xattr_reset (e);
      while (archive_entry_xattr_next (e, &name, &v, &n) == ARCHIVE_OK)
        {
          overlay_xattr |= strncmp (name, "trusted.overlay.", 16) == 0;
          user_xattr |= strcmp (p, "cap") == 0 && strcmp (name, "user.kept") == 0;
        }
    }
  archive_read_free (a);
  ck_assert (wh_x && opq && d_new && user_xattr);
  ck_assert (!dev && !overlay_xattr);

  /* the same tree, the same bytes: a layer's diff ID is reproducible */
  cleanup_free char *tar2 = xasprintf ("%s/layer2.tar", g_base), *diff_id2 = NULL;
  ok (rootfs_write_layer_tar (src, tar2, &diff_id2, &bytes, &err), err);
  ck_assert_str_eq (diff_id2, diff_id);
}
END_TEST

PS_TEST_SUITE (llb_merge)
{
  Suite *s = suite_create ("llb_merge");
  TCase *tc = tcase_create ("trees");
  tcase_add_unchecked_fixture (tc, setup_root, teardown_root);
  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_diff_keeps_changes_and_records_deletions);
  tcase_add_test (tc, test_diff_against_nothing);
  tcase_add_test (tc, test_apply_merges_directories_and_replaces_the_rest);
  tcase_add_test (tc, test_delete_never_follows_symlinks);
  tcase_add_test (tc, test_whiteouts_absent_sorts_dedupes_and_keeps_paths_behind_links);
  tcase_add_test (tc, test_merge_of_lower_and_diff_is_upper);
  tcase_add_test (tc, test_apply_upper_deletes_whiteouts_and_replaces_opaque_directories);
  tcase_add_test (tc, test_layer_tar_of_an_upper_has_oci_whiteouts);
  suite_add_tcase (s, tc);
  TCase *rec = tcase_create ("record");
  tcase_add_unchecked_fixture (rec, setup_root, teardown_root);
  tcase_add_checked_fixture (rec, setup, teardown);
  tcase_add_test (rec, test_whiteout_record_round_trip);
  tcase_add_test (rec, test_whiteout_record_rejects_bad_input);
  suite_add_tcase (s, rec);
  return s;
}
