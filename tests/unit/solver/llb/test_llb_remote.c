/* test_llb_remote.c — the attrs of http(s):// and git:// source ops read as
 * BuildKit reads them (solver/llb_remote): bad values are a 400 naming the
 * op and the attr before anything is fetched, what podsolve cannot do is a
 * 501, git identifiers give BuildKit's remote/ref/subdir, and downloaded
 * files get BuildKit's names. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "solver/llb/remote.h"
#include "tests/unit/unit.h"

/* A source vertex with up to 8 attrs ("key", "value", ..., NULL). */
struct src_vertex
{
  Pb__Op op;
  Pb__SourceOp src;
  Pb__SourceOp__AttrsEntry entries[8];
  Pb__SourceOp__AttrsEntry *attrs[8];
  struct llb_vertex v;
};

static void
make_source (struct src_vertex *s, const char *identifier, ...)
{
  memset (s, 0, sizeof *s);
  s->op = (Pb__Op) PB__OP__INIT;
  s->src = (Pb__SourceOp) PB__SOURCE_OP__INIT;
  s->src.identifier = (char *) identifier;
  va_list ap;
  va_start (ap, identifier);
  for (const char *k = va_arg (ap, const char *); k; k = va_arg (ap, const char *))
    {
      size_t i = s->src.n_attrs++;
      s->entries[i] = (Pb__SourceOp__AttrsEntry) PB__SOURCE_OP__ATTRS_ENTRY__INIT;
      s->entries[i].key = (char *) k;
      s->entries[i].value = (char *) va_arg (ap, const char *);
      s->attrs[i] = &s->entries[i];
    }
  va_end (ap);
  s->src.attrs = s->attrs;
  s->op.op_case = PB__OP__OP_SOURCE;
  s->op.source = &s->src;
  snprintf (s->v.digest, sizeof s->v.digest, "sha256:%064d", 7);
  s->v.op = &s->op;
  s->v.name = identifier;
  s->v.n_outputs = 1;
}

/* llb_remote_check gives `status` (0 = accepted) and a message containing `what`. */
static void
expect_check (struct src_vertex *s, int status, const char *what)
{
  ps_error *err = NULL;
  int r = llb_remote_check (&s->v, &err);
  if (status == 0)
    {
      ck_assert_msg (r == 0, "%s: %s", s->src.identifier, err ? err->msg : "");
      return;
    }
  ck_assert_msg (r < 0 && err, "%s (%s=%s) accepted", s->src.identifier,
                 s->src.n_attrs ? s->src.attrs[0]->key : "", s->src.n_attrs ? s->src.attrs[0]->value : "");
  ck_assert_int_eq (err->status, status);
  ck_assert_msg (strstr (err->msg, s->v.digest), "no op digest in: %s", err->msg);
  ck_assert_msg (strstr (err->msg, what), "\"%s\" not in: %s", what, err->msg);
  ps_error_free (err);
}

START_TEST (http_attrs_buildkit_accepts_pass)
{
  struct src_vertex s;
  make_source (&s, "https://example.com/app.tar.gz", "http.checksum",
               "sha256:" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "http.filename", "app.tgz",
               "http.perm", "0644", "http.uid", "1000", "http.gid", "0x3e8", NULL);
  expect_check (&s, 0, NULL);
  /* Go's strconv.ParseInt (v, 0, 64) spellings */
  const char *perms[] = { "0755", "420", "0o644", "0x1ed", "0b111101101", "0", "+0600" };
  for (size_t i = 0; i < ARRAY_SIZE (perms); i++)
    {
      make_source (&s, "http://127.0.0.1:8080/x", "http.perm", perms[i], NULL);
      expect_check (&s, 0, NULL);
    }
  /* other headers are dropped silently, as BuildKit does */
  make_source (&s, "http://127.0.0.1/x", "http.header.accept", "text/plain", "http.header.x-other", "1", NULL);
  expect_check (&s, 0, NULL);
}
END_TEST

START_TEST (bad_http_attrs_are_400_naming_the_attr)
{
  struct
  {
    const char *key, *value, *what;
  } cases[] = {
    { "http.checksum", "sha256:abc", "http.checksum \"sha256:abc\"" },
    { "http.checksum", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "http.checksum" },
    { "http.checksum", "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", "http.checksum" },
    { "http.checksum", "sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "sha256" },
    { "http.checksum", "", "http.checksum" },
    { "http.perm", "rw-r--r--", "http.perm \"rw-r--r--\"" },
    { "http.perm", "-1", "http.perm" },
    { "http.perm", "010000", "http.perm" },
    { "http.perm", "0x", "http.perm" },
    { "http.perm", "0644 ", "http.perm" },
    { "http.perm", "99999999999999999999999", "http.perm" },
    { "http.uid", "root", "http.uid \"root\"" },
    { "http.uid", "-5", "http.uid" },
    { "http.gid", "4294967295", "http.gid" },
    { "http.gid", "", "http.gid" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct src_vertex s;
      make_source (&s, "https://example.com/f", cases[i].key, cases[i].value, NULL);
      expect_check (&s, 400, cases[i].what);
    }
  const char *urls[] = { "https://", "http:///path", "https://exa mple.com/x" };
  for (size_t i = 0; i < ARRAY_SIZE (urls); i++)
    {
      struct src_vertex s;
      make_source (&s, urls[i], NULL);
      expect_check (&s, 400, "is not a valid URL");
    }
}
END_TEST

START_TEST (http_secrets_and_signatures_are_501)
{
  struct src_vertex s;
  make_source (&s, "https://example.com/f", "http.authheadersecret", "TOKEN", NULL);
  expect_check (&s, 501, "http.authheadersecret");
  make_source (&s, "https://example.com/f", "http.sig.pubkey", "KEY", NULL);
  expect_check (&s, 501, "http.sig.pubkey");
}
END_TEST

static void
expect_spec (const char *identifier, const char *fullurl, const char *remote, const char *ref, const char *subdir)
{
  struct src_vertex s;
  if (fullurl)
    make_source (&s, identifier, "git.fullurl", fullurl, NULL);
  else
    make_source (&s, identifier, NULL);
  struct llb_git_spec g;
  ps_error *err = NULL;
  int r = llb_remote_git_spec (&s.v, &g, &err);
  ck_assert_msg (r == 0, "%s: %s", identifier, err ? err->msg : "");
  ck_assert_str_eq (g.remote, remote);
  ck_assert_str_eq (g.ref, ref);
  ck_assert_str_eq (g.subdir, subdir);
  llb_git_spec_free (&g);
}

START_TEST (git_identifiers_give_buildkits_remote_ref_and_subdir)
{
  /* what llb.Git ("https://github.com/moby/buildkit.git", "v0.13.0") sends */
  expect_spec ("git://github.com/moby/buildkit.git#v0.13.0", "https://github.com/moby/buildkit.git",
               "https://github.com/moby/buildkit.git", "v0.13.0", "");
  /* without git.fullurl the remote is https:// */
  expect_spec ("git://github.com/moby/buildkit", NULL, "https://github.com/moby/buildkit", "", "");
  expect_spec ("git://127.0.0.1:9418/repo#main:docs/../sub/./x/", "git://127.0.0.1:9418/repo",
               "git://127.0.0.1:9418/repo", "main", "sub/x");
  expect_spec ("git://h/r#:/../../etc", NULL, "https://h/r", "", "etc");
  expect_spec ("git://h/r?ref=x#refs/tags/v1", NULL, "https://h/r", "refs/tags/v1", "");
  /* a git.fullurl without a scheme gets https:// */
  expect_spec ("git://h/r#main", "gitlab.example.com/g/r.git", "https://gitlab.example.com/g/r.git", "main", "");
  expect_spec ("git://h/r#0123456789abcdef0123456789abcdef01234567", "http://h/r", "http://h/r",
               "0123456789abcdef0123456789abcdef01234567", "");
}
END_TEST

START_TEST (bad_git_sources_are_400_and_ssh_is_501)
{
  struct src_vertex s;
  make_source (&s, "git://h/r#main", "git.fullurl", "ssh://git@h/r.git", NULL);
  expect_check (&s, 501, "over ssh");
  make_source (&s, "git://git@github.com:moby/buildkit.git#main", NULL);
  expect_check (&s, 501, "over ssh");
  make_source (&s, "git://h/r", "git.fullurl", "file:///etc", NULL);
  expect_check (&s, 400, "protocol file");
  make_source (&s, "git://h/r#--upload-pack=touch /tmp/x", NULL);
  expect_check (&s, 400, "invalid git ref");
  make_source (&s, "git://h/r#main", "git.checksum", "not-hex", NULL);
  expect_check (&s, 400, "git.checksum");
  make_source (&s, "git://h/r#main", "git.mtime", "commit", NULL);
  expect_check (&s, 501, "git.mtime");
  make_source (&s, "git://h/r#main", "git.fetchbycommit", "true", NULL);
  expect_check (&s, 501, "git.fetchbycommit");
  /* what the dockerfile frontend always sends is accepted */
  make_source (&s, "git://h/r#main", "git.authtokensecret", "GIT_AUTH_TOKEN.h", "git.authheadersecret",
               "GIT_AUTH_HEADER.h", "git.keepgitdir", "true", "git.checksum", "0123abc", NULL);
  expect_check (&s, 0, NULL);
}
END_TEST

static void
expect_name (const char *url, const char *attr, const char *cd, const char *want)
{
  char *got = llb_remote_http_filename (url, attr, cd);
  ck_assert_msg (strcmp (got, want) == 0, "%s / %s / %s: got \"%s\", want \"%s\"", url, attr ? attr : "-",
                 cd ? cd : "-", got, want);
  free (got);
}

START_TEST (downloaded_files_get_buildkits_names)
{
  expect_name ("https://h/dir/app.tar.gz", NULL, NULL, "app.tar.gz");
  expect_name ("https://h/dir/a%20b.txt?x=1#f", NULL, NULL, "a b.txt");
  expect_name ("https://h/dir/sub/", NULL, NULL, "sub");
  expect_name ("https://h/", NULL, NULL, "download");
  expect_name ("https://h", NULL, NULL, "download");
  expect_name ("https://h/%0a", NULL, NULL, "download");
  expect_name ("https://h/x", "given.bin", "attachment; filename=\"other\"", "given.bin");
  expect_name ("https://h/x", "../../etc/passwd", NULL, "passwd");
  expect_name ("https://h/x", "..", NULL, "download");
  expect_name ("https://h/x", NULL, "attachment; filename=\"r e\\\"p.txt\"", "r e\"p.txt");
  expect_name ("https://h/x", NULL, "attachment; filename=plain.txt", "plain.txt");
  expect_name ("https://h/x", NULL, "attachment; filename=\"a.txt\"; filename*=UTF-8''%E2%82%AC%20rates.txt",
               "\xe2\x82\xac rates.txt");
  expect_name ("https://h/x", NULL, "attachment; filename=\"../../etc/shadow\"", "shadow");
  expect_name ("https://h/x", NULL, "attachment; filename=\"dir/\"", "x");
  expect_name ("https://h/x", NULL, "attachment; filename=\"unterminated", "x");
  expect_name ("https://h/x", NULL, "inline", "x");
}
END_TEST

PS_TEST_SUITE (llb_remote)
{
  Suite *s = suite_create ("llb_remote");
  TCase *tc = tcase_create ("attrs");
  tcase_add_test (tc, http_attrs_buildkit_accepts_pass);
  tcase_add_test (tc, bad_http_attrs_are_400_naming_the_attr);
  tcase_add_test (tc, http_secrets_and_signatures_are_501);
  tcase_add_test (tc, git_identifiers_give_buildkits_remote_ref_and_subdir);
  tcase_add_test (tc, bad_git_sources_are_400_and_ssh_is_501);
  tcase_add_test (tc, downloaded_files_get_buildkits_names);
  suite_add_tcase (s, tc);
  return s;
}
