/* test_common.c — the shared helpers: errors, buffers, base64, paths. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/ps.h"
#include "common/archive.h"
#include "common/cjson.h"
#include "common/dynlib.h"
#include "common/process.h"
#include "common/regexp.h"
#include "schema/apierror.h"
#include "tests/unit/unit.h"

START_TEST (error_wrap_reads_like_a_path)
{
  ps_error *err = NULL;
  ck_assert_int_eq (ps_error_set (&err, 400, "entry %s escapes", "../x"), -1);
  ps_error_wrap (&err, "extract context");
  ps_error_wrap (&err, "build %s", "abc");
  ck_assert_str_eq (err->msg, "build abc: extract context: entry ../x escapes");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

START_TEST (base64_round_trip_and_url_alphabet)
{
  const char *in = "{\"a\":\"b?>\"}";
  char *enc = ps_base64_encode (in, strlen (in));
  unsigned char *dec = NULL;
  size_t n = 0;
  ck_assert_int_eq (ps_base64_decode (enc, &dec, &n), 0);
  ck_assert_uint_eq (n, strlen (in));
  ck_assert_mem_eq (dec, in, n);
  free (dec);
  free (enc);
  /* "e30=" is what the docker CLI sends for {} ; unpadded url-safe too. */
  ck_assert_int_eq (ps_base64_decode ("e30", &dec, &n), 0);
  ck_assert_str_eq ((char *) dec, "{}");
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("Pz8-", &dec, &n), 0);
  ck_assert_str_eq ((char *) dec, "?" "?>");
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("!!!!", &dec, &n), -1);
  /* Found by fuzz_llb: only padding wrote before the buffer. */
  ck_assert_int_eq (ps_base64_decode ("=", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("==", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("===", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("a===", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("ab=c", &dec, &n), -1);
  ck_assert_int_eq (ps_base64_decode ("", &dec, &n), 0);
  ck_assert_uint_eq (n, 0);
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("YQ==", &dec, &n), 0);
  ck_assert_uint_eq (n, 1);
  ck_assert_str_eq ((char *) dec, "a");
  free (dec);
  ck_assert_int_eq (ps_base64_decode ("YWI", &dec, &n), 0);
  ck_assert_str_eq ((char *) dec, "ab");
  free (dec);
}
END_TEST

START_TEST (path_containment)
{
  ck_assert (ps_path_is_contained ("a/b/c"));
  ck_assert (ps_path_is_contained (".dockerfile.abc"));
  ck_assert (ps_path_is_contained ("a..b/c"));
  ck_assert (!ps_path_is_contained ("../x"));
  ck_assert (!ps_path_is_contained ("a/../../x"));
  ck_assert (!ps_path_is_contained ("a/.."));
  ck_assert (!ps_path_is_contained ("/etc/passwd"));
  ck_assert (!ps_path_is_contained (""));
}
END_TEST

START_TEST (buffer_and_strv)
{
  ps_buf b = { 0 };
  ps_buf_printf (&b, "%d-%s", 42, "x");
  ps_buf_append (&b, "yz", 2);
  ck_assert_str_eq (b.data, "42-xyz");
  ck_assert_uint_eq (b.len, 6);
  ps_buf_free (&b);

  ps_strv v = { 0 };
  for (int i = 0; i < 40; i++)
    ps_strv_pushf (&v, "a%d", i);
  ck_assert_uint_eq (v.n, 40);
  ck_assert_str_eq (v.v[39], "a39");
  ck_assert_ptr_null (v.v[40]);
  ps_strv_free (&v);
}
END_TEST

START_TEST (api_error_body_has_podman_fields)
{
  char *s = schema_api_error_json (400, NULL, "failed to parse query parameter 'memory': \"x\": not an integer");
  ck_assert_str_eq (s, "{\"cause\":\"not an integer\",\"message\":\"failed to parse query parameter 'memory': "
                       "\\\"x\\\": not an integer\",\"response\":400}\n");
  free (s);
}
END_TEST

START_TEST (api_error_body_is_utf8_whatever_the_message_quotes)
{
  /* POST /solve with the body "\xa5": the parser's message quotes the
     byte, and the 400 was not valid JSON (schemathesis, ST110). */
  char *s = schema_api_error_json (400, NULL, "request body is not valid JSON: line 1, column 1, at \"\xa5\"");
  ck_assert_str_eq (s, "{\"cause\":\"line 1, column 1, at \\\"\xef\xbf\xbd\\\"\","
                       "\"message\":\"request body is not valid JSON: line 1, column 1, at \\\"\xef\xbf\xbd\\\"\","
                       "\"response\":400}\n");
  free (s);
  s = schema_api_error_json (404, "no solve \xff\xfe", "no solve \xff\xfe");
  ck_assert_str_eq (s, "{\"cause\":\"no solve \xef\xbf\xbd\xef\xbf\xbd\",\"message\":\"no solve "
                       "\xef\xbf\xbd\xef\xbf\xbd\",\"response\":404}\n");
  free (s);
}
END_TEST

static bool
re_matches (const char *pattern, const char *text)
{
  uint32_t runes[128];
  size_t n = 0;
  for (const char *c = pattern; *c; c++)
    runes[n++] = (unsigned char) *c;
  const char *error = NULL;
  ps_regexp *re = ps_regexp_compile (runes, n, &error);
  ck_assert_msg (re != NULL, "%s: %s", pattern, error);
  bool m = ps_regexp_match (re, text, strlen (text));
  ps_regexp_free (re);
  return m;
}

START_TEST (regexp_engine)
{
  ck_assert (re_matches ("^a[^/]*b$", "axxb"));
  ck_assert (!re_matches ("^a[^/]*b$", "ax/b"));
  ck_assert (re_matches ("^(.*/)?c$", "a/b/c"));
  ck_assert (re_matches ("^(.*/)?c$", "c"));
  ck_assert (re_matches ("[[:digit:]]+", "ab12"));
  ck_assert (!re_matches ("^\\d$", "x"));
  ck_assert (re_matches ("x|y", "zzy"));
  /* a rune, not a byte: U+00E9 is one [^/] */
  ck_assert (re_matches ("^[^/]$", "\xc3\xa9"));
  const char *error = NULL;
  uint32_t bad[] = { '[', 'z', '-', 'a', ']' };
  ck_assert_ptr_null (ps_regexp_compile (bad, 5, &error));
  ck_assert_ptr_nonnull (error);
  size_t w;
  ck_assert_uint_eq (ps_decode_rune ((const unsigned char *) "\xc3\xa9", 2, &w), 0xE9);
  ck_assert_uint_eq (w, 2);
  ck_assert_uint_eq (ps_decode_rune ((const unsigned char *) "\xff", 1, &w), PS_RUNE_ERROR);
  ck_assert_uint_eq (w, 1);
}
END_TEST

START_TEST (deadline_helpers)
{
  struct timespec ts = { .tv_sec = 5, .tv_nsec = 999000000L };
  ps_timespec_add_ms (&ts, 1001);
  ck_assert_int_eq (ts.tv_sec, 7);
  ck_assert_int_eq (ts.tv_nsec, 0);
  ps_timespec_add_ms (&ts, 250);
  ck_assert_int_eq (ts.tv_sec, 7);
  ck_assert_int_eq (ts.tv_nsec, 250000000L);

  struct timespec now;
  clock_gettime (CLOCK_MONOTONIC, &now);
  struct timespec d = ps_deadline_after_ms (CLOCK_MONOTONIC, 1500);
  int64_t diff = ((int64_t) d.tv_sec - now.tv_sec) * 1000000000LL + (d.tv_nsec - now.tv_nsec);
  ck_assert (diff >= 1500000000LL && diff < 1600000000LL);
  ck_assert (d.tv_nsec >= 0 && d.tv_nsec < 1000000000L);

  ck_assert (!ps_deadline_passed (ps_deadline_ns_after_ms (60000)));
  ck_assert (ps_deadline_passed (ps_monotonic_ns () - 1));
}
END_TEST

START_TEST (list_dir_sorted_without_dots)
{
  char tmpl[] = "/tmp/ps-listdir-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (tmpl));
  const char *files[] = { "b", "a", "C", ".hidden" };
  for (size_t i = 0; i < 4; i++)
    {
      cleanup_free char *p = xasprintf ("%s/%s", tmpl, files[i]);
      ck_assert_int_eq (ps_write_file (p, "", 0, 0644, NULL), 0);
    }
  int fd = open (tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ck_assert_int_ge (fd, 0);
  ps_strv names = { 0 };
  const char *step = NULL;
  ck_assert_int_eq (ps_list_dir_at (fd, true, &names, &step), 0);
  ck_assert_uint_eq (names.n, 4);
  ck_assert_str_eq (names.v[0], ".hidden");
  ck_assert_str_eq (names.v[1], "C");
  ck_assert_str_eq (names.v[2], "a");
  ck_assert_str_eq (names.v[3], "b");
  ps_strv_free (&names);
  /* a second listing through the same descriptor sees everything again */
  ck_assert_int_eq (ps_list_dir_at (fd, false, &names, &step), 0);
  ck_assert_uint_eq (names.n, 4);
  ps_strv_free (&names);
  close (fd);
  ck_assert_int_eq (ps_rm_rf (tmpl, NULL), 0);
  ck_assert_int_eq (ps_list_dir_at (AT_FDCWD, false, &names, &step), 0);
  ps_strv_free (&names);
  fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  ck_assert_int_eq (ps_list_dir_at (fd, false, &names, &step), -1);
  ck_assert_int_eq (errno, ENOTDIR);
  ck_assert_str_eq (step, "open");
  close (fd);
}
END_TEST

START_TEST (find_in_path_walks_path)
{
  const char *saved = getenv ("PATH");
  cleanup_free char *old = saved ? xstrdup (saved) : NULL;
  setenv ("PATH", "/nonexistent::/bin", 1);
  cleanup_free char *sh = ps_find_in_path ("sh", "/nowhere");
  ck_assert_str_eq (sh, "/bin/sh");
  ck_assert_ptr_null (ps_find_in_path ("no-such-program-here", "/bin"));
  setenv ("PATH", "", 1);
  cleanup_free char *dflt = ps_find_in_path ("sh", "/nonexistent:/bin");
  ck_assert_str_eq (dflt, "/bin/sh");
  if (old)
    setenv ("PATH", old, 1);
  else
    unsetenv ("PATH");
}
END_TEST

/* A one-entry tar ("f", `data`) in memory. */
static size_t
make_tar (char *buf, size_t cap, const char *data)
{
  size_t used = 0;
  cleanup_archive struct archive *w = archive_write_new ();
  archive_write_set_format_pax_restricted (w);
  ck_assert_int_eq (archive_write_open_memory (w, buf, cap, &used), ARCHIVE_OK);
  struct archive_entry *e = archive_entry_new ();
  archive_entry_set_pathname (e, "f");
  archive_entry_set_filetype (e, AE_IFREG);
  archive_entry_set_perm (e, 0644);
  archive_entry_set_size (e, (la_int64_t) strlen (data));
  ck_assert_int_eq (archive_write_header (w, e), ARCHIVE_OK);
  ck_assert_int_eq (archive_write_data (w, data, strlen (data)), (la_ssize_t) strlen (data));
  archive_entry_free (e);
  ck_assert_int_eq (archive_write_close (w), ARCHIVE_OK);
  return used;
}

static int
count_block (void *ud, size_t size)
{
  size_t *total = ud;
  *total += size;
  return *total > 4 ? -1 : 0;
}

START_TEST (archive_copy_data)
{
  static char in_tar[16384], out_tar[16384];
  size_t in_len = make_tar (in_tar, sizeof in_tar, "hello");
  for (int refuse = 0; refuse < 2; refuse++)
    {
      cleanup_archive struct archive *r = archive_read_new ();
      archive_read_support_format_tar (r);
      ck_assert_int_eq (archive_read_open_memory (r, in_tar, in_len), ARCHIVE_OK);
      size_t out_len = 0;
      cleanup_archive struct archive *w = archive_write_new ();
      archive_write_set_format_pax_restricted (w);
      ck_assert_int_eq (archive_write_open_memory (w, out_tar, sizeof out_tar, &out_len), ARCHIVE_OK);
      struct archive_entry *e;
      ck_assert_int_eq (archive_read_next_header (r, &e), ARCHIVE_OK);
      ck_assert_int_eq (archive_write_header (w, e), ARCHIVE_OK);
      size_t total = 0;
      int rc = ps_archive_copy_data (r, w, false, refuse ? count_block : NULL, &total);
      ck_assert_int_eq (rc, refuse ? PS_ARCHIVE_COPY_REFUSED : PS_ARCHIVE_COPY_DONE);
      if (refuse)
        continue;
      ck_assert_int_eq (archive_write_close (w), ARCHIVE_OK);
      cleanup_archive struct archive *back = archive_read_new ();
      archive_read_support_format_tar (back);
      ck_assert_int_eq (archive_read_open_memory (back, out_tar, out_len), ARCHIVE_OK);
      ck_assert_int_eq (archive_read_next_header (back, &e), ARCHIVE_OK);
      char got[16] = { 0 };
      ck_assert_int_eq (archive_read_data (back, got, sizeof got - 1), 5);
      ck_assert_str_eq (got, "hello");
    }
}
END_TEST

START_TEST (cleanup_cjson_frees_on_scope_exit)
{
  for (int i = 0; i < 2; i++)
    {
      cleanup_cjson cJSON *j = i ? cJSON_Parse ("{\"a\":[1,2]}") : NULL;
      if (i)
        ck_assert (cJSON_IsArray (cJSON_GetObjectItemCaseSensitive (j, "a")));
    }
}
END_TEST

struct tar_entry
{
  const char *name;
  mode_t type;
  const char *data;   /* a regular file's content */
  const char *target; /* a symlink's target or a hard link's name */
};

/* A tar of `n` entries in a fresh temporary file; returns its descriptor
   at offset 0. */
static int
tar_file (const struct tar_entry *ents, size_t n)
{
  char tmpl[] = "/tmp/ps-tar-XXXXXX";
  int fd = mkstemp (tmpl);
  ck_assert_int_ge (fd, 0);
  unlink (tmpl);
  cleanup_archive struct archive *w = archive_write_new ();
  archive_write_set_format_pax_restricted (w);
  ck_assert_int_eq (archive_write_open_fd (w, fd), ARCHIVE_OK);
  for (size_t i = 0; i < n; i++)
    {
      struct archive_entry *e = archive_entry_new ();
      archive_entry_set_pathname (e, ents[i].name);
      archive_entry_set_perm (e, ents[i].type == AE_IFDIR ? 0755 : 0644);
      if (ents[i].type == 0)
        {
          archive_entry_set_filetype (e, AE_IFREG);
          archive_entry_set_hardlink (e, ents[i].target);
        }
      else
        archive_entry_set_filetype (e, ents[i].type);
      if (ents[i].type == AE_IFLNK)
        archive_entry_set_symlink (e, ents[i].target);
      size_t len = ents[i].data ? strlen (ents[i].data) : 0;
      archive_entry_set_size (e, (la_int64_t) len);
      ck_assert_int_eq (archive_write_header (w, e), ARCHIVE_OK);
      if (len)
        ck_assert_int_eq (archive_write_data (w, ents[i].data, len), (la_ssize_t) len);
      archive_entry_free (e);
    }
  ck_assert_int_eq (archive_write_close (w), ARCHIVE_OK);
  ck_assert_int_eq (lseek (fd, 0, SEEK_SET), 0);
  return fd;
}

/* Extract the entries into a fresh directory; returns the result, and the
   directory in *dir (removed by the caller). */
static int
extract (const struct tar_entry *ents, size_t n, char **dir, ps_error **err)
{
  char tmpl[] = "/tmp/ps-extract-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (tmpl));
  *dir = xstrdup (tmpl);
  int fd = tar_file (ents, n);
  const struct ps_extract_opts o = { .label = "the test tar", .status = 400 };
  int r = ps_archive_extract_fd (fd, tmpl, &o, err);
  close (fd);
  return r;
}

START_TEST (archive_extract_stays_inside)
{
  cleanup_free char *dir = NULL;
  ps_error *err = NULL;
  const struct tar_entry good[] = {
    { "./", AE_IFDIR, NULL, NULL },
    { "./d/", AE_IFDIR, NULL, NULL },
    { "./d/f", AE_IFREG, "hi\n", NULL },
    { "d/hard", 0, NULL, "./d/f" },
    { "d/ln", AE_IFLNK, NULL, "/etc/passwd" },
    { "fifo", AE_IFIFO, NULL, NULL },
  };
  ck_assert_int_eq (extract (good, ARRAY_SIZE (good), &dir, &err), 0);
  cleanup_free char *f = xasprintf ("%s/d/f", dir), *hard = xasprintf ("%s/d/hard", dir);
  cleanup_free char *ln = xasprintf ("%s/d/ln", dir), *fifo = xasprintf ("%s/fifo", dir);
  cleanup_free char *text = NULL;
  ck_assert_int_eq (ps_read_file (f, 100, &text, NULL, NULL), 0);
  ck_assert_str_eq (text, "hi\n");
  struct stat a, b;
  ck_assert_int_eq (stat (f, &a), 0);
  ck_assert_int_eq (stat (hard, &b), 0);
  ck_assert_uint_eq (a.st_ino, b.st_ino);
  char target[64] = "";
  ck_assert_int_gt (readlink (ln, target, sizeof target - 1), 0);
  ck_assert_str_eq (target, "/etc/passwd");
  ck_assert_int_eq (lstat (fifo, &a), -1); /* skipped */
  ck_assert_int_eq (ps_rm_rf (dir, NULL), 0);
  free (steal_pointer (&dir));

  const struct tar_entry dotdot[] = { { "a/../../x", AE_IFREG, "x", NULL } };
  ck_assert_int_eq (extract (dotdot, 1, &dir, &err), -1);
  ck_assert_str_eq (err->msg, "refusing tar entry \"a/../../x\": it would land outside the destination");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err), err = NULL;
  ck_assert_int_eq (ps_rm_rf (dir, NULL), 0);
  free (steal_pointer (&dir));

  const struct tar_entry absolute[] = { { "/tmp/x", AE_IFREG, "x", NULL } };
  ck_assert_int_eq (extract (absolute, 1, &dir, &err), -1);
  ck_assert (strstr (err->msg, "refusing tar entry \"/tmp/x\"") != NULL);
  ps_error_free (err), err = NULL;
  ck_assert_int_eq (ps_rm_rf (dir, NULL), 0);
  free (steal_pointer (&dir));

  const struct tar_entry hardout[] = { { "h", 0, NULL, "../../etc/passwd" } };
  ck_assert_int_eq (extract (hardout, 1, &dir, &err), -1);
  ck_assert (strstr (err->msg, "a hard link to \"../../etc/passwd\", outside the destination") != NULL);
  ps_error_free (err), err = NULL;
  ck_assert_int_eq (ps_rm_rf (dir, NULL), 0);
  free (steal_pointer (&dir));

  /* a symlink the tar made is never written through */
  char outside[] = "/tmp/ps-outside-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (outside));
  const struct tar_entry through[] = { { "l", AE_IFLNK, NULL, outside }, { "l/x", AE_IFREG, "x", NULL } };
  ck_assert_int_eq (extract (through, 2, &dir, &err), -1);
  ck_assert (ps_str_has_prefix (err->msg, "write l/x: "));
  ps_error_free (err), err = NULL;
  cleanup_free char *escaped = xasprintf ("%s/x", outside);
  ck_assert_int_eq (access (escaped, F_OK), -1);
  ck_assert_int_eq (ps_rm_rf (dir, NULL), 0);
  ck_assert_int_eq (ps_rm_rf (outside, NULL), 0);
}
END_TEST

/* docker's CSV flag values: pairs in order, items without '=' dropped,
   the last of a key winning. */
START_TEST (csv_pairs)
{
  ps_strv p = { 0 };
  ps_csv_pairs ("type=registry,ref=localhost:5000/c:tag,bare,mode=max,ref=r2", &p);
  ck_assert_uint_eq (p.n, 8);
  ck_assert_str_eq (p.v[0], "type");
  ck_assert_str_eq (p.v[3], "localhost:5000/c:tag");
  ck_assert_str_eq (ps_pairs_get (&p, "ref"), "r2");
  ck_assert_str_eq (ps_pairs_get (&p, "mode"), "max");
  ck_assert_ptr_null (ps_pairs_get (&p, "bare"));
  ps_strv_free (&p);
  ps_csv_pairs ("", &p);
  ck_assert_uint_eq (p.n, 0);
  ps_csv_pairs ("k=,=v", &p);
  ck_assert_str_eq (ps_pairs_get (&p, "k"), "");
  ck_assert_str_eq (ps_pairs_get (&p, ""), "v");
  ps_strv_free (&p);
}
END_TEST

/* A child killed from outside is told apart from one that failed, and a
   full disk from other write errors. */
START_TEST (exit_text_and_write_errno_status)
{
  char *t = ps_exit_text (3);
  ck_assert_str_eq (t, "exit status 3");
  free (t);
  t = ps_exit_text (128 + 9);
  ck_assert_str_eq (t, "killed by signal 9 (SIGKILL)");
  free (t);
  t = ps_exit_text (128 + 15);
  ck_assert_str_eq (t, "killed by signal 15 (SIGTERM)");
  free (t);
  ck_assert_int_eq (ps_write_errno_status (ENOSPC), 507);
  ck_assert_int_eq (ps_write_errno_status (EDQUOT), 507);
  ck_assert_int_eq (ps_write_errno_status (EIO), 500);
}
END_TEST

static void
ignore_chunk (void *ud, int stream, const char *data, size_t len)
{
  (void) ud, (void) stream, (void) data, (void) len;
}

struct seen_below
{
  pid_t wanted;
  bool seen;
  int calls;
};

static void
note_below (void *ud, const struct ps_proc_id *procs, size_t n)
{
  struct seen_below *s = ud;
  s->calls++;
  for (size_t i = 0; i < n; i++)
    s->seen |= procs[i].pid == s->wanted && procs[i].start > 0;
}

/* A watched child killed by a signal from outside takes what it left
   running with it (a SIGKILLed buildah's RUN container), and then says
   what that was (to find runc's records of its containers). */
START_TEST (watched_child_killed_from_outside_takes_its_orphans_along)
{
  struct seen_below seen = { 0 };
  ps_error *err = NULL;
  /* sh starts a grandchild that would outlive it, says its pid, waits */
  char *argv[] = { (char *) "sh", (char *) "-c", (char *) "sleep 30 >/dev/null 2>&1 & echo $!; wait", NULL };
  struct ps_child c;
  ck_assert_int_eq (ps_child_spawn (argv, &c, &err), 0);
  ps_child_watch_below_then (&c, note_below, &seen);
  char buf[32] = { 0 };
  ck_assert_int_gt (read (c.out_fd, buf, sizeof buf - 1), 0);
  pid_t grandchild = (pid_t) atoi (buf);
  ck_assert_int_gt (grandchild, 0);
  seen.wanted = grandchild;
  /* someone else kills sh alone (not its group) while the pump runs */
  pid_t killer = fork ();
  if (killer == 0)
    {
      nanosleep (&(struct timespec) { 0, 400 * 1000000L }, NULL);
      kill (c.pid, SIGKILL);
      _exit (0);
    }
  ps_child_pump (&c, ignore_chunk, NULL);
  ck_assert_int_eq (ps_child_wait (&c), 128 + 9);
  waitpid (killer, NULL, 0);
  ck_assert_ptr_null (c.below);
  ck_assert_int_eq (seen.calls, 1);
  ck_assert_msg (seen.seen, "the killed child's hook was not told of the grandchild %d", (int) grandchild);
  /* the sleep was killed: gone, or a zombie of init */
  char path[64];
  snprintf (path, sizeof path, "/proc/%d/stat", (int) grandchild);
  for (int i = 0; i < 50; i++)
    {
      char *stat = NULL;
      bool gone = ps_read_file (path, 4096, &stat, NULL, NULL) < 0 || strstr (strrchr (stat, ')'), ") Z") != NULL;
      free (stat);
      if (gone)
        return;
      nanosleep (&(struct timespec) { 0, 50 * 1000000L }, NULL);
    }
  kill (grandchild, SIGKILL);
  ck_abort_msg ("the grandchild of a killed, watched child still runs");
}
END_TEST

/* ---- libraries opened on first use (common/dynlib.h) ------------------- */

/* A loader for `n` functions `names` of `soname`, not yet opened. */
static struct ps_dynlib
test_dynlib (const char *soname, const char *package, const char *const *names, void **slots, size_t n)
{
  struct ps_dynlib lib = {
    .soname = soname,
    .package = package,
    .names = names,
    .slots = slots,
    .n = n,
    .lock = PTHREAD_MUTEX_INITIALIZER,
  };
  return lib;
}

START_TEST (dynlib_missing_library_names_it_and_its_package)
{
  static const char *const names[] = { "f" };
  void *slots[1];
  struct ps_dynlib lib = test_dynlib ("libpodsolve-no-such-library.so.0", "podsolve-no-such-package", names, slots, 1);
  ps_error *err = NULL;
  ck_assert_int_eq (ps_dynlib_load (&lib, &err), -1);
  ck_assert_msg (strstr (err->msg, "libpodsolve-no-such-library.so.0 cannot be loaded (") == err->msg, "%s",
                 err->msg);
  ck_assert_msg (strstr (err->msg, "; install the package podsolve-no-such-package") != NULL, "%s", err->msg);
  cleanup_free char *first = xstrdup (err->msg);
  ps_error_free (err);
  err = NULL;
  /* remembered: the same answer, no second attempt */
  ck_assert_int_eq (ps_dynlib_load (&lib, &err), -1);
  ck_assert_str_eq (err->msg, first);
  ck_assert (!ps_dynlib_loaded (&lib));
  ps_error_free (err);
  free (lib.error); /* kept by a static ps_dynlib for the process's life */
}
END_TEST

START_TEST (dynlib_missing_symbol_is_named)
{
  static const char *const names[] = { "archive_version_number", "podsolve_no_such_function" };
  void *slots[2];
  struct ps_dynlib lib = test_dynlib ("libarchive.so.13", "libarchive13", names, slots, 2);
  ps_error *err = NULL;
  ck_assert_int_eq (ps_dynlib_load (&lib, &err), -1);
  ck_assert_msg (strstr (err->msg, "libarchive.so.13 has no podsolve_no_such_function (") == err->msg, "%s",
                 err->msg);
  ps_error_free (err);
  free (lib.error);
}
END_TEST

START_TEST (dynlib_resolves_what_it_lists)
{
  static const char *const names[] = { "archive_version_number", "archive_version_string" };
  void *slots[2];
  struct ps_dynlib lib = test_dynlib ("libarchive.so.13", "libarchive13", names, slots, 2);
  ps_error *err = NULL;
  ck_assert_int_eq (ps_dynlib_load (&lib, &err), 0);
  ck_assert (ps_dynlib_loaded (&lib));
  int (*version_number) (void) = (int (*) (void)) slots[0];
  const char *(*version_string) (void) = (const char *(*) (void)) slots[1];
  /* the library these headers describe, major version 3 */
  ck_assert_int_eq (version_number () / 1000000, ARCHIVE_VERSION_NUMBER / 1000000);
  ck_assert_msg (strncmp (version_string (), "libarchive 3.", 13) == 0, "%s", version_string ());
  ck_assert_int_eq (ps_libarchive_load (&err), 0);
}
END_TEST

PS_TEST_SUITE (common)
{
  Suite *s = suite_create ("common");
  TCase *tc = tcase_create ("helpers");
  tcase_add_test (tc, error_wrap_reads_like_a_path);
  tcase_add_test (tc, base64_round_trip_and_url_alphabet);
  tcase_add_test (tc, path_containment);
  tcase_add_test (tc, buffer_and_strv);
  tcase_add_test (tc, csv_pairs);
  tcase_add_test (tc, exit_text_and_write_errno_status);
  tcase_add_test (tc, watched_child_killed_from_outside_takes_its_orphans_along);
  tcase_add_test (tc, api_error_body_has_podman_fields);
  tcase_add_test (tc, api_error_body_is_utf8_whatever_the_message_quotes);
  tcase_add_test (tc, regexp_engine);
  tcase_add_test (tc, deadline_helpers);
  tcase_add_test (tc, list_dir_sorted_without_dots);
  tcase_add_test (tc, find_in_path_walks_path);
  tcase_add_test (tc, archive_copy_data);
  tcase_add_test (tc, archive_extract_stays_inside);
  tcase_add_test (tc, dynlib_missing_library_names_it_and_its_package);
  tcase_add_test (tc, dynlib_missing_symbol_is_named);
  tcase_add_test (tc, dynlib_resolves_what_it_lists);
  tcase_add_test (tc, cleanup_cjson_frees_on_scope_exit);
  suite_add_tcase (s, tc);
  return s;
}
