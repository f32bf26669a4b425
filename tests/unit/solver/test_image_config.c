/* test_image_config.c — containerimage.config: what is accepted, what is a
 * 400 naming the field, and the `buildah config` options it becomes (a
 * list given replaces the image's list). */
#define _GNU_SOURCE
#include <string.h>

#include "solver/image_config.h"
#include "tests/unit/unit.h"

static char *
joined (const ps_strv *v)
{
  ps_buf b = { 0 };
  for (size_t i = 0; i < v->n; i++)
    ps_buf_printf (&b, "%s%s", i ? " " : "", v->v[i]);
  return ps_buf_steal (&b);
}

START_TEST (config_becomes_buildah_options_replacing_lists)
{
  struct image_config *c = NULL;
  ps_error *err = NULL;
  const char *json = "{\"architecture\":\"arm64\",\"os\":\"linux\",\"rootfs\":{},\"history\":[],"
                     "\"config\":{\"Env\":[\"A=1\",\"B=x=y\"],\"Cmd\":[\"echo\",\"a \\\"b\\\"\"],"
                     "\"Entrypoint\":[],\"WorkingDir\":\"/w\",\"User\":\"app\",\"Labels\":{\"k\":\"v\"},"
                     "\"ExposedPorts\":{\"80/tcp\":{}},\"Volumes\":{\"/d\":{}},\"StopSignal\":\"SIGINT\","
                     "\"ArgsEscaped\":true}}";
  ck_assert_int_eq (image_config_parse (json, &c, &err), 0);
  ck_assert_str_eq (image_config_text (c), json);
  cJSON *current = cJSON_Parse ("{\"Env\":[\"PATH=/bin\",\"A=0\"],\"Labels\":{\"old\":\"1\"},"
                                "\"ExposedPorts\":{\"22/tcp\":{}},\"Volumes\":{\"/v\":{}}}");
  ps_strv args = { 0 };
  image_config_buildah_args (c, current, &args);
  cleanup_free char *s = joined (&args);
  ck_assert_str_eq (s, "--arch=arm64 --os=linux --env=PATH- --env=A- --env=A=1 --env=B=x=y --label=old- "
                       "--label=k=v --port=22/tcp- --port=80/tcp --volume=/v- --volume=/d --entrypoint=[] "
                       "--cmd=[\"echo\",\"a \\\"b\\\"\"] --workingdir=/w --user=app --stop-signal=SIGINT");
  ps_strv_free (&args);
  cJSON_Delete (current);
  image_config_free (c);

  /* Left out or null: the image keeps it. */
  ck_assert_int_eq (image_config_parse ("{\"config\":{\"Cmd\":null,\"User\":\"u\"}}", &c, &err), 0);
  image_config_buildah_args (c, NULL, &args);
  cleanup_free char *s2 = joined (&args);
  ck_assert_str_eq (s2, "--user=u");
  ps_strv_free (&args);
  image_config_free (c);
}
END_TEST

START_TEST (bad_configs_are_400_naming_the_field)
{
  static const struct
  {
    const char *json;
    const char *word;
  } bad[] = {
    { "[]", "JSON object" },
    { "{\"config\":[]}", "config: expected an object" },
    { "{\"config\":{\"Env\":[\"X\"]}}", "config.Env[0]" },
    { "{\"config\":{\"Env\":[\"=1\"]}}", "config.Env[0]" },
    { "{\"config\":{\"Env\":\"A=1\"}}", "config.Env" },
    { "{\"config\":{\"Cmd\":[1]}}", "config.Cmd[0]" },
    { "{\"config\":{\"User\":0}}", "config.User" },
    { "{\"config\":{\"Labels\":{\"a=b\":\"c\"}}}", "config.Labels" },
    { "{\"config\":{\"ExposedPorts\":{\"0/tcp\":{}}}}", "0/tcp" },
    { "{\"config\":{\"ExposedPorts\":{\"80/icmp\":{}}}}", "80/icmp" },
    { "{\"config\":{\"Volumes\":{\"data\":{}}}}", "config.Volumes" },
    { "{\"config\":{\"Volumes\":{\"/data-\":{}}}}", "/data-" },
    { "{\"config\":{\"Shell\":\"/bin/bash\"}}", "config.Shell" },
    { "{\"config\":{\"Healthcheck\":\"true\"}}", "config.Healthcheck" },
    { "{\"config\":{\"Domainname\":\"x\"}}", "config.Domainname" },
    { "{\"os\":1}", "os" },
    { "{\"platform\":\"linux/amd64\"}", "platform" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      struct image_config *c = NULL;
      ps_error *err = NULL;
      ck_assert_msg (image_config_parse (bad[i].json, &c, &err) < 0, "%s", bad[i].json);
      ck_assert_int_eq (err->status, 400);
      ck_assert_msg (strstr (err->msg, bad[i].word) != NULL, "%s: %s", bad[i].json, err->msg);
      ps_error_free (err);
    }
}
END_TEST

PS_TEST_SUITE (image_config)
{
  Suite *s = suite_create ("image_config");
  TCase *tc = tcase_create ("parse");
  tcase_add_test (tc, config_becomes_buildah_options_replacing_lists);
  tcase_add_test (tc, bad_configs_are_400_naming_the_field);
  suite_add_tcase (s, tc);
  return s;
}
