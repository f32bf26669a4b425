/* image_config.c — containerimage.config: check it, lay it over an LLB
 * result's config and write that image (see image_config.h). */
#define _GNU_SOURCE
#include "solver/image_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "solver/buildah.h"
#include "solver/cache_prune.h"

/* Bump when what a configured image holds for the same input changes. */
#define IMAGE_CONFIG_CACHE_VERSION "podsolve-image-config-v2"

struct image_config
{
  char *text;
  char *architecture, *os, *variant, *author; /* NULL = keep */
  char *working_dir, *user, *stop_signal;
  bool has_env, has_cmd, has_entrypoint, has_labels, has_ports, has_volumes;
  ps_strv env;        /* NAME=value */
  ps_strv cmd, entrypoint;
  ps_strv labels;     /* key=value */
  ps_strv ports;      /* 8080/tcp */
  ps_strv volumes;    /* /data */
};

void
image_config_free (struct image_config *c)
{
  if (c == NULL)
    return;
  free (c->text);
  free (c->architecture);
  free (c->os);
  free (c->variant);
  free (c->author);
  free (c->working_dir);
  free (c->user);
  free (c->stop_signal);
  ps_strv_free (&c->env);
  ps_strv_free (&c->cmd);
  ps_strv_free (&c->entrypoint);
  ps_strv_free (&c->labels);
  ps_strv_free (&c->ports);
  ps_strv_free (&c->volumes);
  free (c);
}

const char *
image_config_text (const struct image_config *c)
{
  return c->text;
}

/* ---- checking ------------------------------------------------------------------ */

static int
take_string (const cJSON *v, const char *field, char **out, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (!cJSON_IsString (v))
    return ps_error_set (err, 400, "%s: expected a string", field);
  *out = xstrdup (v->valuestring);
  return 0;
}

static int
take_strings (const cJSON *v, const char *field, bool *has, ps_strv *out, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (!cJSON_IsArray (v))
    return ps_error_set (err, 400, "%s: expected a list of strings", field);
  int i = 0;
  const cJSON *x;
  cJSON_ArrayForEach (x, v)
    {
      if (!cJSON_IsString (x))
        return ps_error_set (err, 400, "%s[%d]: expected a string", field, i);
      ps_strv_push (out, x->valuestring);
      i++;
    }
  *has = true;
  return 0;
}

static bool
valid_port (const char *p)
{
  char *end = NULL;
  long n = strtol (p, &end, 10);
  if (end == p || p[0] < '0' || p[0] > '9' || n < 1 || n > 65535)
    return false;
  return *end == '\0' || strcmp (end, "/tcp") == 0 || strcmp (end, "/udp") == 0 || strcmp (end, "/sctp") == 0;
}

/* The keys of an object like {"8080/tcp":{}}: each value an empty object. */
static int
take_set (const cJSON *v, const char *field, bool (*ok) (const char *), const char *what, bool *has, ps_strv *out,
          ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (!cJSON_IsObject (v))
    return ps_error_set (err, 400, "%s: expected an object like {\"%s\":{}}", field, what);
  const cJSON *x;
  cJSON_ArrayForEach (x, v)
    {
      if (!ok (x->string))
        return ps_error_set (err, 400, "%s: \"%s\" is not %s", field, x->string,
                             ok == valid_port ? "a port (1-65535, optionally /tcp, /udp or /sctp)"
                                              : "an absolute path (not ending in '-')");
      if (!cJSON_IsObject (x) && !cJSON_IsNull (x))
        return ps_error_set (err, 400, "%s.%s: expected {}", field, x->string);
      ps_strv_push (out, x->string);
    }
  *has = true;
  return 0;
}

/* A volume ending in '-' is refused: `buildah config` read "PATH-" as
   "remove PATH" when configs were applied with it, and podman/buildah
   tools still do; kept so the same config is valid everywhere. */
static bool
valid_volume (const char *p)
{
  return p[0] == '/' && !ps_str_has_suffix (p, "-");
}

static int
parse_config_object (struct image_config *c, const cJSON *cfg, ps_error **err)
{
  if (cJSON_IsNull (cfg))
    return 0;
  if (!cJSON_IsObject (cfg))
    return ps_error_set (err, 400, "config: expected an object");
  const cJSON *f;
  cJSON_ArrayForEach (f, cfg)
    {
      const char *k = f->string;
      cleanup_free char *field = xasprintf ("config.%s", k);
      int r = 0;
      if (strcmp (k, "Env") == 0)
        {
          r = take_strings (f, field, &c->has_env, &c->env, err);
          for (size_t i = 0; r == 0 && i < c->env.n; i++)
            if (strchr (c->env.v[i], '=') == NULL || c->env.v[i][0] == '=')
              r = ps_error_set (err, 400, "config.Env[%zu]: \"%s\" is not NAME=value", i, c->env.v[i]);
        }
      else if (strcmp (k, "Cmd") == 0)
        r = take_strings (f, field, &c->has_cmd, &c->cmd, err);
      else if (strcmp (k, "Entrypoint") == 0)
        r = take_strings (f, field, &c->has_entrypoint, &c->entrypoint, err);
      else if (strcmp (k, "WorkingDir") == 0)
        r = take_string (f, field, &c->working_dir, err);
      else if (strcmp (k, "User") == 0)
        r = take_string (f, field, &c->user, err);
      else if (strcmp (k, "StopSignal") == 0)
        r = take_string (f, field, &c->stop_signal, err);
      else if (strcmp (k, "Labels") == 0)
        {
          if (cJSON_IsNull (f))
            continue;
          if (!cJSON_IsObject (f))
            return ps_error_set (err, 400, "config.Labels: expected an object of strings");
          const cJSON *l;
          cJSON_ArrayForEach (l, f)
            {
              if (!cJSON_IsString (l))
                return ps_error_set (err, 400, "config.Labels.%s: expected a string", l->string);
              if (l->string[0] == '\0' || strchr (l->string, '='))
                return ps_error_set (err, 400, "config.Labels: \"%s\" is not a label name", l->string);
              ps_strv_pushf (&c->labels, "%s=%s", l->string, l->valuestring);
            }
          c->has_labels = true;
        }
      else if (strcmp (k, "ExposedPorts") == 0)
        r = take_set (f, field, valid_port, "8080/tcp", &c->has_ports, &c->ports, err);
      else if (strcmp (k, "Volumes") == 0)
        r = take_set (f, field, valid_volume, "/data", &c->has_volumes, &c->volumes, err);
      else if (strcmp (k, "ArgsEscaped") == 0)
        {
          if (!cJSON_IsBool (f) && !cJSON_IsNull (f))
            r = ps_error_set (err, 400, "config.ArgsEscaped: expected true or false");
        }
      /* Docker's fields, which BuildKit keeps in the config it exports
         (HEALTHCHECK, SHELL, ONBUILD): carried as the frontend gave them. */
      else if (strcmp (k, "Healthcheck") == 0)
        {
          if (!cJSON_IsObject (f) && !cJSON_IsNull (f))
            r = ps_error_set (err, 400, "config.Healthcheck: expected an object like {\"Test\":[\"CMD\",...]}");
        }
      else if (strcmp (k, "Shell") == 0 || strcmp (k, "OnBuild") == 0)
        {
          bool has = false;
          ps_strv tmp = { 0 };
          r = take_strings (f, field, &has, &tmp, err);
          ps_strv_free (&tmp);
        }
      else if (!cJSON_IsNull (f))
        r = ps_error_set (err, 400, "config.%s is not supported in an image config (supported: Env, Cmd, "
                                    "Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal, "
                                    "ArgsEscaped, Healthcheck, Shell, OnBuild)", k);
      if (r < 0)
        return -1;
    }
  return 0;
}

int
image_config_parse (const char *json, struct image_config **out, ps_error **err)
{
  cJSON *root = cJSON_Parse (json);
  if (root == NULL || !cJSON_IsObject (root))
    {
      cJSON_Delete (root);
      return ps_error_set (err, 400, "not a JSON object (an OCI image config: {\"config\":{\"Env\":[...],"
                                     "\"Cmd\":[...]}})");
    }
  struct image_config *c = xcalloc (1, sizeof *c);
  c->text = xstrdup (json);
  int r = 0;
  const cJSON *f;
  cJSON_ArrayForEach (f, root)
    {
      const char *k = f->string;
      if (strcmp (k, "architecture") == 0)
        r = take_string (f, k, &c->architecture, err);
      else if (strcmp (k, "os") == 0)
        r = take_string (f, k, &c->os, err);
      else if (strcmp (k, "variant") == 0)
        r = take_string (f, k, &c->variant, err);
      else if (strcmp (k, "author") == 0)
        r = take_string (f, k, &c->author, err);
      else if (strcmp (k, "config") == 0)
        r = parse_config_object (c, f, err);
      else if (strcmp (k, "rootfs") && strcmp (k, "history") && strcmp (k, "created"))
        r = ps_error_set (err, 400, "unknown field \"%s\" (supported: architecture, os, variant, author, config, "
                                    "history, created; rootfs is the image's)", k);
      if (r < 0)
        break;
    }
  cJSON_Delete (root);
  if (r < 0)
    {
      image_config_free (c);
      return -1;
    }
  *out = c;
  return 0;
}

/* ---- applying ------------------------------------------------------------------ */

/* BuildKit's normalizeLayersAndHistory: `history` (the frontend's) gets
   exactly one non-empty entry per layer of the image: entries past the
   layers become empty ones, layers past the entries get an entry of their
   own. */
static cJSON *
normalized_history (const cJSON *history, int layers)
{
  cJSON *out = cJSON_CreateArray ();
  int seen = 0;
  const cJSON *h;
  cJSON_ArrayForEach (h, history)
    {
      cJSON *copy = cJSON_Duplicate (h, true);
      if (!cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (copy, "empty_layer")))
        {
          if (seen < layers)
            seen++;
          else
            {
              cJSON_DeleteItemFromObjectCaseSensitive (copy, "empty_layer");
              cJSON_AddTrueToObject (copy, "empty_layer");
            }
        }
      cJSON_AddItemToArray (out, copy);
    }
  for (; seen < layers; seen++)
    {
      cJSON *e = cJSON_CreateObject ();
      cJSON_AddStringToObject (e, "created_by", "");
      cJSON_AddStringToObject (e, "comment", "buildkit.exporter.image.v0");
      cJSON_AddItemToArray (out, e);
    }
  return out;
}

static void
set_item (cJSON *obj, const char *key, const cJSON *value)
{
  cJSON_DeleteItemFromObjectCaseSensitive (obj, key);
  cJSON_AddItemToObject (obj, key, cJSON_Duplicate (value, true));
}

char *
image_config_merge (const char *image_config, const struct image_config *c)
{
  const char *frontend_config = c->text;
  cJSON *img = cJSON_Parse (image_config), *fe = cJSON_Parse (frontend_config);
  if (!cJSON_IsObject (img))
    {
      cJSON_Delete (img);
      img = cJSON_CreateObject ();
    }
  const cJSON *f;
  cJSON_ArrayForEach (f, fe)
    {
      const char *k = f->string;
      if (cJSON_IsNull (f) || strcmp (k, "rootfs") == 0)
        continue;
      if (strcmp (k, "config") == 0)
        {
          cJSON *cfg = cJSON_GetObjectItemCaseSensitive (img, "config");
          if (!cJSON_IsObject (cfg))
            {
              cJSON_DeleteItemFromObjectCaseSensitive (img, "config");
              cfg = cJSON_AddObjectToObject (img, "config");
            }
          const cJSON *x;
          cJSON_ArrayForEach (x, f)
            if (!cJSON_IsNull (x))
              set_item (cfg, x->string, x);
        }
      else if (strcmp (k, "history") == 0)
        {
          const cJSON *diff_ids = cJSON_GetObjectItemCaseSensitive (cJSON_GetObjectItemCaseSensitive (img, "rootfs"),
                                                                    "diff_ids");
          cJSON *h = normalized_history (f, cJSON_GetArraySize (diff_ids));
          cJSON_DeleteItemFromObjectCaseSensitive (img, "history");
          cJSON_AddItemToObject (img, "history", h);
        }
      else
        set_item (img, k, f);
    }
  char *text = cJSON_PrintUnformatted (img);
  cJSON_Delete (img);
  cJSON_Delete (fe);
  return text;
}

/* Give image `image_id` the config `text` (its layers untouched): the image
   goes out to a dir: layout uncompressed, its config blob is replaced, and
   skopeo brings it back under the new config's digest, which is the new
   image's ID; its layers are storage's own (found again by their
   uncompressed digest), so only the metadata is written.  buildah has no
   command that sets a whole config, and `buildah config` + commit would
   add a layer and a history entry of its own. */
static int
rewrite_config (const char *image_id, const struct image_config *c, const char *state_dir, char **out_id,
                ps_error **err)
{
  cleanup_free char *dir = xasprintf ("%s/tmp-config-XXXXXX", state_dir);
  if (mkdtemp (dir) == NULL)
    return ps_error_set_errno (err, 500, errno, "mkdtemp %s", dir);
  int r = -1;
  char *manifest_text = NULL, *config_text = NULL, *new_config = NULL, *new_manifest = NULL;
  size_t len = 0;
  cJSON *manifest = NULL;
  /* declared before the first goto: a jump may not skip a cleanup variable */
  cleanup_free char *old_path = NULL, *new_path = NULL, *new_digest = NULL;
  char hex[65];
  cleanup_free char *dest = xasprintf ("dir:%s", dir), *mpath = xasprintf ("%s/manifest.json", dir);
  const char *push[] = { "push", "--quiet", "--disable-compression", "--format=oci", image_id, dest, NULL };
  if (buildah_call (push, NULL, err) < 0)
    {
      ps_error_wrap (err, "buildah push %.12s to a dir: layout", image_id);
      goto out;
    }
  if (ps_read_file (mpath, 1 << 24, &manifest_text, &len, err) < 0)
    goto out;
  manifest = cJSON_Parse (manifest_text);
  cJSON *cd = cJSON_GetObjectItemCaseSensitive (manifest, "config");
  const cJSON *digest = cJSON_GetObjectItemCaseSensitive (cd, "digest");
  if (!cJSON_IsString (digest) || strncmp (digest->valuestring, "sha256:", 7) != 0)
    {
      ps_error_set (err, 500, "the manifest buildah pushed has no config digest");
      goto out;
    }
  old_path = xasprintf ("%s/%s", dir, digest->valuestring + 7);
  if (ps_read_file (old_path, 1 << 24, &config_text, &len, err) < 0)
    goto out;
  new_config = image_config_merge (config_text, c);
  ps_sha256_hex (new_config, strlen (new_config), hex);
  new_path = xasprintf ("%s/%s", dir, hex);
  if (ps_write_file (new_path, new_config, strlen (new_config), 0644, err) < 0)
    goto out;
  unlink (old_path);
  new_digest = xasprintf ("sha256:%s", hex);
  cJSON_ReplaceItemInObjectCaseSensitive (cd, "digest", cJSON_CreateString (new_digest));
  cJSON_ReplaceItemInObjectCaseSensitive (cd, "size", cJSON_CreateNumber ((double) strlen (new_config)));
  new_manifest = cJSON_PrintUnformatted (manifest);
  if (ps_write_file (mpath, new_manifest, strlen (new_manifest), 0644, err) < 0)
    goto out;
  r = buildah_copy_into_storage (dest, hex, "the configured image", err);
  if (r == 0)
    *out_id = xstrdup (hex);
out:
  cJSON_Delete (manifest);
  free (manifest_text);
  free (config_text);
  free (new_config);
  free (new_manifest);
  ps_rm_rf (dir, NULL);
  return r;
}

int
image_config_apply (const struct image_config *c, const char *image_id, const char *state_dir, char **out_id,
                    bool *cached, ps_error **err)
{
  cleanup_free char *material = xasprintf ("%s\n%s\n%s", IMAGE_CONFIG_CACHE_VERSION, image_id, c->text);
  char key[65];
  ps_sha256_hex (material, strlen (material), key);
  cleanup_free char *record = xasprintf ("%s/llb-results/%s", state_dir, key);
  *cached = false;
  if ((*out_id = cache_record_read (record)) != NULL)
    {
      *cached = true;
      return 0;
    }
  cleanup_free char *id = NULL;
  if (rewrite_config (image_id, c, state_dir, &id, err) < 0)
    return -1;
  cache_record_write (record, id);
  *out_id = steal_pointer (&id);
  return 0;
}
