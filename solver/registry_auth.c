/* registry_auth.c — X-Registry-Config (base64url JSON map registry ->
 * AuthConfig) and X-Registry-Auth (one AuthConfig) to an auth.json:
 * {"auths": {"<registry>": {"auth": base64("user:password")}}}. */
#define _GNU_SOURCE
#include "solver/registry_auth.h"

#include <string.h>

#include "common/cjson.h"
#include "common/limits.h"

static cJSON *
decode_header (const char *name, const char *value, ps_error **err)
{
  if (strlen (value) > PS_MAX_PARAM_JSON)
    {
      ps_error_set (err, 400, "%s is larger than %d bytes", name, PS_MAX_PARAM_JSON);
      return NULL;
    }
  cleanup_free unsigned char *raw = NULL;
  size_t rawlen = 0;
  if (ps_base64_decode (value, &raw, &rawlen) < 0)
    {
      ps_error_set (err, 400, "%s is not valid base64", name);
      return NULL;
    }
  cJSON *j = cJSON_ParseWithLength ((const char *) raw, rawlen);
  if (j == NULL)
    ps_error_set (err, 400, "%s is not valid base64-encoded JSON", name);
  return j;
}

/* One AuthConfig {"username","password","auth","identitytoken","serveraddress"}
   to the auth.json entry; returns false when it holds no credential. */
static bool
add_entry (cJSON *auths, const char *registry, const cJSON *cfg)
{
  if (!cJSON_IsObject (cfg))
    return false;
  const cJSON *user = cJSON_GetObjectItemCaseSensitive (cfg, "username");
  const cJSON *pass = cJSON_GetObjectItemCaseSensitive (cfg, "password");
  const cJSON *auth = cJSON_GetObjectItemCaseSensitive (cfg, "auth");
  const cJSON *token = cJSON_GetObjectItemCaseSensitive (cfg, "identitytoken");
  const cJSON *server = cJSON_GetObjectItemCaseSensitive (cfg, "serveraddress");
  if (registry == NULL || *registry == '\0')
    registry = cJSON_IsString (server) ? server->valuestring : NULL;
  if (registry == NULL || *registry == '\0')
    return false;
  /* Docker Hub's legacy key. */
  if (strstr (registry, "index.docker.io") != NULL)
    registry = "docker.io";
  else if (ps_str_has_prefix (registry, "https://"))
    registry += 8;
  else if (ps_str_has_prefix (registry, "http://"))
    registry += 7;

  cJSON *entry = cJSON_CreateObject ();
  if (cJSON_IsString (auth) && *auth->valuestring)
    cJSON_AddStringToObject (entry, "auth", auth->valuestring);
  else if (cJSON_IsString (user) && *user->valuestring)
    {
      cleanup_free char *pair = xasprintf ("%s:%s", user->valuestring,
                                           cJSON_IsString (pass) ? pass->valuestring : "");
      cleanup_free char *b64 = ps_base64_encode (pair, strlen (pair));
      cJSON_AddStringToObject (entry, "auth", b64);
    }
  if (cJSON_IsString (token) && *token->valuestring)
    cJSON_AddStringToObject (entry, "identitytoken", token->valuestring);
  if (cJSON_GetArraySize (entry) == 0)
    {
      cJSON_Delete (entry);
      return false;
    }
  cleanup_free char *key = xstrndup (registry, strcspn (registry, "/"));
  cJSON_DeleteItemFromObjectCaseSensitive (auths, key);
  cJSON_AddItemToObject (auths, key, entry);
  return true;
}

int
registry_auth_write (const char *x_registry_config, const char *x_registry_auth, const char *path,
                     ps_error **err)
{
  cleanup_cjson cJSON *root = cJSON_CreateObject ();
  cJSON *auths = cJSON_AddObjectToObject (root, "auths");
  int n = 0;

  if (x_registry_config && *x_registry_config)
    {
      cleanup_cjson cJSON *map = decode_header ("X-Registry-Config", x_registry_config, err);
      if (map == NULL)
        return -1;
      if (!cJSON_IsObject (map) && !cJSON_IsNull (map))
        return ps_error_set (err, 400, "X-Registry-Config must be a JSON object");
      const cJSON *it;
      cJSON_ArrayForEach (it, map)
        n += add_entry (auths, it->string, it);
    }
  else if (x_registry_auth && *x_registry_auth)
    {
      cleanup_cjson cJSON *cfg = decode_header ("X-Registry-Auth", x_registry_auth, err);
      if (cfg == NULL)
        return -1;
      /* Either one AuthConfig or, as podman-remote sends, a map of them. */
      if (cJSON_GetObjectItemCaseSensitive (cfg, "username") || cJSON_GetObjectItemCaseSensitive (cfg, "auth")
          || cJSON_GetObjectItemCaseSensitive (cfg, "identitytoken"))
        n += add_entry (auths, NULL, cfg);
      else
        {
          const cJSON *it;
          cJSON_ArrayForEach (it, cfg)
            n += add_entry (auths, it->string, it);
        }
    }
  if (n == 0)
    return 0;
  cleanup_free char *text = cJSON_PrintUnformatted (root);
  if (ps_write_file (path, text, strlen (text), 0600, err) < 0)
    return ps_error_wrap (err, "write registry credentials");
  return 1;
}
