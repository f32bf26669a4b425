/* image_config.c — containerimage.config: check it, turn it into
 * `buildah config` options, apply it to an LLB result (see image_config.h). */
#define _GNU_SOURCE
#include "solver/image_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "solver/buildah.h"
#include "solver/cache_prune.h"

/* Bump when what a configured image holds for the same input changes. */
#define IMAGE_CONFIG_CACHE_VERSION "podsolve-image-config-v1"

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

/* buildah config reads "PATH-" as "remove PATH": a volume so named could
   not be set. */
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
      else if (!cJSON_IsNull (f))
        r = ps_error_set (err, 400, "config.%s is not supported in an OCI image config (supported: Env, Cmd, "
                                    "Entrypoint, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal, "
                                    "ArgsEscaped)", k);
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
        r = ps_error_set (err, 400, "unknown field \"%s\" (supported: architecture, os, variant, author, config; "
                                    "rootfs, history and created are recomputed)", k);
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

static void
push_json_array (ps_strv *args, const char *opt, const ps_strv *v)
{
  cJSON *a = cJSON_CreateArray ();
  for (size_t i = 0; i < v->n; i++)
    cJSON_AddItemToArray (a, cJSON_CreateString (v->v[i]));
  char *text = cJSON_PrintUnformatted (a);
  cJSON_Delete (a);
  ps_strv_pushf (args, "%s=%s", opt, text);
  cJSON_free (text);
}

void
image_config_buildah_args (const struct image_config *c, const cJSON *current, ps_strv *args)
{
  const cJSON *x;
  if (c->architecture)
    ps_strv_pushf (args, "--arch=%s", c->architecture);
  if (c->os)
    ps_strv_pushf (args, "--os=%s", c->os);
  if (c->variant)
    ps_strv_pushf (args, "--variant=%s", c->variant);
  if (c->author)
    ps_strv_pushf (args, "--author=%s", c->author);
  /* A list given replaces the image's: first "NAME-" (buildah's "remove")
     for each entry it has, then the new entries, in one call. */
  if (c->has_env)
    {
      cJSON_ArrayForEach (x, cJSON_GetObjectItemCaseSensitive (current, "Env"))
        if (cJSON_IsString (x))
          ps_strv_pushf (args, "--env=%.*s-", (int) strcspn (x->valuestring, "="), x->valuestring);
      for (size_t i = 0; i < c->env.n; i++)
        ps_strv_pushf (args, "--env=%s", c->env.v[i]);
    }
  if (c->has_labels)
    {
      cJSON_ArrayForEach (x, cJSON_GetObjectItemCaseSensitive (current, "Labels"))
        ps_strv_pushf (args, "--label=%s-", x->string);
      for (size_t i = 0; i < c->labels.n; i++)
        ps_strv_pushf (args, "--label=%s", c->labels.v[i]);
    }
  if (c->has_ports)
    {
      cJSON_ArrayForEach (x, cJSON_GetObjectItemCaseSensitive (current, "ExposedPorts"))
        ps_strv_pushf (args, "--port=%s-", x->string);
      for (size_t i = 0; i < c->ports.n; i++)
        ps_strv_pushf (args, "--port=%s", c->ports.v[i]);
    }
  if (c->has_volumes)
    {
      cJSON_ArrayForEach (x, cJSON_GetObjectItemCaseSensitive (current, "Volumes"))
        ps_strv_pushf (args, "--volume=%s-", x->string);
      for (size_t i = 0; i < c->volumes.n; i++)
        ps_strv_pushf (args, "--volume=%s", c->volumes.v[i]);
    }
  /* buildah takes a JSON array as the exec form; [] clears. */
  if (c->has_entrypoint)
    push_json_array (args, "--entrypoint", &c->entrypoint);
  if (c->has_cmd)
    push_json_array (args, "--cmd", &c->cmd);
  if (c->working_dir)
    ps_strv_pushf (args, "--workingdir=%s", c->working_dir);
  if (c->user)
    ps_strv_pushf (args, "--user=%s", c->user);
  if (c->stop_signal)
    ps_strv_pushf (args, "--stop-signal=%s", c->stop_signal);
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

  struct buildah_wc w;
  if (buildah_wc_from (image_id, NULL, false, &w, err) < 0)
    return ps_error_wrap (err, "working container from %.12s", image_id);
  cleanup_free char *inspect = NULL;
  const char *insp[] = { "inspect", "--type=container", w.ctr, NULL };
  int r = buildah_call (insp, &inspect, err);
  ps_strv args = { 0 };
  if (r == 0)
    {
      cJSON *root = cJSON_Parse (inspect);
      const cJSON *current = cJSON_GetObjectItemCaseSensitive (cJSON_GetObjectItemCaseSensitive (root, "OCIv1"),
                                                               "config");
      ps_strv_push (&args, "config");
      image_config_buildah_args (c, current, &args);
      ps_strv_push (&args, w.ctr);
      cJSON_Delete (root);
      r = buildah_call ((const char *const *) args.v, NULL, err);
    }
  cleanup_free char *id = NULL;
  if (r == 0)
    {
      /* No io.buildah.version label of our own: the labels are the
         frontend's. */
      const char *opts[] = { "--identity-label=false", NULL };
      r = buildah_wc_commit (&w, opts, false, &id, err);
    }
  buildah_wc_remove (&w);
  ps_strv_free (&args);
  if (r < 0)
    return -1;
  cache_record_write (record, id);
  *out_id = steal_pointer (&id);
  return 0;
}
