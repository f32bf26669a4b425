/* test_multipart.c — the multipart/form-data parser and the /solve body
 * intake built on it: what parts come out for every way the body is cut
 * into chunks, and the clear error for each malformed body. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/multipart.h"
#include "handlers/solve_body.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

/* What the callbacks saw, as text: "name(filename,type)=data;" per part. */
struct trace
{
  ps_buf out;
  bool in_part;
};

static int
t_begin (void *ud, const struct ps_multipart_part *p, ps_error **err)
{
  struct trace *t = ud;
  ck_assert (!t->in_part);
  t->in_part = true;
  ps_buf_printf (&t->out, "%s(%s,%s)=", p->name, p->filename ? p->filename : "-",
                 p->content_type ? p->content_type : "-");
  return 0;
}

static int
t_data (void *ud, const char *data, size_t len, ps_error **err)
{
  struct trace *t = ud;
  ck_assert (t->in_part);
  ck_assert_uint_gt (len, 0);
  ps_buf_append (&t->out, data, len);
  return 0;
}

static int
t_end (void *ud, ps_error **err)
{
  struct trace *t = ud;
  ck_assert (t->in_part);
  t->in_part = false;
  ps_buf_puts (&t->out, ";");
  return 0;
}

static const struct ps_multipart_callbacks trace_cb = { t_begin, t_data, t_end };

/* Parse `body` fed in chunks of `chunk` bytes; returns the trace, or
   "ERROR <status> <message>". */
static char *
parse (const char *boundary, const char *body, size_t len, size_t chunk)
{
  struct trace t = { 0 };
  ps_buf_puts (&t.out, "");
  ps_multipart *mp = ps_multipart_new (boundary, &trace_cb, &t);
  ps_error *err = NULL;
  int r = 0;
  for (size_t off = 0; off < len && r == 0; off += chunk)
    r = ps_multipart_feed (mp, body + off, len - off < chunk ? len - off : chunk, &err);
  if (r == 0)
    r = ps_multipart_finish (mp, &err);
  ps_multipart_free (mp);
  if (r < 0)
    {
      char *e = xasprintf ("ERROR %d %s", err->status, err->msg);
      ps_error_free (err);
      ps_buf_free (&t.out);
      return e;
    }
  return ps_buf_steal (&t.out);
}

/* The same result for every chunk size from 1 byte to the whole body. */
static char *
parse_all_ways (const char *boundary, const char *body, size_t len)
{
  char *first = parse (boundary, body, len, len ? len : 1);
  for (size_t chunk = 1; chunk < len; chunk++)
    {
      char *again = parse (boundary, body, len, chunk);
      ck_assert_msg (strcmp (again, first) == 0, "chunk %zu: %s\nwhole: %s", chunk, again, first);
      free (again);
    }
  return first;
}

#define CHECK(boundary, body, want)                                                                                   \
  do                                                                                                                  \
    {                                                                                                                 \
      char *got_ = parse_all_ways (boundary, body, sizeof (body) - 1);                                                \
      ck_assert_str_eq (got_, want);                                                                                  \
      free (got_);                                                                                                    \
    }                                                                                                                 \
  while (0)

START_TEST (curl_body_gives_its_parts_for_every_chunking)
{
  CHECK ("------------------------d74496d66958873e",
         "--------------------------d74496d66958873e\r\n"
         "Content-Disposition: form-data; name=\"request\"\r\n"
         "\r\n"
         "{\"frontend\":\"dockerfile.v0\"}\r\n"
         "--------------------------d74496d66958873e\r\n"
         "Content-Disposition: form-data; name=\"context\"; filename=\"ctx.tar\"\r\n"
         "Content-Type: application/x-tar\r\n"
         "\r\n"
         "tar\r\nbytes\r\n--not-a-delimiter\r\n"
         "--------------------------d74496d66958873e--\r\n",
         "request(-,-)={\"frontend\":\"dockerfile.v0\"};"
         "context(ctx.tar,application/x-tar)=tar\r\nbytes\r\n--not-a-delimiter;");
}
END_TEST

START_TEST (preamble_epilogue_padding_empty_parts_and_lookalikes)
{
  /* A preamble, blanks after a delimiter, an empty part, a part without
     headers other than its name, data holding "--b" lookalikes (not at a
     line start, or followed by other characters), an epilogue. */
  CHECK ("b",
         "preamble --b\r\n\r\n"
         "--b \t\r\n"
         "content-disposition: FORM-DATA; NAME=empty\r\n"
         "\r\n"
         "\r\n--b\r\n"
         "Content-Disposition: form-data; name=\"x\"; filename=\"a \\\"q\\\".tar\"\r\n"
         "\r\n"
         "x--b\r\n--bz\r\n--b-z\r\n--\r\n"
         "--b--\r\n"
         "epilogue\r\n--b\r\nnot a part",
         "empty(-,-)=;x(a \"q\".tar,-)=x--b\r\n--bz\r\n--b-z\r\n--;");
}
END_TEST

START_TEST (boundary_from_the_content_type)
{
  ps_error *err = NULL;
  char *b = ps_multipart_boundary ("multipart/form-data; boundary=abc", &err);
  ck_assert_str_eq (b, "abc");
  free (b);
  b = ps_multipart_boundary ("multipart/form-data;charset=utf-8;  BOUNDARY=\"a b;c\"", &err);
  ck_assert_str_eq (b, "a b;c");
  free (b);
  ck_assert_ptr_null (ps_multipart_boundary ("multipart/form-data", &err));
  ck_assert_str_eq (err->msg, "multipart/form-data without a boundary");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  err = NULL;
  ck_assert_ptr_null (ps_multipart_boundary ("multipart/form-data; boundary=\"\"", &err));
  ck_assert_str_eq (err->msg, "multipart/form-data boundary must be 1-70 printable characters");
  ps_error_free (err);
  err = NULL;
  char long_ct[200];
  snprintf (long_ct, sizeof long_ct, "multipart/form-data; boundary=%071d", 0);
  ck_assert_ptr_null (ps_multipart_boundary (long_ct, &err));
  ps_error_free (err);
  err = NULL;
  ck_assert_ptr_null (ps_multipart_boundary ("multipart/form-data; boundary=\"unterminated", &err));
  ck_assert (strstr (err->msg, "malformed Content-Type parameters") != NULL);
  ps_error_free (err);
}
END_TEST

START_TEST (malformed_bodies_are_400_naming_the_problem)
{
  CHECK ("b", "no delimiter at all", "ERROR 400 multipart/form-data body without any --b delimiter");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; name=ctx\r\n\r\ntar bytes",
         "ERROR 400 multipart/form-data body ends inside part \"ctx\" (no closing --b-- line)");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; name=ctx\r\n",
         "ERROR 400 multipart/form-data body ends inside a delimiter line or part headers (no closing --b-- line)");
  CHECK ("b", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
         "ERROR 400 multipart part 1 has no Content-Disposition header (form-data; name=\"...\")");
  CHECK ("b", "--b\r\nContent-Disposition: attachment; name=x\r\n\r\nx\r\n--b--",
         "ERROR 400 multipart part 1: Content-Disposition \"attachment; name=x\" is not form-data");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; filename=x\r\n\r\nx\r\n--b--",
         "ERROR 400 multipart part 1 has no name (Content-Disposition: form-data; name=\"...\")");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\nx\r\n--b--",
         "ERROR 400 multipart part 1: Content-Disposition gives name twice");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\n--b--",
         "ERROR 400 multipart part 1: header Content-Disposition is sent twice");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; name=\"a\0b\"\r\n\r\n\r\n--b--",
         "ERROR 400 multipart part 1: control characters in its headers");
  CHECK ("b", "--b\r\nno colon here\r\n\r\n\r\n--b--",
         "ERROR 400 multipart part 1: malformed header line \"no colon here\"");
  CHECK ("b", "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--b junk\r\n",
         "ERROR 400 malformed multipart/form-data body: the delimiter line --b is followed by other characters");
}
END_TEST

START_TEST (part_headers_over_8kib_are_413_without_buffering_more)
{
  size_t n = 3 * PS_MULTIPART_MAX_HEADER_BYTES;
  char *body = xmalloc (n + 1);
  memcpy (body, "--b\r\nX-Pad: ", 12);
  memset (body + 12, 'p', n - 12);
  body[n] = '\0';
  char *got = parse ("b", body, n, 1000);
  ck_assert_str_eq (got, "ERROR 413 multipart part 1: headers larger than 8192 bytes");
  free (got);
  free (body);
}
END_TEST

/* ---- the /solve body ---------------------------------------------------------- */

static const char solve_multipart[] = "--XyZ\r\n"
                                      "Content-Disposition: form-data; name=\"request\"\r\n\r\n"
                                      "{\"frontend\":\"dockerfile.v0\"}\r\n"
                                      "--XyZ\r\n"
                                      "Content-Disposition: form-data; name=\"definition\"\r\n"
                                      "Content-Type: application/x-protobuf\r\n\r\n"
                                      "\x0a\x02\x08\x01\r\n"
                                      "--XyZ\r\n"
                                      "Content-Disposition: form-data; name=\"context\"; filename=\"c.tar\"\r\n\r\n"
                                      "\r\n"
                                      "--XyZ--\r\n";

static struct solve_body *
body_of (const char *dir, const char *ct, const char *text, size_t len, ps_error **err)
{
  struct solve_body *b = solve_body_new (ct, dir, 1024 * 1024, err);
  if (b == NULL)
    return NULL;
  if (solve_body_feed (b, text, len, err) < 0 || solve_body_finish (b, err) < 0)
    {
      solve_body_free (b);
      return NULL;
    }
  return b;
}

START_TEST (solve_body_request_definition_and_an_empty_tar_part)
{
  char *dir = test_mkdtemp ();
  cleanup_free char *parts = xasprintf ("%s/parts", dir);
  mkdir (parts, 0700);
  ps_error *err = NULL;
  struct solve_body *b = body_of (dir, "multipart/form-data; boundary=XyZ", solve_multipart,
                                  sizeof solve_multipart - 1, &err);
  ck_assert_msg (b != NULL, "%s", err ? err->msg : "");
  size_t len = 0;
  ck_assert_str_eq (solve_body_json (b, &len), "{\"frontend\":\"dockerfile.v0\"}");
  const uint8_t *def = solve_body_definition (b, &len);
  ck_assert_uint_eq (len, 4);
  ck_assert_mem_eq (def, "\x0a\x02\x08\x01", 4);
  struct solve_source *src = NULL;
  size_t n = 0;
  ck_assert_int_eq (solve_body_unpack_sources (b, &src, &n, &err), 0);
  ck_assert_uint_eq (n, 1);
  ck_assert_str_eq (src[0].name, "context");
  ck_assert (test_exists (dir, "sources/context"));
  ck_assert (!test_exists (dir, "parts/context.tar"));
  free (src[0].name);
  free (src[0].dir);
  free (src[0].tar);
  free (src);
  solve_body_free (b);
  test_rm_rf (dir);
  free (dir);
}
END_TEST

static void
assert_body_error (const char *ct, const char *text, size_t len, int status, const char *msg)
{
  char *dir = test_mkdtemp ();
  cleanup_free char *parts = xasprintf ("%s/parts", dir);
  mkdir (parts, 0700);
  ps_error *err = NULL;
  struct solve_body *b = body_of (dir, ct, text, len, &err);
  ck_assert_ptr_null (b);
  ck_assert_msg (err->status == status && strcmp (err->msg, msg) == 0, "got %d %s", err->status, err->msg);
  ps_error_free (err);
  test_rm_rf (dir);
  free (dir);
}

START_TEST (solve_body_errors)
{
  const char *mp = "multipart/form-data; boundary=b";
#define BODY_ERROR(ct, text, status, msg) assert_body_error (ct, text, sizeof (text) - 1, status, msg)
  BODY_ERROR ("text/plain", "x", 415,
              "Content-Type text/plain is not supported (use application/json, or multipart/form-data with a "
              "\"request\" part and tar parts)");
  BODY_ERROR ("multipart/form-data", "x", 400, "multipart/form-data without a boundary");
  BODY_ERROR ("application/json", "", 400, "empty request body: send a JSON SolveRequest");
  BODY_ERROR (mp, "--b\r\nContent-Disposition: form-data; name=context\r\n\r\nx\r\n--b--", 400,
              "multipart body has no \"request\" part (the JSON SolveRequest)");
  BODY_ERROR (mp,
              "--b\r\nContent-Disposition: form-data; name=request\r\n\r\n{}\r\n"
              "--b\r\nContent-Disposition: form-data; name=request\r\n\r\n{}\r\n--b--",
              400, "multipart part \"request\" is sent twice");
  BODY_ERROR (mp,
              "--b\r\nContent-Disposition: form-data; name=request\r\n\r\n{}\r\n"
              "--b\r\nContent-Disposition: form-data; name=../x\r\n\r\n\r\n--b--",
              400, "multipart part \"../x\": names are 1-64 characters of [A-Za-z0-9._-]");
  BODY_ERROR (mp,
              "--b\r\nContent-Disposition: form-data; name=request\r\n\r\n{}\r\n"
              "--b\r\nContent-Disposition: form-data; name=ctx\r\n\r\nnot a tar",
              400, "multipart/form-data body ends inside part \"ctx\" (no closing --b-- line)");
  /* PS_MAX_PART_NAME: 64 characters, not 65. */
  BODY_ERROR (mp,
              "--b\r\nContent-Disposition: form-data; name=request\r\n\r\n{}\r\n"
              "--b\r\nContent-Disposition: form-data; name="
              "p1234567890123456789012345678901234567890123456789012345678901234\r\n\r\n\r\n--b--",
              400,
              "multipart part \"p1234567890123456789012345678901234567890123456789012345678901234\": names are 1-64 "
              "characters of [A-Za-z0-9._-]");
#undef BODY_ERROR
}
END_TEST

/* PS_MAX_LLB_BYTES: a "definition" part over 16 MiB is 413 as soon as the
   parser knows the extra bytes are part data (it holds back what could
   still begin a delimiter: 4 bytes for boundary "b"). */
START_TEST (definition_part_over_16mib_is_413)
{
  char *dir = test_mkdtemp ();
  cleanup_free char *parts = xasprintf ("%s/parts", dir);
  mkdir (parts, 0700);
  ps_error *err = NULL;
  struct solve_body *b = solve_body_new ("multipart/form-data; boundary=b", dir, 1024, &err);
  const char *head = "--b\r\nContent-Disposition: form-data; name=definition\r\n\r\n";
  ck_assert_int_eq (solve_body_feed (b, head, strlen (head), &err), 0);
  size_t chunk = 1024 * 1024;
  char *zeros = xcalloc (1, chunk);
  for (int i = 0; i < 16; i++)
    ck_assert_int_eq (solve_body_feed (b, zeros, chunk, &err), 0);
  ck_assert_int_eq (solve_body_feed (b, "xyz", 3, &err), 0);
  ck_assert_int_eq (solve_body_feed (b, "xy", 2, &err), -1);
  ck_assert_int_eq (err->status, 413);
  ck_assert_str_eq (err->msg, "the definition part is larger than 16777216 bytes");
  ps_error_free (err);
  free (zeros);
  solve_body_free (b);
  test_rm_rf (dir);
  free (dir);
}
END_TEST

PS_TEST_SUITE (multipart)
{
  Suite *s = suite_create ("multipart");
  TCase *tc = tcase_create ("multipart");
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, curl_body_gives_its_parts_for_every_chunking);
  tcase_add_test (tc, preamble_epilogue_padding_empty_parts_and_lookalikes);
  tcase_add_test (tc, boundary_from_the_content_type);
  tcase_add_test (tc, malformed_bodies_are_400_naming_the_problem);
  tcase_add_test (tc, part_headers_over_8kib_are_413_without_buffering_more);
  tcase_add_test (tc, solve_body_request_definition_and_an_empty_tar_part);
  tcase_add_test (tc, solve_body_errors);
  tcase_add_test (tc, definition_part_over_16mib_is_413);
  suite_add_tcase (s, tc);
  return s;
}
