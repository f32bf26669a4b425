/* test_image_config.c — containerimage.config: what is accepted, what is a
 * 400 naming the field, and the config it makes of an image's (a field
 * given replaces the image's; history fitted to the layers). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "solver/image_config.h"
#include "tests/unit/unit.h"

START_TEST (config_lays_over_the_image_with_history_fitted_to_its_layers)
{
  const char *image = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":"
                      "[\"sha256:a\",\"sha256:b\",\"sha256:c\"]},\"config\":{\"Env\":[\"PATH=/bin\"],"
                      "\"User\":\"0\",\"Labels\":{\"io.buildah.version\":\"1\"}},\"history\":[{\"created_by\":\"x\"}]}";
  /* two non-empty entries for three layers: one is added for the last */
  const char *fe = "{\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]},"
                   "\"config\":{\"Cmd\":[\"hi\"],\"Labels\":{\"k\":\"v\"},\"Healthcheck\":{\"Test\":[\"NONE\"]},"
                   "\"Shell\":[\"/bin/sh\",\"-xc\"]},\"history\":[{\"created_by\":\"base\"},"
                   "{\"created_by\":\"ENV A=1\",\"empty_layer\":true},{\"created_by\":\"RUN x\"}]}";
  struct image_config *c = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (image_config_parse (fe, &c, &err), 0);
  char *text = image_config_merge (image, c);
  cJSON *m = cJSON_Parse (text);
  const cJSON *cfg = cJSON_GetObjectItem (m, "config");
  ck_assert_str_eq (cJSON_GetArrayItem (cJSON_GetObjectItem (cfg, "Env"), 0)->valuestring, "PATH=/bin"); /* kept */
  ck_assert_str_eq (cJSON_GetObjectItem (cfg, "User")->valuestring, "0"); /* kept */
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (cfg, "Labels")), 1); /* replaced whole */
  ck_assert_str_eq (cJSON_GetObjectItem (cJSON_GetObjectItem (cfg, "Labels"), "k")->valuestring, "v");
  ck_assert (cJSON_GetObjectItem (cfg, "Healthcheck") && cJSON_GetObjectItem (cfg, "Shell"));
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (cJSON_GetObjectItem (m, "rootfs"), "diff_ids")), 3);
  const cJSON *h = cJSON_GetObjectItem (m, "history");
  ck_assert_int_eq (cJSON_GetArraySize (h), 4);
  ck_assert_str_eq (cJSON_GetObjectItem (cJSON_GetArrayItem (h, 2), "created_by")->valuestring, "RUN x");
  ck_assert_str_eq (cJSON_GetObjectItem (cJSON_GetArrayItem (h, 3), "comment")->valuestring,
                    "buildkit.exporter.image.v0");
  cJSON_Delete (m);
  free (text);
  image_config_free (c);

  /* three non-empty entries for one layer: the later ones become empty */
  const char *one = "{\"rootfs\":{\"diff_ids\":[\"sha256:a\"]},\"config\":{}}";
  ck_assert_int_eq (image_config_parse ("{\"history\":[{\"created_by\":\"a\"},{\"created_by\":\"b\"},"
                                        "{\"created_by\":\"c\"}]}",
                                        &c, &err),
                    0);
  text = image_config_merge (one, c);
  m = cJSON_Parse (text);
  h = cJSON_GetObjectItem (m, "history");
  ck_assert_int_eq (cJSON_GetArraySize (h), 3);
  ck_assert (!cJSON_IsTrue (cJSON_GetObjectItem (cJSON_GetArrayItem (h, 0), "empty_layer")));
  ck_assert (cJSON_IsTrue (cJSON_GetObjectItem (cJSON_GetArrayItem (h, 1), "empty_layer")));
  ck_assert (cJSON_IsTrue (cJSON_GetObjectItem (cJSON_GetArrayItem (h, 2), "empty_layer")));
  cJSON_Delete (m);
  free (text);
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
  tcase_add_test (tc, config_lays_over_the_image_with_history_fitted_to_its_layers);
  tcase_add_test (tc, bad_configs_are_400_naming_the_field);
  suite_add_tcase (s, tc);
  return s;
}
