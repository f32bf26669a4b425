/* test_build_params.c — query parameters as Docker's and Podman's clients
 * send them, to build options; each bad value a 400 naming the parameter. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "handlers/build_params.h"
#include "schema/imageref.h"
#include "solver/registry_auth.h"
#include "tests/unit/unit.h"

#define KV(...) ((struct ps_kv[]){ __VA_ARGS__ })
#define N(a) (sizeof (a) / sizeof ((a)[0]))

static struct build_request req;

static int
parse (const struct ps_kv *kv, size_t n, bool libpod, ps_error **err)
{
  build_request_free (&req);
  build_request_init (&req);
  return build_params_parse (kv, n, libpod, &req, err);
}

static void
setup (void)
{
  build_request_init (&req);
}

static void
teardown (void)
{
  build_request_free (&req);
}

/* The exact query of `DOCKER_BUILDKIT=0 docker build` (20.10, capture E). */
START_TEST (docker_cli_legacy_query)
{
  struct ps_kv kv[] = {
    { "buildargs", "{}" },    { "cachefrom", "[]" },  { "cgroupparent", "" },
    { "cpuperiod", "0" },     { "cpuquota", "0" },    { "cpusetcpus", "" },
    { "cpusetmems", "" },     { "cpushares", "0" },   { "dockerfile", "Containerfile" },
    { "labels", "{}" },       { "memory", "0" },      { "memswap", "0" },
    { "networkmode", "default" }, { "nocache", "1" }, { "rm", "1" },
    { "shmsize", "0" },       { "t", "wl" },          { "target", "" },
    { "ulimits", "null" },    { "version", "1" },
  };
  ps_error *err = NULL;
  ck_assert_int_eq (parse (kv, N (kv), false, &err), 0);
  ck_assert (req.opts.nocache);
  ck_assert (req.opts.rm);
  ck_assert (req.opts.layers); /* compat default */
  ck_assert_str_eq (req.opts.format, "docker");
  ck_assert_uint_eq (req.opts.tags.n, 1);
  ck_assert_str_eq (req.opts.tags.v[0], "docker.io/library/wl:latest");
  ck_assert_str_eq (req.opts.client_tags.v[0], "wl");
  ck_assert_str_eq (req.dockerfile_param.v[0], "Containerfile");
  ck_assert_ptr_null (req.opts.network);
  ck_assert_ptr_null (req.opts.target);
  ck_assert_uint_eq (req.opts.ulimits.n, 0);
  ck_assert_int_eq (req.version, 1);
}
END_TEST

/* docker-py sends Python's True/False. */
START_TEST (python_booleans)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "q", "False" }, { "nocache", "True" }, { "rm", "True" }, { "forcerm", "False" },
                                { "pull", "False" }),
                           5, false, &err),
                    0);
  ck_assert (!req.opts.quiet);
  ck_assert (req.opts.nocache);
  ck_assert (!req.opts.forcerm);
  ck_assert_int_eq (req.opts.pull, BUILD_PULL_MISSING);
  ck_assert_int_eq (parse (KV ({ "pull", "1" }), 1, false, &err), 0);
  ck_assert_int_eq (req.opts.pull, BUILD_PULL_ALWAYS);
}
END_TEST

START_TEST (malformed_bool_is_400)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "nocache", "maybe" }), 1, false, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "'nocache'"));
  ps_error_free (err);
}
END_TEST

START_TEST (extrahosts_repeated_and_json)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "extrahosts", "a:10.0.0.1" }, { "extrahosts", "b:10.0.0.2" }), 2, false, &err), 0);
  ck_assert_uint_eq (req.opts.add_hosts.n, 2);
  ck_assert_str_eq (req.opts.add_hosts.v[1], "b:10.0.0.2");
  ck_assert_int_eq (parse (KV ({ "extrahosts", "[\"c:10.0.0.3\",\"d:::1\"]" }), 1, true, &err), 0);
  ck_assert_uint_eq (req.opts.add_hosts.n, 2);
  ck_assert_str_eq (req.opts.add_hosts.v[1], "d:::1");
  /* Found by the long fuzz run: a bad element after good ones leaked them. */
  ck_assert_int_eq (parse (KV ({ "extrahosts", "[\"a:1.2.3.4\",5]" }), 1, false, &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "extrahosts", "nocolon" }), 1, false, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

START_TEST (ulimits_docker_objects_and_podman_strings)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "ulimits", "[{\"Name\":\"nofile\",\"Hard\":2048,\"Soft\":1024}]" }), 1, false, &err), 0);
  ck_assert_str_eq (req.opts.ulimits.v[0], "nofile=1024:2048");
  ck_assert_int_eq (parse (KV ({ "ulimits", "[\"nproc=512:512\"]" }), 1, true, &err), 0);
  ck_assert_str_eq (req.opts.ulimits.v[0], "nproc=512:512");
  ck_assert_int_eq (parse (KV ({ "ulimits", "[{\"Name\":\"bogus\",\"Hard\":1,\"Soft\":1}]" }), 1, false, &err), -1);
  ps_error_free (err);
  err = NULL;
  /* Found by fuzz_build_params: out-of-range numbers were undefined to convert. */
  ck_assert_int_eq (parse (KV ({ "ulimits", "[{\"Name\":\"nofile\",\"Hard\":2e59,\"Soft\":1}]" }), 1, false, &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "ulimits", "[{\"Name\":\"nofile\",\"Hard\":1.5,\"Soft\":1}]" }), 1, false, &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "ulimits", "[{\"Name\":\"nofile\",\"Hard\":-1,\"Soft\":-1}]" }), 1, false, &err), 0);
  ck_assert_str_eq (req.opts.ulimits.v[0], "nofile=-1:-1");
  ck_assert_int_eq (parse (KV ({ "ulimits", "{" }), 1, false, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "'ulimits'"));
  ps_error_free (err);
}
END_TEST

START_TEST (buildargs_labels_and_types)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "buildargs", "{\"V\":\"1\",\"N\":null}" }, { "labels", "{\"org.x\":\"y\"}" }), 2,
                           false, &err),
                    0);
  ck_assert_uint_eq (req.opts.build_args.n, 2);
  ck_assert_str_eq (req.opts.build_args.v[0], "V=1");
  ck_assert_str_eq (req.opts.build_args.v[1], "N=");
  ck_assert_str_eq (req.opts.labels.v[0], "org.x=y");
  ck_assert_int_eq (parse (KV ({ "labels", "[\"a=b\"]" }), 1, true, &err), 0);
  ck_assert_str_eq (req.opts.labels.v[0], "a=b");
  ck_assert_int_eq (parse (KV ({ "buildargs", "notjson" }), 1, false, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "failed to parse query parameter 'buildargs'"));
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "buildargs", "{\"V\":1}" }), 1, false, &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "memory", "abc" }), 1, false, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "'memory'"));
  ps_error_free (err);
}
END_TEST

START_TEST (networkmode_host_none_honoured)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "networkmode", "host" }), 1, false, &err), 0);
  ck_assert_str_eq (req.opts.network, "host");
  ck_assert_int_eq (parse (KV ({ "networkmode", "none" }), 1, false, &err), 0);
  ck_assert_str_eq (req.opts.network, "none");
  ck_assert_int_eq (parse (KV ({ "networkmode", "1" }), 1, true, &err), 0);
  ck_assert_str_eq (req.opts.network, "none");
  ck_assert_int_eq (parse (KV ({ "networkmode", "bridge" }), 1, false, &err), 0);
  ck_assert_str_eq (req.opts.network, "private");
  ck_assert_int_eq (parse (KV ({ "networkmode", "default" }), 1, false, &err), 0);
  ck_assert_ptr_null (req.opts.network);
  ck_assert_int_eq (parse (KV ({ "networkmode", "container:abc" }), 1, false, &err), -1);
  ps_error_free (err);
}
END_TEST

/* podman-remote's query (capture K), abridged to what it changes. */
START_TEST (podman_remote_libpod_query)
{
  ps_error *err = NULL;
  struct ps_kv kv[] = {
    { "dockerfile", "[\"Containerfile\"]" }, { "forcerm", "1" }, { "isolation", "1" }, { "jobs", "1" },
    { "layers", "1" }, { "networkmode", "0" }, { "output", "remote4" },
    { "outputformat", "application/vnd.oci.image.manifest.v1+json" }, { "platform", "/" },
    { "pullpolicy", "missing" }, { "t", "remote4" },
  };
  ck_assert_int_eq (parse (kv, N (kv), true, &err), 0);
  ck_assert (req.opts.layers);
  ck_assert_str_eq (req.opts.format, "oci");
  ck_assert_str_eq (req.opts.tags.v[0], "remote4");
  ck_assert_uint_eq (req.opts.platforms.n, 0);
  ck_assert_ptr_null (req.opts.isolation);
  ck_assert_str_eq (req.dockerfile_param.v[0], "Containerfile");
  /* libpod keeps layers off unless asked */
  ck_assert_int_eq (parse (KV ({ "t", "x" }), 1, true, &err), 0);
  ck_assert (!req.opts.layers);
}
END_TEST

START_TEST (tags_validated_and_normalised)
{
  ps_error *err = NULL;
  ck_assert_int_eq (schema_imageref_check_tag ("localhost:5000/team/app:v1.2", &err), 0);
  ck_assert_int_eq (schema_imageref_check_tag ("a__b/c-d.e:TAG_1", &err), 0);
  ck_assert_int_eq (schema_imageref_check_tag ("apiA", &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "lowercase"));
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (schema_imageref_check_tag ("bad tag", &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (schema_imageref_check_tag ("x:", &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "t", "Upper" }), 1, false, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);

  char *n = schema_imageref_normalize_compat ("x");
  ck_assert_str_eq (n, "docker.io/library/x:latest");
  free (n);
  n = schema_imageref_normalize_compat ("team/x:1");
  ck_assert_str_eq (n, "docker.io/team/x:1");
  free (n);
  n = schema_imageref_normalize_compat ("localhost:5000/x");
  ck_assert_str_eq (n, "localhost:5000/x:latest");
  free (n);
  n = schema_imageref_normalize_compat ("quay.io/a/b:c");
  ck_assert_str_eq (n, "quay.io/a/b:c");
  free (n);
}
END_TEST

START_TEST (remote_and_platform)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "remote", "https://127.0.0.1:8000/ctx.tar.gz" }, { "platform", "linux/amd64" }), 2,
                           false, &err),
                    0);
  ck_assert_str_eq (req.opts.remote, "https://127.0.0.1:8000/ctx.tar.gz");
  ck_assert_str_eq (req.opts.platforms.v[0], "linux/amd64");
  ck_assert_int_eq (parse (KV ({ "remote", "client-session" }, { "version", "2" }), 2, false, &err), 0);
  ck_assert (req.use_session_context);
  ck_assert_int_eq (req.version, 2);
  ck_assert_int_eq (parse (KV ({ "remote", "/etc" }), 1, false, &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (parse (KV ({ "platform", "linux//amd64" }), 1, false, &err), -1);
  ps_error_free (err);
}
END_TEST

/* Found by fuzz_build_params: a repeated outputs= leaked the first value. */
START_TEST (repeated_outputs_last_wins)
{
  ps_error *err = NULL;
  ck_assert_int_eq (parse (KV ({ "outputs", "[{\"Type\":\"local\",\"Attrs\":{}}]" },
                               { "outputs", "[{\"Type\":\"tar\",\"Attrs\":{}}]" }),
                           2, false, &err),
                    0);
  ck_assert_str_eq (req.output_type, "tar");
  ck_assert_int_eq (parse (KV ({ "outputs", "[{\"Type\":\"s3\"}]" }), 1, false, &err), -1);
  ps_error_free (err);
}
END_TEST

/* PS_MAX_TAGS and PS_MAX_PARAM_JSON: one tag more, a JSON value one byte
   longer, and an X-Registry-Config header one byte longer are 400s. */
START_TEST (limits_on_tags_and_json_values)
{
  struct ps_kv kv[PS_MAX_TAGS + 1];
  char names[PS_MAX_TAGS + 1][16];
  for (size_t i = 0; i < ARRAY_SIZE (kv); i++)
    {
      snprintf (names[i], sizeof names[i], "t%zu", i);
      kv[i] = (struct ps_kv) { "t", names[i] };
    }
  ps_error *err = NULL;
  ck_assert_int_eq (parse (kv, PS_MAX_TAGS, false, &err), 0);
  ck_assert_int_eq (parse (kv, PS_MAX_TAGS + 1, false, &err), -1);
  ck_assert_str_eq (err->msg, "failed to parse query parameter 't': \"t64\": too many tags");
  ps_error_free (err);
  err = NULL;

  size_t n = PS_MAX_PARAM_JSON + 1;
  char *big = xmalloc (n + 1);
  memset (big, ' ', n);
  memcpy (big, "{\"A\":\"b\"}", 9);
  big[n] = '\0';
  ck_assert_int_eq (parse (KV ({ "buildargs", big }), 1, false, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_str_eq (err->msg, "failed to parse query parameter 'buildargs': \"...\": value too large");
  ps_error_free (err);
  err = NULL;
  big[n - 1] = '\0';
  ck_assert_int_eq (parse (KV ({ "buildargs", big }), 1, false, &err), 0);

  memset (big, 'A', n);
  big[n] = '\0';
  ck_assert_int_eq (registry_auth_write (big, NULL, "/nonexistent/auth.json", &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_str_eq (err->msg, "X-Registry-Config is larger than 1048576 bytes");
  ps_error_free (err);
  free (big);
}
END_TEST

PS_TEST_SUITE (build_params)
{
  Suite *s = suite_create ("build_params");
  TCase *tc = tcase_create ("query");
  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_add_test (tc, docker_cli_legacy_query);
  tcase_add_test (tc, python_booleans);
  tcase_add_test (tc, malformed_bool_is_400);
  tcase_add_test (tc, extrahosts_repeated_and_json);
  tcase_add_test (tc, ulimits_docker_objects_and_podman_strings);
  tcase_add_test (tc, buildargs_labels_and_types);
  tcase_add_test (tc, networkmode_host_none_honoured);
  tcase_add_test (tc, podman_remote_libpod_query);
  tcase_add_test (tc, tags_validated_and_normalised);
  tcase_add_test (tc, remote_and_platform);
  tcase_add_test (tc, repeated_outputs_last_wins);
  tcase_add_test (tc, limits_on_tags_and_json_values);
  suite_add_tcase (s, tc);
  return s;
}
