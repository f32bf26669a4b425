/* test_solve.c — the /solve request parser (every bad request a 400 naming
 * its field) and the SolveStatus line encoder (BuildKit's rawjson shape). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "schema/solve_request.h"
#include "schema/solve_status.h"
#include "solver/dockerfile/scan.h"
#include "solver/dockerfile/build.h"
#include "tests/unit/unit.h"

static int
parse (const char *json, struct solve_request *r, ps_error **err)
{
  return schema_solve_request_parse (json, strlen (json), false, r, err);
}

START_TEST (full_request_parses)
{
  struct solve_request r;
  ps_error *err = NULL;
  const char *json = "{\"ref\":\"app-1\",\"frontend\":\"dockerfile.v0\","
                     "\"frontendAttrs\":{\"filename\":\"Containerfile\",\"build-arg:V\":\"1\"},"
                     "\"exporters\":[{\"type\":\"image\",\"attrs\":{\"name\":\"localhost/app:1\",\"push\":\"false\"}},"
                     "{\"type\":\"tar\"}],"
                     "\"cache\":{\"imports\":[{\"type\":\"registry\",\"attrs\":{\"ref\":\"r/app\"}}],\"exports\":[]},"
                     "\"session\":\"abc\",\"entitlements\":[\"network.host\"],\"detach\":true}";
  ck_assert_int_eq (parse (json, &r, &err), 0);
  ck_assert_str_eq (r.ref, "app-1");
  ck_assert_str_eq (r.frontend, "dockerfile.v0");
  ck_assert_str_eq (solve_attrs_get (&r.frontend_attrs, "build-arg:V"), "1");
  ck_assert_uint_eq (r.n_exporters, 2);
  ck_assert_str_eq (r.exporters[0].type, "image");
  ck_assert_str_eq (solve_attrs_get (&r.exporters[0].attrs, "name"), "localhost/app:1");
  ck_assert_uint_eq (r.n_cache_imports, 1);
  ck_assert_str_eq (r.session, "abc");
  ck_assert_str_eq (r.entitlements.v[0], "network.host");
  ck_assert (r.detach);
  schema_solve_request_free (&r);
}
END_TEST

/* Each bad request and the words its 400 must contain. */
static const struct
{
  const char *json;
  const char *expect;
} bad[] = {
  { "{", "not valid JSON: line 1, column 1, at \"{\"" },
  { "{\"frontend\": \"dockerfile.v0\",\n  \"exporters\": [},\n}", "not valid JSON: line 2, column 17, at \"},\"" },
  { "[]", "must be a JSON object" },
  { "{\"frontend\":\"gateway.v0\"}", "gateway.v0" },
  { "{\"frontend\":5}", "frontend" },
  { "{}", "frontend: missing" },
  { "{\"frontend\":\"dockerfile.v0\",\"bogus\":1}", "unknown field \"bogus\"" },
  { "{\"frontend\":\"dockerfile.v0\",\"frontendAttrs\":{\"x\":1}}", "frontendAttrs.x" },
  { "{\"frontend\":\"dockerfile.v0\",\"frontendAttrs\":[]}", "frontendAttrs" },
  { "{\"frontend\":\"dockerfile.v0\",\"exporters\":[{\"type\":\"gha\"}]}", "exporters[0].type" },
  { "{\"frontend\":\"dockerfile.v0\",\"exporters\":[{\"type\":\"image\",\"attrs\":{\"dest\":\"/x\"}}]}",
    "unknown attr \"dest\"" },
  { "{\"frontend\":\"dockerfile.v0\",\"exporters\":{}}", "exporters" },
  { "{\"frontend\":\"dockerfile.v0\",\"cache\":{\"imports\":[{\"type\":\"gha\"}]}}", "cache.imports[0].type" },
  { "{\"frontend\":\"dockerfile.v0\",\"cache\":{\"other\":[]}}", "unknown key \"other\"" },
  { "{\"frontend\":\"dockerfile.v0\",\"entitlements\":[\"device\"]}", "entitlements" },
  { "{\"frontend\":\"dockerfile.v0\",\"detach\":\"yes\"}", "detach" },
  { "{\"frontend\":\"dockerfile.v0\",\"ref\":\"../x\"}", "ref" },
  /* /solve/prune is the prune for every method: no job may be named so */
  { "{\"frontend\":\"dockerfile.v0\",\"ref\":\"prune\"}", "ref: \"prune\" is reserved" },
  { "{\"frontend\":\"dockerfile.v0\",\"definition\":\"AAAA\"}", "mutually exclusive" },
  { "{\"definition\":5}", "definition" },
};

START_TEST (bad_requests_are_400_naming_the_field)
{
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      struct solve_request r;
      ps_error *err = NULL;
      ck_assert_msg (parse (bad[i].json, &r, &err) == -1, "accepted: %s", bad[i].json);
      ck_assert_int_eq (err->status, 400);
      ck_assert_msg (strstr (err->msg, bad[i].expect) != NULL, "%s -> %s (wanted \"%s\")", bad[i].json, err->msg,
                     bad[i].expect);
      ps_error_free (err);
      schema_solve_request_free (&r);
    }
}
END_TEST

/* A request refused after some fields were parsed leaves nothing behind
   (the sanitizer build's leak check found this one). */
START_TEST (refused_request_is_freed_by_the_parser)
{
  const char *json = "{\"definition\":{\"def\":[],\"metadata\":{}},\"frontendAttrs\":{\"no-cache\":\"\"},"
                     "\"exporters\":[{\"type\":\"image\",\"attrs\":{\"name\":\"a\"}},"
                     "{\"type\":\"local\",\"attrs\":{\"nope\":\"x\"}}],\"session\":\"s\"}";
  struct solve_request r;
  ps_error *err = NULL;
  ck_assert_int_eq (schema_solve_request_parse (json, strlen (json), false, &r, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_null (r.exporters);
  ck_assert_ptr_null (r.definition_json);
  ck_assert_int_eq (r.n_exporters, 0);
  ps_error_free (err);
  err = NULL;
  const char *late = "{\"frontend\":\"dockerfile.v0\",\"exporters\":[{\"type\":\"tar\"}],\"detach\":1}";
  ck_assert_int_eq (schema_solve_request_parse (late, strlen (late), false, &r, &err), -1);
  ck_assert_ptr_null (r.frontend);
  ck_assert_ptr_null (r.exporters);
  ps_error_free (err);
}
END_TEST

START_TEST (time_is_go_rfc3339nano)
{
  char buf[64];
  schema_time_rfc3339nano (1700000000500000000LL, buf, sizeof buf);
  ck_assert_str_eq (buf, "2023-11-14T22:13:20.5Z");
  schema_time_rfc3339nano (1700000000000000000LL, buf, sizeof buf);
  ck_assert_str_eq (buf, "2023-11-14T22:13:20Z");
  schema_time_rfc3339nano (1700000000000000001LL, buf, sizeof buf);
  ck_assert_str_eq (buf, "2023-11-14T22:13:20.000000001Z");
}
END_TEST

START_TEST (vertex_status_log_lines)
{
  struct event_encoder *enc = schema_solve_encoder_new ("r");
  ps_buf out = { 0 };
  char *inputs[] = { (char *) "sha256:aa", NULL };
  struct solver_event v = { .kind = SOLVER_EV_VERTEX, .vertex = (char *) "sha256:bb", .name = (char *) "[2/3] RUN a>b",
                            .inputs = inputs, .started_ns = 1700000000500000000LL,
                            .completed_ns = 1700000000500000000LL, .cached = true };
  event_encoder_encode (enc, &v, &out);
  ck_assert_str_eq (out.data, "{\"status\":{\"vertexes\":[{\"digest\":\"sha256:bb\",\"inputs\":[\"sha256:aa\"],"
                              "\"name\":\"[2/3] RUN a\\u003eb\",\"started\":\"2023-11-14T22:13:20.5Z\","
                              "\"completed\":\"2023-11-14T22:13:20.5Z\",\"cached\":true}]}}\n");
  ps_buf_reset (&out);

  struct solver_event l = { .kind = SOLVER_EV_LOG, .vertex = (char *) "sha256:bb", .stream = 2,
                            .data = (char *) "hello\n", .len = 6, .time_ns = 1700000000000000000LL };
  event_encoder_encode (enc, &l, &out);
  ck_assert_str_eq (out.data, "{\"status\":{\"logs\":[{\"vertex\":\"sha256:bb\",\"stream\":2,\"data\":\"aGVsbG8K\","
                              "\"timestamp\":\"2023-11-14T22:13:20Z\"}]}}\n");
  ps_buf_reset (&out);

  struct solver_event s = { .kind = SOLVER_EV_STATUS, .vertex = (char *) "sha256:bb",
                            .status_id = (char *) "transferring context:", .current = 10240,
                            .time_ns = 1700000000000000000LL };
  event_encoder_encode (enc, &s, &out);
  ck_assert_str_eq (out.data, "{\"status\":{\"statuses\":[{\"id\":\"transferring context:\",\"vertex\":\"sha256:bb\","
                              "\"current\":10240,\"timestamp\":\"2023-11-14T22:13:20Z\"}]}}\n");
  ps_buf_free (&out);
  event_encoder_free (enc);
}
END_TEST

START_TEST (result_and_error_lines)
{
  struct event_encoder *enc = schema_solve_encoder_new ("ref1");
  ps_buf out = { 0 };
  char *resp[] = { (char *) "containerimage.config.digest", (char *) "sha256:cc", NULL };
  struct solver_event r = { .kind = SOLVER_EV_RESULT, .response = resp };
  event_encoder_encode (enc, &r, &out);
  ck_assert_str_eq (out.data, "{\"result\":{\"ref\":\"ref1\",\"exporterResponse\":{\"containerimage.config.digest\":"
                              "\"sha256:cc\"}}}\n");
  ps_buf_reset (&out);
  struct solver_event e = { .kind = SOLVER_EV_ERROR, .error = (char *) "boom", .vertex = (char *) "sha256:bb",
                            .exit_code = 3 };
  event_encoder_encode (enc, &e, &out);
  ck_assert_str_eq (out.data, "{\"error\":{\"message\":\"boom\",\"vertex\":\"sha256:bb\",\"exitCode\":3}}\n");
  ps_buf_reset (&out);
  struct solver_event t = { .kind = SOLVER_EV_TEXT, .text = (char *) "--> abc\n" };
  event_encoder_encode (enc, &t, &out);
  ck_assert_uint_eq (out.len, 0);
  ps_buf_free (&out);
  event_encoder_free (enc);
}
END_TEST

START_TEST (dockerfile_from_images_skips_stages_scratch_and_args)
{
  const char *df = "# syntax\nFROM --platform=linux/amd64 docker.io/library/golang:1 AS build\n"
                   "RUN make\n  from quay.io/x/y:2 as second\nFROM build\nFROM scratch\n"
                   "ARG BASE\nFROM $BASE\nFROM localhost:5000/app\n";
  ps_strv images = { 0 };
  ck_assert (!dockerfile_from_images (df, &images)); /* FROM $BASE is unknown */
  ck_assert_uint_eq (images.n, 3);
  ck_assert_str_eq (images.v[0], "docker.io/library/golang:1");
  ck_assert_str_eq (images.v[1], "quay.io/x/y:2");
  ck_assert_str_eq (images.v[2], "localhost:5000/app");
  ps_strv_free (&images);
  ck_assert (dockerfile_from_images ("FROM a\nFROM a AS b\nFROM b\n", &images));
  ck_assert_uint_eq (images.n, 2);
  ps_strv_free (&images);
}
END_TEST

START_TEST (dockerfile_secret_ids_from_run_mounts)
{
  const char *df = "FROM alpine\n"
                   "RUN --mount=type=secret,id=npmrc,target=/root/.npmrc npm ci\n"
                   "RUN --mount=type=secret,target=/run/secrets/token \\\n    --mount=type=secret,dst=/a/b/key cat\n"
                   "RUN --mount=type=cache,id=gocache,target=/root/.cache go build\n"
                   "RUN --mount=target=/x/late,type=secret,id=first cat\n"
                   "RUN --mount=type=secret,id=npmrc true\n"
                   "RUN --mount=type=secret,id=a/b --mount=type=secret,id= --mount=type=secret true\n"
                   "RUN --mount=type=secret,id=one,id=two true\n";
  ps_strv ids = { 0 };
  dockerfile_secret_ids (df, &ids);
  ck_assert_uint_eq (ids.n, 5);
  ck_assert_str_eq (ids.v[0], "npmrc");
  ck_assert_str_eq (ids.v[1], "token"); /* the target's base name */
  ck_assert_str_eq (ids.v[2], "key");   /* after a line continuation, dst= */
  ck_assert_str_eq (ids.v[3], "first"); /* id= wins over an earlier target= */
  ck_assert_str_eq (ids.v[4], "two");   /* the last id= wins; npmrc only once; a/b, "" and none left out */
  ps_strv_free (&ids);
  dockerfile_secret_ids ("FROM alpine\nRUN true\n", &ids);
  ck_assert_uint_eq (ids.n, 0);
  /* Read as BuildKit does: not in a heredoc body, the command or a
     comment; a quoted flag value unquoted. */
  dockerfile_secret_ids ("FROM alpine\nRUN <<EOF\nRUN --mount=type=secret,id=body true\nEOF\n"
                         "RUN echo --mount=type=secret,id=cmd\n"
                         "# RUN --mount=type=secret,id=comment true\n"
                         "RUN --mount=\"type=secret,id=quoted\" true\n", &ids);
  ck_assert_uint_eq (ids.n, 1);
  ck_assert_str_eq (ids.v[0], "quoted");
  ps_strv_free (&ids);
}
END_TEST

START_TEST (dockerfile_ssh_ids_from_run_mounts)
{
  const char *df = "FROM alpine\n"
                   "RUN --mount=type=ssh ssh-add -l\n"
                   "RUN --mount=type=ssh,id=mykey,required=true \\\n    --mount=type=ssh,target=/run/a.sock git fetch\n"
                   "RUN --mount=type=secret,id=npmrc,required --mount=type=sshx,id=no --mount=id=gh,type=ssh,required=false true\n"
                   "RUN --mount=type=ssh,id=a/b,required true\n"
                   "RUN --mount=required,type=ssh,id=gh2 --mount=type=ssh,id=mykey true\n";
  ps_strv ids = { 0 };
  dockerfile_ssh_ids (df, &ids);
  ck_assert_uint_eq (ids.n, 4);
  ck_assert_str_eq (ids.v[0], "default"); /* no id=: "default", once */
  ck_assert_str_eq (ids.v[1], "mykey");
  ck_assert_str_eq (ids.v[2], "gh");      /* type= after id=; not a secret's or "sshx"'s; a/b left out */
  ck_assert_str_eq (ids.v[3], "gh2");
  ps_strv_free (&ids);
}
END_TEST

PS_TEST_SUITE (solve)
{
  Suite *s = suite_create ("solve");
  TCase *tc = tcase_create ("request");
  tcase_add_test (tc, full_request_parses);
  tcase_add_test (tc, bad_requests_are_400_naming_the_field);
  tcase_add_test (tc, refused_request_is_freed_by_the_parser);
  suite_add_tcase (s, tc);
  tc = tcase_create ("status");
  tcase_add_test (tc, time_is_go_rfc3339nano);
  tcase_add_test (tc, vertex_status_log_lines);
  tcase_add_test (tc, result_and_error_lines);
  tcase_add_test (tc, dockerfile_from_images_skips_stages_scratch_and_args);
  tcase_add_test (tc, dockerfile_secret_ids_from_run_mounts);
  tcase_add_test (tc, dockerfile_ssh_ids_from_run_mounts);
  suite_add_tcase (s, tc);
  return s;
}
