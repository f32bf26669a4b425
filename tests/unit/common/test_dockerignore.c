/* test_dockerignore.c — .dockerignore semantics, case by case against what
 * Docker does.  Most rows come from moby/patternmatcher's own tests
 * (TestMatches run through MatchesOrParentMatches, the multi-pattern cases,
 * and the filepath.Match table of TestMatch); the rest pin down behaviour
 * users trip over (comments, '!' order, what '*' does not cross). */
#include "tests/unit/unit.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "common/dockerignore.h"

struct match_case
{
  const char *ignore; /* .dockerignore text */
  const char *path;
  bool excluded;
};

static const struct match_case match_cases[] = {
  /* moby patternmatcher TestMatches: (pattern, text) passes unless "fail" */
  { "**", "file", true },
  { "**", "file/", true },
  { "**/", "file", true },
  { "**/", "file/", true },
  { "**", "dir/file", true },
  { "**/", "dir/file", true },
  { "**", "dir/file/", true },
  { "**/", "dir/file/", true },
  { "**/**", "dir/file", true },
  { "**/**", "dir/file/", true },
  { "dir/**", "dir/file", true },
  { "dir/**", "dir/file/", true },
  { "dir/**", "dir/dir2/file", true },
  { "dir/**", "dir/dir2/file/", true },
  { "**/dir", "dir", true },
  { "**/dir", "dir/file", true },
  { "**/dir2/*", "dir/dir2/file", true },
  { "**/dir2/*", "dir/dir2/file/", true },
  { "**/dir2/**", "dir/dir2/dir3/file", true },
  { "**/dir2/**", "dir/dir2/dir3/file/", true },
  { "**file", "file", true },
  { "**file", "dir/file", true },
  { "**/file", "dir/file", true },
  { "**file", "dir/dir/file", true },
  { "**/file", "dir/dir/file", true },
  { "**/file*", "dir/dir/file", true },
  { "**/file*", "dir/dir/file.txt", true },
  { "**/file*txt", "dir/dir/file.txt", true },
  { "**/file*.txt", "dir/dir/file.txt", true },
  { "**/file*.txt*", "dir/dir/file.txt", true },
  { "**/**/*.txt", "dir/dir/file.txt", true },
  { "**/**/*.txt2", "dir/dir/file.txt", false },
  { "**/*.txt", "file.txt", true },
  { "**/**/*.txt", "file.txt", true },
  { "a**/*.txt", "a/file.txt", true },
  { "a**/*.txt", "a/dir/file.txt", true },
  { "a**/*.txt", "a/dir/dir/file.txt", true },
  { "a/*.txt", "a/dir/file.txt", false },
  { "a/*.txt", "a/file.txt", true },
  { "a/*.txt**", "a/file.txt", true },
  { "a[b-d]e", "ae", false },
  { "a[b-d]e", "ace", true },
  { "a[b-d]e", "aae", false },
  { "a[^b-d]e", "aze", true },
  { ".*", ".foo", true },
  { ".*", "foo", false },
  { "abc.def", "abcdef", false },
  { "abc.def", "abc.def", true },
  { "abc.def", "abcZdef", false },
  { "abc?def", "abcZdef", true },
  { "abc?def", "abcdef", false },
  { "**/foo/bar", "foo/bar", true },
  { "**/foo/bar", "dir/foo/bar", true },
  { "**/foo/bar", "dir/dir2/foo/bar", true },
  { "abc/**", "abc", false },
  { "abc/**", "abc/def", true },
  { "abc/**", "abc/def/ghi", true },
  { "**/.foo", ".foo", true },
  { "**/.foo", "bar.foo", false },
  { "a(b)c/def", "a(b)c/def", true },
  { "a(b)c/def", "a(b)c/xyz", false },
  { "a.|)$(}+{bc", "a.|)$(}+{bc", true },
  { "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
    "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true },
  { "dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", true },
  { "a\\\\", "a\\", true },
  { "a\\*b", "a*b", true },
  /* moby multiPatternTests */
  { "**\n!util/docker/web", "util/docker/web/foo", false },
  { "**\n!util/docker/web\nutil/docker/web/foo", "util/docker/web/foo", true },
  { "**\n!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
    "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false },
  { "**\n!dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", false },
  /* moby TestMatch (Go's filepath.Match table) */
  { "abc", "abc", true },
  { "*", "abc", true },
  { "*c", "abc", true },
  { "a*", "a", true },
  { "a*", "abc", true },
  { "a*", "ab/c", true },
  { "a*/b", "abc/b", true },
  { "a*/b", "a/c/b", false },
  { "a*b*c*d*e*/f", "axbxcxdxe/f", true },
  { "a*b*c*d*e*/f", "axbxcxdxexxx/f", true },
  { "a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false },
  { "a*b*c*d*e*/f", "axbxcxdxexxx/fff", false },
  { "a*b?c*x", "abxbbxdbxebxczzx", true },
  { "a*b?c*x", "abxbbxdbxebxczzy", false },
  { "ab[c]", "abc", true },
  { "ab[b-d]", "abc", true },
  { "ab[e-g]", "abc", false },
  { "ab[^c]", "abc", false },
  { "ab[^b-d]", "abc", false },
  { "ab[^e-g]", "abc", true },
  { "a\\*b", "ab", false },
  { "a?b", "a\xe2\x98\xba" "b", true },       /* one rune, three bytes */
  { "a[^a]b", "a\xe2\x98\xba" "b", true },
  { "a???b", "a\xe2\x98\xba" "b", false },
  { "a[^a][^a][^a]b", "a\xe2\x98\xba" "b", false },
  { "[a-\xce\xb6]*", "\xce\xb1", true },       /* [a-ζ]* matches α */
  { "*[a-\xce\xb6]", "A", false },
  { "a?b", "a/b", false },
  { "a*b", "a/b", false },
  { "[\\]a]", "]", true },
  { "[\\-]", "-", true },
  { "[x\\-]", "x", true },
  { "[x\\-]", "-", true },
  { "[x\\-]", "z", false },
  { "[\\-x]", "x", true },
  { "[\\-x]", "-", true },
  { "[\\-x]", "a", false },
  { "*x", "xxx", true },

  /* what '*' '?' and "**" do and do not cross */
  { "**/*.go", "a/b/c.go", true },
  { "**/*.go", "c.go", true },
  { "**/*.go", "c.gox", false },
  { "*.go", "a/c.go", false },
  { "*/*.go", "a/c.go", true },
  { "*/*.go", "a/b/c.go", false },
  { "dir/**", "dir", false },
  { "dir/**", "dir/x", true },
  { "dir/**/x", "dir/x", true },
  { "dir/**/x", "dir/a/b/x", true },
  { "dir/**/x", "dirx", false },
  { "?.txt", "ab.txt", false },
  { "?.txt", "\xc3\xa9.txt", true },
  /* a directory pattern excludes everything below it */
  { "docs", "docs", true },
  { "docs", "docs/x.md", true },
  { "docs", "docs/sub/x.md", true },
  { "docs", "docsx", false },
  { "docs", "a/docs", false },
  { "docs/", "docs/x.md", true },
  { "*/temp*", "somedir/temporary.txt", true },
  { "*/temp*", "temp", false },
  { "*/*/temp*", "somedir/subdir/temporary.txt", true },
  { "temp?", "tempa", true },
  { "temp?", "temp", false },
  /* later patterns win; '!' re-includes, even below an excluded dir */
  { "*.md\n!README.md", "README.md", false },
  { "*.md\n!README.md", "CHANGES.md", true },
  { "*.md\n!README.md", "docs/x.md", false }, /* '*' stops at '/' */
  { "!README.md\n*.md", "README.md", true },
  { "docs\n!docs/README.md", "docs/README.md", false },
  { "docs\n!docs/README.md", "docs/other.md", true },
  { "docs\n!docs/README.md\ndocs", "docs/README.md", true },
  { "*\n!src\nsrc/*.o", "src/a.c", false },
  { "*\n!src\nsrc/*.o", "src/a.o", true },
  { "*\n!src\nsrc/*.o", "Makefile", true },
  /* classes: RE2 syntax, because Docker copies them into a regexp */
  { "[a-c].txt", "b.txt", true },
  { "[a-c].txt", "d.txt", false },
  { "[^a-c].txt", "d.txt", true },
  { "[^a-c].txt", "a.txt", false },
  { "[!a].txt", "!.txt", true }, /* '!' is not negation in Docker */
  { "[!a].txt", "a.txt", true },
  { "[!a].txt", "b.txt", false },
  { "[[:digit:]]*.log", "1abc.log", true },
  { "[[:digit:]]*.log", "abc.log", false },
  { "[*].txt", "*.txt", false }, /* becomes the regexp [[^/]*].txt */
  { "[*].txt", "[].txt", true },
  /* escapes */
  { "\\*.txt", "*.txt", true },
  { "\\*.txt", "a.txt", false },
  { "\\[a\\].txt", "[a].txt", true },
  { "\\[a\\].txt", "a.txt", false },
  { "a\\?", "a?", true },
  { "a\\?", "ab", false },
  /* file syntax: comments, blanks, white space, CRLF, BOM */
  { "# comment\nfoo", "foo", true },
  { "# comment\nfoo", "# comment", false },
  { " # not a comment", "# not a comment", true },
  { "\n\n  \t\nfoo  \n\n", "foo", true },
  { "foo\r\nbar\r\n", "foo", true },
  { "foo\r\nbar\r\n", "bar", true },
  { "\xef\xbb\xbf" "foo", "foo", true },
  { "\xef\xbb\xbf#c\nbar", "bar", true },
  { "\xef\xbb\xbf#c\nbar", "#c", false },
  { "! README.md \n*.md\n!  README.md", "README.md", false },
  /* cleaning: leading '/' and "./", "..", duplicate and trailing slashes */
  { "/abs/path", "abs/path", true },
  { "/abs/path", "abs/path/below", true },
  { "!/x\n", "x", false },
  { "*\n!/keep", "keep", false },
  { "./foo", "foo", true },
  { "a/../b", "b", true },
  { "a/../b", "a", false },
  { "a//b/", "a/b", true },
  { "a/./b", "a/b", true },
  { "../x", "x", false },
  { "/", "x", false },
  { ".", "x", false },
  /* case matters */
  { "*.MD", "a.md", false },
  /* the paths asked about are cleaned too */
  { "a/b", "a//b", true },
  { "a/b", "./a/b", true },
  { "*", ".", false },
};

START_TEST (test_ignore_table)
{
  const struct match_case *c = &match_cases[_i];
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (c->ignore, strlen (c->ignore), &err);
  ck_assert_msg (ig != NULL, "parse %s: %s", c->ignore, err ? err->msg : "?");
  bool got = ps_ignore_matches (ig, c->path);
  ck_assert_msg (got == c->excluded, "patterns [%s] path \"%s\": got %s, want %s", c->ignore,
                 c->path, got ? "excluded" : "included", c->excluded ? "excluded" : "included");
  ps_ignore_free (ig);
}
END_TEST

/* Patterns Docker refuses (filepath.Match's ErrBadPattern, "!" alone, and
   what Go's regexp compiler refuses after translation). */
static const char *const bad_patterns[] = {
  "[",     "[^",    "[^bc", "a[",   "[]a]",  "[-]",      "[x-]",     "[-x]",   "\\",
  "a\\",   "[a-b-c]", "!",  "  !  ", "[z-a]", "\\q",     "[[:nope:]]", "x\\p{L}",
};

START_TEST (test_ignore_bad_pattern)
{
  const char *p = bad_patterns[_i];
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (p, strlen (p), &err);
  ck_assert_msg (ig == NULL, "pattern \"%s\" should be refused", p);
  ck_assert_ptr_nonnull (err);
  ck_assert_int_eq (err->status, 400);
  ck_assert_msg (strstr (err->msg, "line 1") != NULL, "message names the line: %s", err->msg);
  ps_error_free (err);

  /* the same through a list */
  err = NULL;
  const char *list[] = { "ok", p };
  ig = ps_ignore_from_patterns (list, 2, &err);
  ck_assert_ptr_null (ig);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

START_TEST (test_ignore_bad_pattern_names_line)
{
  const char *text = "ok\n# fine\n\nsrc/[oops\n";
  ps_error *err = NULL;
  ck_assert_ptr_null (ps_ignore_parse (text, strlen (text), &err));
  ck_assert_int_eq (err->status, 400);
  ck_assert_msg (strstr (err->msg, "line 4") != NULL && strstr (err->msg, "src/[oops") != NULL,
                 "%s", err->msg);
  ps_error_free (err);
}
END_TEST

START_TEST (test_ignore_empty_matches_nothing)
{
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse ("", 0, &err);
  ck_assert_ptr_nonnull (ig);
  ck_assert_uint_eq (ps_ignore_count (ig), 0);
  ck_assert (!ps_ignore_matches (ig, "anything"));
  ck_assert (!ps_ignore_has_exceptions (ig));
  ps_ignore_free (ig);

  const char *only_comments = "# a\n#b\n\n   \n";
  ig = ps_ignore_parse (only_comments, strlen (only_comments), &err);
  ck_assert_ptr_nonnull (ig);
  ck_assert_uint_eq (ps_ignore_count (ig), 0);
  ps_ignore_free (ig);
}
END_TEST

START_TEST (test_ignore_count_and_exceptions)
{
  const char *text = "# header\nnode_modules\n\n*.log\n!keep.log\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  ck_assert_ptr_nonnull (ig);
  ck_assert_uint_eq (ps_ignore_count (ig), 3);
  ck_assert (ps_ignore_has_exceptions (ig));
  ck_assert (ps_ignore_matches (ig, "node_modules/x/y.js"));
  ck_assert (ps_ignore_matches (ig, "debug.log"));
  ck_assert (!ps_ignore_matches (ig, "keep.log"));
  ps_ignore_free (ig);

  const char *plain = "a\nb\n";
  ig = ps_ignore_parse (plain, strlen (plain), &err);
  ck_assert (!ps_ignore_has_exceptions (ig));
  ps_ignore_free (ig);
}
END_TEST

START_TEST (test_ignore_from_patterns)
{
  /* a JSON "excludes" list: no comments, but the same cleaning */
  const char *list[] = { "/build", "", "   ", "#notacomment", "! build/keep ", "*.tmp", NULL };
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_from_patterns (list, ARRAY_SIZE (list), &err);
  ck_assert_ptr_nonnull (ig);
  ck_assert_uint_eq (ps_ignore_count (ig), 4);
  ck_assert (ps_ignore_has_exceptions (ig));
  ck_assert (ps_ignore_matches (ig, "build/out.o"));
  ck_assert (!ps_ignore_matches (ig, "build/keep"));
  ck_assert (ps_ignore_matches (ig, "#notacomment"));
  ck_assert (ps_ignore_matches (ig, "x.tmp"));
  ck_assert (!ps_ignore_matches (ig, "src/x.tmp"));
  ps_ignore_free (ig);

  ig = ps_ignore_from_patterns (NULL, 0, &err);
  ck_assert_ptr_nonnull (ig);
  ck_assert (!ps_ignore_matches (ig, "x"));
  ps_ignore_free (ig);
}
END_TEST

/* The matcher runs in time linear in the path: a pattern that makes a
   backtracking matcher explode must answer at once (the test's timeout). */
START_TEST (test_ignore_no_backtracking_blowup)
{
  const char *text = "*a*a*a*a*a*a*a*a*a*a*a*a*b\n**/**/**/**/**/**/**/**/x\n";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  ck_assert_ptr_nonnull (ig);
  char path[3001];
  memset (path, 'a', sizeof path - 1);
  path[sizeof path - 1] = '\0';
  ck_assert (!ps_ignore_matches (ig, path));
  for (size_t i = 1; i < sizeof path - 1; i += 2)
    path[i] = '/';
  ck_assert (!ps_ignore_matches (ig, path));
  ps_ignore_free (ig);
}
END_TEST

START_TEST (test_ignore_null_and_root)
{
  const char *text = "**";
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse (text, strlen (text), &err);
  ck_assert (ps_ignore_matches (ig, "x"));
  ck_assert (!ps_ignore_matches (ig, "."));  /* never the whole context */
  ck_assert (!ps_ignore_matches (ig, "./")); /* cleaned to "." */
  ck_assert (!ps_ignore_matches (NULL, "x"));
  ps_ignore_free (ig);
  ps_ignore_free (NULL);
}
END_TEST

START_TEST (test_ignore_nul_byte_refused)
{
  static const char text[] = "a\0b\n";
  ps_error *err = NULL;
  ck_assert_ptr_null (ps_ignore_parse (text, sizeof text - 1, &err));
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

PS_TEST_SUITE (dockerignore)
{
  Suite *s = suite_create ("dockerignore");
  TCase *tc = tcase_create ("match");
  tcase_add_loop_test (tc, test_ignore_table, 0, (int) ARRAY_SIZE (match_cases));
  tcase_add_loop_test (tc, test_ignore_bad_pattern, 0, (int) ARRAY_SIZE (bad_patterns));
  tcase_add_test (tc, test_ignore_bad_pattern_names_line);
  tcase_add_test (tc, test_ignore_empty_matches_nothing);
  tcase_add_test (tc, test_ignore_count_and_exceptions);
  tcase_add_test (tc, test_ignore_from_patterns);
  tcase_add_test (tc, test_ignore_no_backtracking_blowup);
  tcase_add_test (tc, test_ignore_null_and_root);
  tcase_add_test (tc, test_ignore_nul_byte_refused);
  suite_add_tcase (s, tc);
  return s;
}
