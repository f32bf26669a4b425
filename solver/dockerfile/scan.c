/* scan.c — the Dockerfile loader, and FROM images, secret and ssh ids out of a
 * Dockerfile's text (see scan.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/scan.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/limits.h"
#include "solver/context.h"
#include "solver/dockerfile/parse.h"

/* The Dockerfile's structure, or NULL when it does not parse (the build
   reports that itself). */
static dockerfile *
parse_quietly (const char *text)
{
  dockerfile *df = NULL;
  ps_error *err = NULL;
  if (dockerfile_parse (text, strlen (text), "Dockerfile", &df, &err) < 0)
    {
      ps_error_free (err);
      return NULL;
    }
  return df;
}

bool
dockerfile_from_images (const char *text, ps_strv *images)
{
  cleanup_dockerfile dockerfile *df = parse_quietly (text);
  if (df == NULL)
    return false;
  ps_strv stages = { 0 };
  bool all_known = true;
  for (size_t i = 0; i < df->n_insns; i++)
    {
      const struct df_instruction *in = &df->insns[i];
      if (strcmp (in->keyword, "FROM") != 0)
        continue;
      /* FROM image [AS name]; the flags (--platform) are split off. */
      cleanup_free char *args = xstrdup (in->args);
      char *save = NULL;
      char *image = strtok_r (args, " \t", &save);
      char *as = image ? strtok_r (NULL, " \t", &save) : NULL;
      char *stage = as && strcasecmp (as, "AS") == 0 ? strtok_r (NULL, " \t", &save) : NULL;
      if (stage)
        ps_strv_push (&stages, stage);
      if (image == NULL || strchr (image, '$'))
        {
          all_known = false;
          continue;
        }
      bool is_stage = strcmp (image, "scratch") == 0;
      for (size_t k = 0; k < stages.n; k++)
        is_stage |= strcasecmp (stages.v[k], image) == 0 && !(stage && k == stages.n - 1);
      if (!is_stage)
        ps_strv_push (images, image);
    }
  ps_strv_free (&stages);
  return all_known;
}

static void
push_once (ps_strv *v, const char *s)
{
  for (size_t i = 0; i < v->n; i++)
    if (strcmp (v->v[i], s) == 0)
      return;
  ps_strv_push (v, s);
}

/* The ids of every RUN --mount of type `type` (each --mount flag a CSV of
   key=value fields).  A secret's id defaults to the base name of target= /
   dst=, an ssh mount's to "default". */
static void
mount_ids (const char *text, const char *type, ps_strv *ids)
{
  cleanup_dockerfile dockerfile *df = parse_quietly (text);
  if (df == NULL)
    return;
  bool secret = strcmp (type, "secret") == 0;
  for (size_t i = 0; i < df->n_insns; i++)
    for (size_t m = 0; m < df->insns[i].n_flags; m++)
      {
        const struct df_flag *f = &df->insns[i].flags[m];
        if (strcmp (df->insns[i].keyword, "RUN") != 0 || strcmp (f->name, "mount") != 0 || f->value == NULL)
          continue;
        cleanup_free char *spec = xstrdup (f->value);
        cleanup_free char *id = NULL;
        bool typed = false;
        char *save = NULL;
        for (char *kv = strtok_r (spec, ",", &save); kv; kv = strtok_r (NULL, ",", &save))
          {
            if (ps_str_has_prefix (kv, "type="))
              typed = strcmp (kv + 5, type) == 0;
            else if (ps_str_has_prefix (kv, "id="))
              {
                free (id);
                id = xstrdup (kv + 3);
              }
            else if (secret && id == NULL && (ps_str_has_prefix (kv, "target=") || ps_str_has_prefix (kv, "dst=")))
              {
                const char *t = strchr (kv, '=') + 1;
                const char *base = strrchr (t, '/');
                id = xstrdup (base ? base + 1 : t);
              }
          }
        if (!typed)
          continue;
        if (!secret && (id == NULL || *id == '\0'))
          {
            free (id);
            id = xstrdup ("default");
          }
        if (id == NULL || *id == '\0' || strchr (id, '/'))
          continue;
        push_once (ids, id);
      }
}

void
dockerfile_secret_ids (const char *text, ps_strv *ids)
{
  mount_ids (text, "secret", ids);
}

void
dockerfile_ssh_ids (const char *text, ps_strv *ids)
{
  mount_ids (text, "ssh", ids);
}

/* ---- the Dockerfile loader ----------------------------------------------------------- */

int
dockerfile_find (const char *dir, const char *const *names, size_t n, const char **found, ps_error **err)
{
  for (size_t i = 0; i < n; i++)
    {
      int r = context_file (dir, names[i], err);
      if (r < 0)
        return -1;
      if (r == 1)
        {
          *found = names[i];
          return 1;
        }
    }
  return 0;
}

int
dockerfile_read (const char *path, char **text, size_t *len, char digest[65], ps_error **err)
{
  cleanup_free char *bytes = NULL;
  size_t n = 0;
  if (ps_read_file (path, PS_MAX_DOCKERFILE_BYTES, &bytes, &n, err) < 0)
    return -1;
  if (digest)
    ps_sha256_hex (bytes, n, digest);
  if (len)
    *len = n;
  if (text)
    *text = steal_pointer (&bytes);
  return 0;
}
