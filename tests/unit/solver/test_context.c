/* test_context.c — build context intake.  Every test builds a real tar (with
 * libarchive's writer, or /usr/bin/tar for GNU tar's "./" names), feeds it
 * through a memfd exactly as a request body would arrive, and then looks at
 * the directory: which files exist, with what bytes and modes, and — for
 * the hostile archives — that nothing appeared outside the context. */
#define _GNU_SOURCE
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/limits.h"
#include "solver/context.h"
#include "common/dockerignore.h"

/* ---- fixture: /tmp/ps-ctx-XXXXXX/t-XXXXXX/{ctx,victim} -------------------- */

static char *g_root;   /* per test case, made and removed by the parent process */
static char *g_base;   /* per test: the parent of the context, must stay untouched */
static char *g_dest;   /* the context directory */
static char *g_victim; /* a directory outside the context for symlinks to aim at */

/* Unchecked fixtures run in Check's parent process, so the directory goes
   even when a failed assertion _exit()s the forked test before its own
   teardown. */
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
  g_dest = xasprintf ("%s/ctx", g_base);
  g_victim = xasprintf ("%s/victim", g_base);
  ck_assert_int_eq (mkdir (g_dest, 0755), 0);
  ck_assert_int_eq (mkdir (g_victim, 0755), 0);
}

static void
teardown (void)
{
  ps_error *err = NULL;
  if (ps_rm_rf (g_base, &err) < 0)
    ps_error_free (err);
  free (g_base);
  free (g_dest);
  free (g_victim);
  g_base = g_dest = g_victim = NULL;
}

/* ---- helpers ---------------------------------------------------------------- */

#define HARDLINK ((mode_t) 1) /* tar_ent.type for a hard link to .link */
#define TAR_PLAIN ARCHIVE_FILTER_NONE
#define TAR_GZIP ARCHIVE_FILTER_GZIP

struct tar_ent
{
  const char *name;
  mode_t type; /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFCHR, AE_IFBLK, AE_IFIFO, HARDLINK */
  mode_t perm;
  const char *data; /* regular files */
  const char *link; /* symlink or hard link target */
  time_t mtime;
};

static la_ssize_t
buf_write_cb (struct archive *a, void *ud, const void *data, size_t n)
{
  ps_buf_append (ud, data, n);
  return (la_ssize_t) n;
}

/* A tar of `ents` in pax format, through `filter` (ARCHIVE_FILTER_*). */
static void
build_tar (ps_buf *out, const struct tar_ent *ents, size_t n, int filter)
{
  struct archive *a = archive_write_new ();
  ck_assert_int_eq (archive_write_set_format_pax_restricted (a), ARCHIVE_OK);
  if (filter != ARCHIVE_FILTER_NONE)
    ck_assert_int_eq (archive_write_add_filter (a, filter), ARCHIVE_OK);
  /* no zero padding after the compressed stream (clients send none, and
     zstd readers take it for a broken frame) */
  ck_assert_int_eq (archive_write_set_bytes_in_last_block (a, 1), ARCHIVE_OK);
  ck_assert_int_eq (archive_write_open (a, out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++)
    {
      const struct tar_ent *t = &ents[i];
      struct archive_entry *e = archive_entry_new ();
      archive_entry_copy_pathname (e, t->name);
      archive_entry_set_perm (e, t->perm ? t->perm : 0644);
      archive_entry_set_mtime (e, t->mtime ? t->mtime : 1700000000, 0);
      archive_entry_set_uid (e, 0);
      archive_entry_set_gid (e, 0);
      size_t len = t->data ? strlen (t->data) : 0;
      if (t->type == HARDLINK)
        {
          archive_entry_set_filetype (e, AE_IFREG);
          archive_entry_copy_hardlink (e, t->link);
          archive_entry_set_size (e, 0);
          len = 0;
        }
      else
        {
          archive_entry_set_filetype (e, t->type);
          if (t->type == AE_IFLNK)
            archive_entry_copy_symlink (e, t->link);
          if (t->type == AE_IFCHR || t->type == AE_IFBLK)
            archive_entry_set_rdev (e, makedev (1, 3));
          archive_entry_set_size (e, t->type == AE_IFREG ? (la_int64_t) len : 0);
        }
      ck_assert_int_eq (archive_write_header (a, e), ARCHIVE_OK);
      if (len > 0)
        ck_assert_int_eq (archive_write_data (a, t->data, len), (la_ssize_t) len);
      archive_entry_free (e);
    }
  ck_assert_int_eq (archive_write_close (a), ARCHIVE_OK);
  archive_write_free (a);
}

/* A file descriptor holding `data`, read from the start, as a body. */
static int
body_fd (const void *data, size_t len)
{
  int fd = memfd_create ("context", MFD_CLOEXEC);
  ck_assert_int_ge (fd, 0);
  const char *p = data;
  while (len > 0)
    {
      ssize_t w = write (fd, p, len);
      ck_assert_int_gt (w, 0);
      p += w;
      len -= (size_t) w;
    }
  ck_assert_int_eq (lseek (fd, 0, SEEK_SET), 0);
  return fd;
}

static int
extract_bytes (const void *data, size_t len, const struct ps_context_limits *lim,
               struct ps_context_stats *st, ps_error **err)
{
  int fd = body_fd (data, len);
  int r = context_extract_fd (fd, g_dest, lim, st, err);
  close (fd);
  return r;
}

static int
extract_ents (const struct tar_ent *ents, size_t n, int filter, const struct ps_context_limits *lim,
              struct ps_context_stats *st, ps_error **err)
{
  ps_buf tar = { 0 };
  build_tar (&tar, ents, n, filter);
  int r = extract_bytes (tar.data, tar.len, lim, st, err);
  ps_buf_free (&tar);
  return r;
}

static char *
path_in (const char *dir, const char *rel)
{
  return xasprintf ("%s/%s", dir, rel);
}

/* Contents of dir/rel, or NULL when it cannot be read. */
static char *
slurp (const char *dir, const char *rel)
{
  cleanup_free char *p = path_in (dir, rel);
  char *out = NULL;
  ps_error *err = NULL;
  if (ps_read_file (p, 1 << 20, &out, NULL, &err) < 0)
    {
      ps_error_free (err);
      return NULL;
    }
  return out;
}

static void
assert_file (const char *rel, const char *content, mode_t perm)
{
  cleanup_free char *p = path_in (g_dest, rel);
  struct stat st;
  ck_assert_msg (lstat (p, &st) == 0, "%s should exist", rel);
  ck_assert_msg (S_ISREG (st.st_mode), "%s should be a regular file", rel);
  ck_assert_msg ((st.st_mode & 07777) == perm, "%s: mode %o, want %o", rel,
                 (unsigned) (st.st_mode & 07777), (unsigned) perm);
  cleanup_free char *got = slurp (g_dest, rel);
  ck_assert_ptr_nonnull (got);
  ck_assert_str_eq (got, content);
}

static bool
exists_nofollow (const char *dir, const char *rel)
{
  cleanup_free char *p = rel ? path_in (dir, rel) : xstrdup (dir);
  struct stat st;
  return lstat (p, &st) == 0;
}

/* Sorted, comma-separated names in `dir`: what is there, at a glance. */
static char *
dir_names (const char *dir)
{
  DIR *d = opendir (dir);
  ck_assert_ptr_nonnull (d);
  ps_strv v = { 0 };
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
      ps_strv_push (&v, de->d_name);
  closedir (d);
  for (size_t i = 1; i < v.n; i++)
    for (size_t j = i; j > 0 && strcmp (v.v[j - 1], v.v[j]) > 0; j--)
      {
        char *t = v.v[j];
        v.v[j] = v.v[j - 1];
        v.v[j - 1] = t;
      }
  ps_buf b = { 0 };
  for (size_t i = 0; i < v.n; i++)
    ps_buf_printf (&b, "%s%s", i ? "," : "", v.v[i]);
  ps_strv_free (&v);
  return ps_buf_steal (&b);
}

/* The parent of the context holds exactly what the fixture put there. */
static void
assert_outside_untouched (void)
{
  cleanup_free char *base = dir_names (g_base);
  ck_assert_str_eq (base, "ctx,victim");
  cleanup_free char *victim = dir_names (g_victim);
  ck_assert_str_eq (victim, "");
}

static void
assert_error (ps_error *err, int status, const char *needle)
{
  ck_assert_ptr_nonnull (err);
  ck_assert_msg (err->status == status, "status %d, want %d (%s)", err->status, status, err->msg);
  ck_assert_msg (strstr (err->msg, needle) != NULL, "message \"%s\" should contain \"%s\"",
                 err->msg, needle);
}

static char *
unique_name (const char *prefix)
{
  char hex[17];
  ps_random_hex (hex, 8);
  return xasprintf ("%s%s", prefix, hex);
}

static void
put_file (const char *rel, const char *content)
{
  cleanup_free char *p = path_in (g_dest, rel);
  char *slash = strrchr (p, '/');
  *slash = '\0';
  ck_assert_int_eq (ps_mkdir_p (p, 0755, NULL), 0);
  *slash = '/';
  ck_assert_int_eq (ps_write_file (p, content, strlen (content), 0644, NULL), 0);
}

/* ---- extraction: what a client sends arrives intact ---------------------- */

START_TEST (test_extract_plain_tar_keeps_contents_modes_and_times)
{
  const struct tar_ent ents[] = {
    { "dir", AE_IFDIR, 0750, NULL, NULL, 0 },
    { "dir/file.txt", AE_IFREG, 0640, "hello\n", NULL, 1234567890 },
    { "exec.sh", AE_IFREG, 0755, "#!/bin/sh\necho hi\n", NULL, 0 },
    { "link", AE_IFLNK, 0777, NULL, "dir/file.txt", 0 },
    { "empty", AE_IFREG, 0600, "", NULL, 0 },
    { "a/b/c/deep.txt", AE_IFREG, 0644, "deep", NULL, 0 }, /* parents not in the tar */
  };
  struct ps_context_stats st;
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, &st, &err), 0);
  ck_assert_ptr_null (err);

  assert_file ("dir/file.txt", "hello\n", 0640);
  assert_file ("exec.sh", "#!/bin/sh\necho hi\n", 0755);
  assert_file ("empty", "", 0600);
  assert_file ("a/b/c/deep.txt", "deep", 0644);

  cleanup_free char *dir = path_in (g_dest, "dir");
  struct stat sb;
  ck_assert_int_eq (lstat (dir, &sb), 0);
  ck_assert (S_ISDIR (sb.st_mode));
  ck_assert_uint_eq (sb.st_mode & 07777, 0750);

  cleanup_free char *file = path_in (g_dest, "dir/file.txt");
  ck_assert_int_eq (lstat (file, &sb), 0);
  ck_assert_int_eq (sb.st_mtime, 1234567890);

  cleanup_free char *link = path_in (g_dest, "link");
  ck_assert_int_eq (lstat (link, &sb), 0);
  ck_assert (S_ISLNK (sb.st_mode));
  char target[64] = { 0 };
  ck_assert_int_eq (readlink (link, target, sizeof target - 1), 12);
  ck_assert_str_eq (target, "dir/file.txt");

  ck_assert_uint_eq (st.entries, 6);
  ck_assert_uint_eq (st.bytes, strlen ("hello\n") + strlen ("#!/bin/sh\necho hi\n") + 4);
  assert_outside_untouched ();
}
END_TEST

START_TEST (test_extract_dot_slash_and_trailing_slash_names)
{
  const struct tar_ent ents[] = {
    { "./", AE_IFDIR, 0700, NULL, NULL, 0 },
    { "./a.txt", AE_IFREG, 0644, "a", NULL, 0 },
    { "./sub/", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "./sub/b.txt", AE_IFREG, 0644, "b", NULL, 0 },
    { "plain/", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "plain//c.txt", AE_IFREG, 0644, "c", NULL, 0 },
  };
  struct stat before, after;
  ck_assert_int_eq (stat (g_dest, &before), 0);
  struct ps_context_stats st;
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, &st, &err), 0);
  assert_file ("a.txt", "a", 0644);
  assert_file ("sub/b.txt", "b", 0644);
  assert_file ("plain/c.txt", "c", 0644);
  /* "./" is the root, which stays ours: its mode is not taken from the tar */
  ck_assert_int_eq (stat (g_dest, &after), 0);
  ck_assert_uint_eq (after.st_mode, before.st_mode);
  ck_assert_uint_eq (st.entries, 5);
}
END_TEST

/* What `tar -C dir -cf - .` (GNU tar) really produces. */
START_TEST (test_extract_gnu_tar_output)
{
  cleanup_free char *src = xasprintf ("%s/src", g_base);
  ck_assert_int_eq (mkdir (src, 0755), 0);
  cleanup_free char *sub = xasprintf ("%s/sub", src);
  ck_assert_int_eq (mkdir (sub, 0700), 0);
  cleanup_free char *f1 = xasprintf ("%s/Dockerfile", src);
  ck_assert_int_eq (ps_write_file (f1, "FROM scratch\n", 13, 0644, NULL), 0);
  cleanup_free char *f2 = xasprintf ("%s/sub/run.sh", src);
  ck_assert_int_eq (ps_write_file (f2, "exit 0\n", 7, 0755, NULL), 0);
  ck_assert_int_eq (chmod (f2, 0755), 0);

  int fd = memfd_create ("gnutar", MFD_CLOEXEC);
  ck_assert_int_ge (fd, 0);
  pid_t pid = fork ();
  ck_assert_int_ge (pid, 0);
  if (pid == 0)
    {
      dup2 (fd, STDOUT_FILENO);
      char *const argv[] = { "tar", "--format=gnu", "-C", src, "-cf", "-", ".", NULL };
      execv ("/usr/bin/tar", argv);
      _exit (127);
    }
  int status = 0;
  ck_assert_int_eq (waitpid (pid, &status, 0), pid);
  ck_assert_msg (WIFEXITED (status) && WEXITSTATUS (status) == 0, "tar failed: %d", status);
  ck_assert_int_eq (lseek (fd, 0, SEEK_SET), 0);

  /* the archive really uses "./" names */
  char head[512];
  ck_assert_int_eq (pread (fd, head, sizeof head, 0), (ssize_t) sizeof head);
  ck_assert_msg (strncmp (head, "./", 2) == 0, "first name: %.100s", head);

  struct ps_context_stats st;
  ps_error *err = NULL;
  ck_assert_int_eq (context_extract_fd (fd, g_dest, NULL, &st, &err), 0);
  close (fd);
  assert_file ("Dockerfile", "FROM scratch\n", 0644);
  assert_file ("sub/run.sh", "exit 0\n", 0755);
  cleanup_free char *dsub = path_in (g_dest, "sub");
  struct stat sb;
  ck_assert_int_eq (stat (dsub, &sb), 0);
  ck_assert_uint_eq (sb.st_mode & 07777, 0700);
  ck_assert_uint_eq (st.entries, 3); /* "./" itself is not counted */
}
END_TEST

static const int compressions[] = {
  ARCHIVE_FILTER_GZIP,
  ARCHIVE_FILTER_BZIP2,
  ARCHIVE_FILTER_XZ,
  ARCHIVE_FILTER_ZSTD,
};

START_TEST (test_extract_compressed)
{
  const struct tar_ent ents[] = {
    { "src/", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "src/main.c", AE_IFREG, 0644, "int main (void) { return 0; }\n", NULL, 0 },
  };
  ps_buf tar = { 0 };
  build_tar (&tar, ents, ARRAY_SIZE (ents), compressions[_i]);
  /* really compressed: the bytes do not start with the tar name */
  ck_assert (tar.len > 4 && memcmp (tar.data, "src/", 4) != 0);
  ps_error *err = NULL;
  int r = extract_bytes (tar.data, tar.len, NULL, NULL, &err);
  ps_buf_free (&tar);
  ck_assert_msg (r == 0, "filter %d: %s", compressions[_i], err ? err->msg : "");
  assert_file ("src/main.c", "int main (void) { return 0; }\n", 0644);
}
END_TEST

START_TEST (test_extract_empty_body_is_empty_context)
{
  struct ps_context_stats st = { 7, 7 };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_bytes ("", 0, NULL, &st, &err), 0);
  ck_assert_ptr_null (err);
  ck_assert_uint_eq (st.entries, 0);
  ck_assert_uint_eq (st.bytes, 0);
  cleanup_free char *names = dir_names (g_dest);
  ck_assert_str_eq (names, "");
}
END_TEST

START_TEST (test_extract_hardlink_to_earlier_file)
{
  const struct tar_ent ents[] = {
    { "f", AE_IFREG, 0644, "data", NULL, 0 },
    { "sub/h", HARDLINK, 0644, NULL, "f", 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), 0);
  cleanup_free char *f = path_in (g_dest, "f");
  cleanup_free char *h = path_in (g_dest, "sub/h");
  struct stat a, b;
  ck_assert_int_eq (lstat (f, &a), 0);
  ck_assert_int_eq (lstat (h, &b), 0);
  ck_assert_uint_eq (a.st_ino, b.st_ino);
  ck_assert_uint_eq (b.st_nlink, 2);
  assert_file ("sub/h", "data", 0644);
}
END_TEST

/* A later entry of the same name replaces a symlink; it is never written
   through it. */
START_TEST (test_extract_file_replaces_symlink_without_following_it)
{
  cleanup_free char *target = path_in (g_victim, "target");
  ck_assert_int_eq (ps_write_file (target, "orig", 4, 0644, NULL), 0);
  const struct tar_ent ents[] = {
    { "f", AE_IFLNK, 0777, NULL, target, 0 },
    { "f", AE_IFREG, 0644, "new", NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), 0);
  assert_file ("f", "new", 0644);
  cleanup_free char *orig = slurp (g_victim, "target");
  ck_assert_str_eq (orig, "orig");
}
END_TEST

/* One 512-byte ustar header, checksum included. */
static void
ustar_header (ps_buf *out, const char *name, char typeflag, size_t size)
{
  unsigned char h[512] = { 0 };
  snprintf ((char *) h, 100, "%s", name);
  snprintf ((char *) h + 100, 8, "%07o", 0644);
  snprintf ((char *) h + 108, 8, "%07o", 0);
  snprintf ((char *) h + 116, 8, "%07o", 0);
  snprintf ((char *) h + 124, 12, "%011zo", size);
  snprintf ((char *) h + 136, 12, "%011o", 1700000000);
  memset (h + 148, ' ', 8);
  h[156] = (unsigned char) typeflag;
  memcpy (h + 257, "ustar\0" "00", 8);
  unsigned sum = 0;
  for (size_t i = 0; i < sizeof h; i++)
    sum += h[i];
  snprintf ((char *) h + 148, 8, "%06o", sum);
  ps_buf_append (out, h, sizeof h);
}

static void
pad_block (ps_buf *out)
{
  static const char zeros[512];
  if (out->len % 512)
    ps_buf_append (out, zeros, 512 - out->len % 512);
}

/* Go's archive/tar (docker CLI, buildx) puts a non-ASCII name in a pax
   "path" record in UTF-8, with no hdrcharset; podsolved runs in the C
   locale, where libarchive cannot convert it and warns.  The bytes must
   still arrive as they were sent. */
START_TEST (test_extract_utf8_pax_name)
{
  const char *name = "h\xc3\xa9llo/\xe2\x98\xba.txt";
  char record[128];
  int rlen = snprintf (record, sizeof record, "xx path=%s\n", name);
  snprintf (record, sizeof record, "%d path=%s\n", rlen, name); /* two digits either way */
  ps_buf tar = { 0 };
  ustar_header (&tar, "PaxHeaders/x", 'x', strlen (record));
  ps_buf_puts (&tar, record);
  pad_block (&tar);
  ustar_header (&tar, "placeholder", '0', 5);
  ps_buf_puts (&tar, "smile");
  pad_block (&tar);
  static const char end[1024];
  ps_buf_append (&tar, end, sizeof end);

  ps_error *err = NULL;
  int r = extract_bytes (tar.data, tar.len, NULL, NULL, &err);
  ps_buf_free (&tar);
  ck_assert_msg (r == 0, "%s", err ? err->msg : "");
  assert_file (name, "smile", 0644);
  ck_assert (!exists_nofollow (g_dest, "placeholder"));
}
END_TEST

/* ---- extraction: hostile archives ------------------------------------------ */

START_TEST (test_reject_dotdot_entry_writes_nothing_outside)
{
  const struct tar_ent ents[] = {
    { "ok.txt", AE_IFREG, 0644, "ok", NULL, 0 },
    { "../x", AE_IFREG, 0644, "evil", NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "context entry \"../x\" escapes the build context");
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_base, "x"));
  assert_outside_untouched ();
}
END_TEST

static const char *const dotdot_names[] = { "a/../../x", "a/../x", "./..", "sub/.." };

START_TEST (test_reject_any_dotdot_element)
{
  const struct tar_ent ents[] = { { dotdot_names[_i], AE_IFREG, 0644, "evil", NULL, 0 } };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, 1, TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "escapes the build context");
  ps_error_free (err);
  cleanup_free char *names = dir_names (g_dest);
  ck_assert_str_eq (names, "");
  assert_outside_untouched ();
}
END_TEST

START_TEST (test_reject_absolute_entry)
{
  cleanup_free char *name = unique_name ("/tmp/ps-abs-");
  const struct tar_ent ents[] = { { name, AE_IFREG, 0644, "evil", NULL, 0 } };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, 1, TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "is an absolute path");
  ck_assert (strstr (err->msg, name) != NULL);
  ps_error_free (err);
  ck_assert (!exists_nofollow (name, NULL));
}
END_TEST

/* link -> /tmp, then link/evil: the write would land in /tmp. */
START_TEST (test_reject_write_through_absolute_symlink)
{
  cleanup_free char *evil = unique_name ("ps-evil-");
  cleanup_free char *through = xasprintf ("link/%s", evil);
  const struct tar_ent ents[] = {
    { "link", AE_IFLNK, 0777, NULL, "/tmp", 0 },
    { through, AE_IFREG, 0644, "evil", NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "would be written through the symlink \"link\"");
  ck_assert (strstr (err->msg, through) != NULL);
  ps_error_free (err);
  ck_assert (!exists_nofollow ("/tmp", evil));
  /* the symlink itself was a legitimate entry and stays as it is */
  cleanup_free char *link = path_in (g_dest, "link");
  struct stat sb;
  ck_assert_int_eq (lstat (link, &sb), 0);
  ck_assert (S_ISLNK (sb.st_mode));
}
END_TEST

/* The same through a directory we can inspect, one level deeper. */
START_TEST (test_reject_write_through_symlink_into_victim)
{
  const struct tar_ent ents[] = {
    { "d/", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "d/link", AE_IFLNK, 0777, NULL, g_victim, 0 },
    { "d/link/sub/evil", AE_IFREG, 0644, "evil", NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "through the symlink \"d/link\"");
  ps_error_free (err);
  assert_outside_untouched ();
}
END_TEST

/* link -> ../.. (from ctx/link, the directory above the test's), then
   link/x. */
START_TEST (test_reject_write_through_relative_symlink)
{
  cleanup_free char *evil = unique_name ("ps-evil-");
  cleanup_free char *through = xasprintf ("link/%s", evil);
  const struct tar_ent ents[] = {
    { "link", AE_IFLNK, 0777, NULL, "../..", 0 },
    { through, AE_IFREG, 0644, "evil", NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "would be written through the symlink \"link\"");
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_root, evil));
  ck_assert (!exists_nofollow (g_base, evil));
  assert_outside_untouched ();
}
END_TEST

START_TEST (test_reject_hardlink_to_unknown_entry)
{
  const struct tar_ent ents[] = { { "h", HARDLINK, 0644, NULL, "missing", 0 } };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, 1, TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "context entry \"h\" is a hard link to \"missing\"");
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_dest, "h"));
}
END_TEST

static const char *const outside_links[] = { "/etc/passwd", "../../etc/passwd", "sub/../../x" };

START_TEST (test_reject_hardlink_outside)
{
  const struct tar_ent ents[] = { { "h", HARDLINK, 0644, NULL, outside_links[_i], 0 } };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, 1, TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "is a hard link to");
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_dest, "h"));
}
END_TEST

/* f was a file, then became a symlink to /etc/passwd: a hard link to f
   must not link the symlink's target nor the symlink. */
START_TEST (test_reject_hardlink_to_name_now_a_symlink)
{
  const struct tar_ent ents[] = {
    { "f", AE_IFREG, 0644, "x", NULL, 0 },
    { "f", AE_IFLNK, 0777, NULL, "/etc/passwd", 0 },
    { "h", HARDLINK, 0644, NULL, "f", 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "no longer a regular file");
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_dest, "h"));
}
END_TEST

static const mode_t special_types[] = { AE_IFCHR, AE_IFBLK, AE_IFIFO };
static const char *const special_words[] = { "device node", "device node", "fifo" };

START_TEST (test_reject_device_and_fifo)
{
  const struct tar_ent ents[] = {
    { "ok", AE_IFREG, 0644, "ok", NULL, 0 },
    { "special", special_types[_i], 0666, NULL, NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, special_words[_i]);
  ck_assert (strstr (err->msg, "\"special\"") != NULL);
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_dest, "special"));
}
END_TEST

START_TEST (test_reject_file_replacing_directory)
{
  const struct tar_ent ents[] = {
    { "d/", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "d/x", AE_IFREG, 0644, "x", NULL, 0 },
    { "d", AE_IFLNK, 0777, NULL, "/", 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, NULL, NULL, &err), -1);
  assert_error (err, 400, "would replace a directory");
  ps_error_free (err);
  assert_file ("d/x", "x", 0644);
}
END_TEST

START_TEST (test_reject_name_too_long)
{
  ps_buf name = { 0 };
  while (name.len <= PS_MAX_CONTEXT_PATH)
    ps_buf_puts (&name, "abcdefghi/");
  ps_buf_puts (&name, "f");
  const struct tar_ent ents[] = { { name.data, AE_IFREG, 0644, "x", NULL, 0 } };
  ps_error *err = NULL;
  int r = extract_ents (ents, 1, TAR_PLAIN, NULL, NULL, &err);
  ps_buf_free (&name);
  ck_assert_int_eq (r, -1);
  assert_error (err, 400, "is longer than");
  ps_error_free (err);
  cleanup_free char *names = dir_names (g_dest);
  ck_assert_str_eq (names, "");
}
END_TEST

/* ---- extraction: limits and garbage ----------------------------------------- */

START_TEST (test_limit_file_bytes_413)
{
  char big[2001];
  memset (big, 'x', 2000);
  big[2000] = '\0';
  const struct tar_ent ents[] = { { "big", AE_IFREG, 0644, big, NULL, 0 } };
  struct ps_context_limits lim = { .max_bytes = 1000, .max_entries = 100 };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, 1, TAR_GZIP, &lim, NULL, &err), -1);
  assert_error (err, 413, "build context exceeds --max-context-bytes (1000 bytes)");
  ps_error_free (err);
  ck_assert (!exists_nofollow (g_dest, "big"));
}
END_TEST

START_TEST (test_limit_sum_of_file_bytes_413)
{
  char chunk[401];
  memset (chunk, 'y', 400);
  chunk[400] = '\0';
  const struct tar_ent ents[] = {
    { "a", AE_IFREG, 0644, chunk, NULL, 0 },
    { "b", AE_IFREG, 0644, chunk, NULL, 0 },
    { "c", AE_IFREG, 0644, chunk, NULL, 0 },
  };
  /* the raw body (three files plus headers, gzip'ed) stays well under */
  struct ps_context_limits lim = { .max_bytes = 1000, .max_entries = 100 };
  struct ps_context_stats st;
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, 3, TAR_GZIP, &lim, &st, &err), -1);
  assert_error (err, 413, "--max-context-bytes (1000 bytes)");
  ps_error_free (err);
  ck_assert_uint_eq (st.entries, 2);
  ck_assert_uint_eq (st.bytes, 800);
  ck_assert (!exists_nofollow (g_dest, "c"));
}
END_TEST

/* The body is bounded too, not only the files in it: empty files with
   long names are all header. */
START_TEST (test_limit_raw_body_bytes_413)
{
  struct tar_ent ents[40];
  char names[40][300];
  for (size_t i = 0; i < ARRAY_SIZE (ents); i++)
    {
      memset (names[i], 'n', 250);
      snprintf (names[i] + 250, 50, "%zu", i);
      ents[i] = (struct tar_ent){ names[i], AE_IFREG, 0644, "", NULL, 0 };
    }
  ps_buf tar = { 0 };
  build_tar (&tar, ents, ARRAY_SIZE (ents), ARCHIVE_FILTER_NONE);
  ck_assert_uint_gt (tar.len, 40000);
  struct ps_context_limits lim = { .max_bytes = 20000, .max_entries = 100 };
  struct ps_context_stats st;
  ps_error *err = NULL;
  int r = extract_bytes (tar.data, tar.len, &lim, &st, &err);
  ps_buf_free (&tar);
  ck_assert_int_eq (r, -1);
  assert_error (err, 413, "--max-context-bytes (20000 bytes)");
  ps_error_free (err);
  ck_assert_uint_eq (st.bytes, 0);
  ck_assert_uint_lt (st.entries, 40);
}
END_TEST

START_TEST (test_limit_entries_413)
{
  const struct tar_ent ents[] = {
    { "1", AE_IFREG, 0644, "1", NULL, 0 }, { "2", AE_IFREG, 0644, "2", NULL, 0 },
    { "3", AE_IFREG, 0644, "3", NULL, 0 }, { "4", AE_IFREG, 0644, "4", NULL, 0 },
    { "5", AE_IFREG, 0644, "5", NULL, 0 },
  };
  struct ps_context_limits lim = { .max_bytes = 1 << 20, .max_entries = 3 };
  struct ps_context_stats st;
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_PLAIN, &lim, &st, &err), -1);
  assert_error (err, 413, "more than 3 entries");
  ps_error_free (err);
  ck_assert_uint_eq (st.entries, 3);
  ck_assert (!exists_nofollow (g_dest, "4"));
}
END_TEST

START_TEST (test_reject_text_body_400)
{
  ps_buf b = { 0 };
  for (int i = 0; i < 100; i++)
    ps_buf_puts (&b, "this is not a tar archive, just some text\n");
  ps_error *err = NULL;
  ck_assert_int_eq (extract_bytes (b.data, b.len, NULL, NULL, &err), -1);
  ps_buf_free (&b);
  assert_error (err, 400, "build context is not a tar archive");
  ps_error_free (err);
  cleanup_free char *names = dir_names (g_dest);
  ck_assert_str_eq (names, "");
}
END_TEST

START_TEST (test_reject_random_bytes_400)
{
  unsigned char junk[8192];
  uint32_t x = 2463534242u; /* xorshift: fixed, so the test is repeatable */
  for (size_t i = 0; i < sizeof junk; i++)
    {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      junk[i] = (unsigned char) x;
    }
  ps_error *err = NULL;
  ck_assert_int_eq (extract_bytes (junk, sizeof junk, NULL, NULL, &err), -1);
  assert_error (err, 400, "build context is not a tar archive");
  ps_error_free (err);
}
END_TEST

/* gzip is recognised, but what it holds is not a tar. */
START_TEST (test_reject_gzipped_text_400)
{
  ps_buf out = { 0 };
  struct archive *a = archive_write_new ();
  ck_assert_int_eq (archive_write_set_format_raw (a), ARCHIVE_OK);
  ck_assert_int_eq (archive_write_add_filter_gzip (a), ARCHIVE_OK);
  ck_assert_int_eq (archive_write_open (a, &out, NULL, buf_write_cb, NULL), ARCHIVE_OK);
  struct archive_entry *e = archive_entry_new ();
  archive_entry_set_pathname (e, "x");
  archive_entry_set_filetype (e, AE_IFREG);
  const char text[] = "hello, this is plain text and not a tar archive at all\n";
  archive_entry_set_size (e, sizeof text - 1);
  ck_assert_int_eq (archive_write_header (a, e), ARCHIVE_OK);
  archive_write_data (a, text, sizeof text - 1);
  archive_entry_free (e);
  archive_write_close (a);
  archive_write_free (a);

  ps_error *err = NULL;
  ck_assert_int_eq (extract_bytes (out.data, out.len, NULL, NULL, &err), -1);
  ps_buf_free (&out);
  assert_error (err, 400, "build context is not a tar archive");
  ps_error_free (err);
}
END_TEST

START_TEST (test_reject_truncated_tar_400)
{
  char big[6001];
  memset (big, 'z', 6000);
  big[6000] = '\0';
  const struct tar_ent ents[] = { { "big", AE_IFREG, 0644, big, NULL, 0 } };
  ps_buf tar = { 0 };
  build_tar (&tar, ents, 1, ARCHIVE_FILTER_NONE);
  ps_error *err = NULL;
  int r = extract_bytes (tar.data, 2048, NULL, NULL, &err);
  ps_buf_free (&tar);
  ck_assert_int_eq (r, -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_msg (strstr (err->msg, "\"big\"") != NULL, "%s", err->msg);
  ps_error_free (err);
}
END_TEST

/* ---- pruning ---------------------------------------------------------------------- */

START_TEST (test_prune_with_exceptions_and_keep)
{
  put_file ("a.md", "a");
  put_file ("README.md", "readme");
  put_file ("docs/x.md", "x"); /* "*.md" does not reach into docs/ */
  put_file ("src/main.c", "c");
  put_file ("src/main.o", "o");
  put_file ("build/out/bin", "bin");
  put_file ("build/out/keep.txt", "keep");
  put_file ("node_modules/pkg/index.js", "js");
  put_file ("Dockerfile", "FROM scratch\n");
  put_file (".dockerignore", "...");
  const char *text = "*.md\n"
                     "!README.md\n"
                     "**/*.o\n"
                     "build\n"
                     "!build/out/keep.txt\n"
                     "node_modules\n"
                     "Dockerfile\n"
                     ".dockerignore\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  ck_assert_ptr_nonnull (ig);
  const char *keep[] = { "Dockerfile", "./.dockerignore" };
  long removed = context_prune (g_dest, ig, keep, ARRAY_SIZE (keep), &err);
  ps_ignore_free (ig);
  ck_assert_msg (removed >= 0, "%s", err ? err->msg : "");

  /* a.md, src/main.o, build/out/bin, node_modules/{pkg/index.js,pkg,} */
  ck_assert_int_eq (removed, 6);
  cleanup_free char *top = dir_names (g_dest);
  ck_assert_str_eq (top, ".dockerignore,Dockerfile,README.md,build,docs,src");
  cleanup_free char *src = xasprintf ("%s/src", g_dest);
  cleanup_free char *srcn = dir_names (src);
  ck_assert_str_eq (srcn, "main.c");
  cleanup_free char *out = xasprintf ("%s/build/out", g_dest);
  cleanup_free char *outn = dir_names (out);
  ck_assert_str_eq (outn, "keep.txt");
  assert_file ("docs/x.md", "x", 0644);
  assert_file ("build/out/keep.txt", "keep", 0644);
  assert_file ("Dockerfile", "FROM scratch\n", 0644);
}
END_TEST

START_TEST (test_prune_whole_directory_but_kept_file_below)
{
  put_file ("docs/a.md", "a");
  put_file ("docs/Dockerfile", "FROM x\n");
  put_file ("docs/sub/x", "x");
  put_file ("a.txt", "t");
  put_file ("b.c", "c");
  const char *text = "docs\n*.txt\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  const char *keep[] = { "docs/Dockerfile" };
  long removed = context_prune (g_dest, ig, keep, 1, &err);
  ps_ignore_free (ig);
  ck_assert_int_eq (removed, 4); /* docs/a.md, docs/sub/x, docs/sub, a.txt */
  cleanup_free char *top = dir_names (g_dest);
  ck_assert_str_eq (top, "b.c,docs");
  cleanup_free char *docs = xasprintf ("%s/docs", g_dest);
  cleanup_free char *docsn = dir_names (docs);
  ck_assert_str_eq (docsn, "Dockerfile");
}
END_TEST

START_TEST (test_prune_excluded_dir_removed_whole)
{
  put_file ("vendor/a/b/c.go", "c");
  put_file ("vendor/d.go", "d");
  put_file ("main.go", "m");
  const char *text = "vendor\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  long removed = context_prune (g_dest, ig, NULL, 0, &err);
  ps_ignore_free (ig);
  ck_assert_int_eq (removed, 5); /* c.go, b, a, d.go, vendor */
  cleanup_free char *top = dir_names (g_dest);
  ck_assert_str_eq (top, "main.go");
}
END_TEST

/* Symlinks are removed as links; what they point to is never looked at. */
START_TEST (test_prune_does_not_follow_symlinks)
{
  cleanup_free char *important = path_in (g_victim, "important");
  ck_assert_int_eq (ps_write_file (important, "keep me", 7, 0644, NULL), 0);
  cleanup_free char *lnk = path_in (g_dest, "lnk");
  cleanup_free char *lnk2 = path_in (g_dest, "lnk2");
  ck_assert_int_eq (symlink (g_victim, lnk), 0);
  ck_assert_int_eq (symlink (g_victim, lnk2), 0);
  const char *text = "lnk\n**/important\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  long removed = context_prune (g_dest, ig, NULL, 0, &err);
  ps_ignore_free (ig);
  ck_assert_int_eq (removed, 1);
  ck_assert (!exists_nofollow (g_dest, "lnk"));
  ck_assert (exists_nofollow (g_dest, "lnk2"));
  cleanup_free char *still = slurp (g_victim, "important");
  ck_assert_str_eq (still, "keep me");
}
END_TEST

/* A read-only directory (0555 from the tar) still loses what is excluded,
   and keeps its mode. */
START_TEST (test_prune_inside_read_only_directory)
{
  put_file ("ro/x.log", "log");
  put_file ("ro/y.c", "c");
  cleanup_free char *ro = path_in (g_dest, "ro");
  ck_assert_int_eq (chmod (ro, 0555), 0);
  const char *text = "**/*.log\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  long removed = context_prune (g_dest, ig, NULL, 0, &err);
  ps_ignore_free (ig);
  ck_assert_msg (removed == 1, "%ld %s", removed, err ? err->msg : "");
  cleanup_free char *names = dir_names (ro);
  ck_assert_str_eq (names, "y.c");
  struct stat sb;
  ck_assert_int_eq (stat (ro, &sb), 0);
  ck_assert_uint_eq (sb.st_mode & 07777, 0555);
  chmod (ro, 0755);
}
END_TEST

START_TEST (test_prune_nothing_to_do)
{
  put_file ("a", "a");
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse ("", 0, &err);
  ck_assert_int_eq (context_prune (g_dest, ig, NULL, 0, &err), 0);
  ps_ignore_free (ig);
  ck_assert (exists_nofollow (g_dest, "a"));
}
END_TEST

/* Extraction then pruning, as a build does it. */
START_TEST (test_extract_then_prune)
{
  const struct tar_ent ents[] = {
    { "Dockerfile", AE_IFREG, 0644, "FROM scratch\nCOPY . /\n", NULL, 0 },
    { ".dockerignore", AE_IFREG, 0644, "*\n!app\n", NULL, 0 },
    { "app/main.py", AE_IFREG, 0644, "print(1)\n", NULL, 0 },
    { "secret.env", AE_IFREG, 0600, "TOKEN=1\n", NULL, 0 },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (extract_ents (ents, ARRAY_SIZE (ents), TAR_GZIP, NULL, NULL, &err), 0);
  cleanup_free char *text = slurp (g_dest, ".dockerignore");
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  const char *keep[] = { "Dockerfile", ".dockerignore" };
  ck_assert_int_eq (context_prune (g_dest, ig, keep, 2, &err), 1);
  ps_ignore_free (ig);
  cleanup_free char *top = dir_names (g_dest);
  ck_assert_str_eq (top, ".dockerignore,Dockerfile,app");
  assert_file ("app/main.py", "print(1)\n", 0644);
}
END_TEST

/* ---- reading without writing (context_tar_walk) ------------------------------ */

static int
walk_collect (void *ud, const char *name, struct archive *in, struct archive_entry *e)
{
  (void) in;
  ps_strv_pushf (ud, "%s %o", name, (unsigned) archive_entry_filetype (e));
  return 0;
}

static int
walk_ents (const struct tar_ent *ents, size_t n, const struct ps_context_limits *lim, ps_strv *names)
{
  ps_buf tar = { 0 };
  build_tar (&tar, ents, n, TAR_PLAIN);
  int fd = body_fd (tar.data, tar.len);
  int r = context_tar_walk (fd, lim, walk_collect, names);
  close (fd);
  ps_buf_free (&tar);
  return r;
}

START_TEST (test_walk_gives_clean_names_and_writes_nothing)
{
  const struct tar_ent ents[] = {
    { "./", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "./d/", AE_IFDIR, 0755, NULL, NULL, 0 },
    { "./d/f", AE_IFREG, 0644, "hello", NULL, 0 },
    { "l", AE_IFLNK, 0777, NULL, "d/f", 0 },
  };
  ps_strv names = { 0 };
  ck_assert_int_eq (walk_ents (ents, ARRAY_SIZE (ents), NULL, &names), 0);
  ck_assert_uint_eq (names.n, 3);
  cleanup_free char *dir = xasprintf ("d %o", (unsigned) AE_IFDIR);
  cleanup_free char *file = xasprintf ("d/f %o", (unsigned) AE_IFREG);
  cleanup_free char *link = xasprintf ("l %o", (unsigned) AE_IFLNK);
  ck_assert_str_eq (names.v[0], dir);
  ck_assert_str_eq (names.v[1], file);
  ck_assert_str_eq (names.v[2], link);
  ps_strv_free (&names);
  cleanup_free char *listing = dir_names (g_dest);
  ck_assert_str_eq (listing, "");
}
END_TEST

/* What the extraction refuses (or would have to judge on disk), the walk
   does not vouch for: the caller unpacks, and the extraction says why. */
static const struct tar_ent walk_refused[][2] = {
  { { "../evil", AE_IFREG, 0644, "x", NULL, 0 }, { "ok", AE_IFREG, 0644, "x", NULL, 0 } },
  { { "/abs", AE_IFREG, 0644, "x", NULL, 0 }, { "ok", AE_IFREG, 0644, "x", NULL, 0 } },
  { { "link", AE_IFLNK, 0777, NULL, "/tmp", 0 }, { "link/evil", AE_IFREG, 0644, "x", NULL, 0 } },
  { { "f", AE_IFREG, 0644, "x", NULL, 0 }, { "f/below", AE_IFREG, 0644, "x", NULL, 0 } },
  { { "f", AE_IFREG, 0644, "x", NULL, 0 }, { "h", HARDLINK, 0644, NULL, "f", 0 } },
  { { "f", AE_IFREG, 0644, "x", NULL, 0 }, { "./f", AE_IFREG, 0644, "y", NULL, 0 } },
  { { "fifo", AE_IFIFO, 0644, NULL, NULL, 0 }, { "ok", AE_IFREG, 0644, "x", NULL, 0 } },
};

START_TEST (test_walk_refuses_what_it_cannot_vouch_for)
{
  ps_strv names = { 0 };
  ck_assert_int_eq (walk_ents (walk_refused[_i], 2, NULL, &names), -1);
  ps_strv_free (&names);
}
END_TEST

START_TEST (test_walk_refuses_over_limits_and_non_tars)
{
  const struct tar_ent ents[] = {
    { "a", AE_IFREG, 0644, "12345", NULL, 0 },
    { "b", AE_IFREG, 0644, "12345", NULL, 0 },
  };
  ps_strv names = { 0 };
  struct ps_context_limits bytes = { 8, 0 }, entries = { 0, 1 };
  ck_assert_int_eq (walk_ents (ents, 2, &bytes, &names), -1);
  ck_assert_int_eq (walk_ents (ents, 2, &entries, &names), -1);
  ps_strv_free (&names);
  static const char text[] = "this is not a tar archive, only some text\n";
  int fd = body_fd (text, sizeof text - 1);
  ck_assert_int_eq (context_tar_walk (fd, NULL, walk_collect, &names), -1);
  close (fd);
  ps_strv_free (&names);
}
END_TEST

PS_TEST_SUITE (context)
{
  Suite *s = suite_create ("context");

  TCase *ok = tcase_create ("extract");
  tcase_add_unchecked_fixture (ok, setup_root, teardown_root);
  tcase_add_checked_fixture (ok, setup, teardown);
  tcase_add_test (ok, test_extract_plain_tar_keeps_contents_modes_and_times);
  tcase_add_test (ok, test_extract_dot_slash_and_trailing_slash_names);
  tcase_add_test (ok, test_extract_gnu_tar_output);
  tcase_add_loop_test (ok, test_extract_compressed, 0, (int) ARRAY_SIZE (compressions));
  tcase_add_test (ok, test_extract_empty_body_is_empty_context);
  tcase_add_test (ok, test_extract_hardlink_to_earlier_file);
  tcase_add_test (ok, test_extract_file_replaces_symlink_without_following_it);
  tcase_add_test (ok, test_extract_utf8_pax_name);
  suite_add_tcase (s, ok);

  TCase *bad = tcase_create ("hostile");
  tcase_add_unchecked_fixture (bad, setup_root, teardown_root);
  tcase_add_checked_fixture (bad, setup, teardown);
  tcase_add_test (bad, test_reject_dotdot_entry_writes_nothing_outside);
  tcase_add_loop_test (bad, test_reject_any_dotdot_element, 0, (int) ARRAY_SIZE (dotdot_names));
  tcase_add_test (bad, test_reject_absolute_entry);
  tcase_add_test (bad, test_reject_write_through_absolute_symlink);
  tcase_add_test (bad, test_reject_write_through_symlink_into_victim);
  tcase_add_test (bad, test_reject_write_through_relative_symlink);
  tcase_add_test (bad, test_reject_hardlink_to_unknown_entry);
  tcase_add_loop_test (bad, test_reject_hardlink_outside, 0, (int) ARRAY_SIZE (outside_links));
  tcase_add_test (bad, test_reject_hardlink_to_name_now_a_symlink);
  tcase_add_loop_test (bad, test_reject_device_and_fifo, 0, (int) ARRAY_SIZE (special_types));
  tcase_add_test (bad, test_reject_file_replacing_directory);
  tcase_add_test (bad, test_reject_name_too_long);
  suite_add_tcase (s, bad);

  TCase *lim = tcase_create ("limits");
  tcase_add_unchecked_fixture (lim, setup_root, teardown_root);
  tcase_add_checked_fixture (lim, setup, teardown);
  tcase_add_test (lim, test_limit_file_bytes_413);
  tcase_add_test (lim, test_limit_sum_of_file_bytes_413);
  tcase_add_test (lim, test_limit_raw_body_bytes_413);
  tcase_add_test (lim, test_limit_entries_413);
  tcase_add_test (lim, test_reject_text_body_400);
  tcase_add_test (lim, test_reject_random_bytes_400);
  tcase_add_test (lim, test_reject_gzipped_text_400);
  tcase_add_test (lim, test_reject_truncated_tar_400);
  suite_add_tcase (s, lim);

  TCase *walk = tcase_create ("walk");
  tcase_add_unchecked_fixture (walk, setup_root, teardown_root);
  tcase_add_checked_fixture (walk, setup, teardown);
  tcase_add_test (walk, test_walk_gives_clean_names_and_writes_nothing);
  tcase_add_loop_test (walk, test_walk_refuses_what_it_cannot_vouch_for, 0, (int) ARRAY_SIZE (walk_refused));
  tcase_add_test (walk, test_walk_refuses_over_limits_and_non_tars);
  suite_add_tcase (s, walk);

  TCase *pr = tcase_create ("prune");
  tcase_add_unchecked_fixture (pr, setup_root, teardown_root);
  tcase_add_checked_fixture (pr, setup, teardown);
  tcase_add_test (pr, test_prune_with_exceptions_and_keep);
  tcase_add_test (pr, test_prune_whole_directory_but_kept_file_below);
  tcase_add_test (pr, test_prune_excluded_dir_removed_whole);
  tcase_add_test (pr, test_prune_does_not_follow_symlinks);
  tcase_add_test (pr, test_prune_inside_read_only_directory);
  tcase_add_test (pr, test_prune_nothing_to_do);
  tcase_add_test (pr, test_extract_then_prune);
  suite_add_tcase (s, pr);
  return s;
}
