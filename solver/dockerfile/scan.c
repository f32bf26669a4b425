/* scan.c — the Dockerfile loader, and FROM images, secret and ssh ids out of a
 * Dockerfile's text (see scan.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/scan.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/limits.h"
#include "solver/context.h"

bool
dockerfile_from_images (const char *dockerfile, ps_strv *images)
{
  cleanup_free char *copy = xstrdup (dockerfile);
  ps_strv stages = { 0 };
  bool all_known = true;
  char *save = NULL;
  for (char *line = strtok_r (copy, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
    {
      while (isspace ((unsigned char) *line))
        line++;
      if (strncasecmp (line, "FROM", 4) != 0 || !isspace ((unsigned char) line[4]))
        continue;
      char *tsave = NULL, *image = NULL;
      for (char *tok = strtok_r (line + 4, " \t\r", &tsave); tok; tok = strtok_r (NULL, " \t\r", &tsave))
        {
          if (ps_str_has_prefix (tok, "--"))
            continue; /* --platform=... */
          if (image == NULL)
            image = tok;
          else if (strcasecmp (tok, "AS") == 0)
            {
              char *stage = strtok_r (NULL, " \t\r", &tsave);
              if (stage)
                ps_strv_push (&stages, stage);
              break;
            }
        }
      if (image == NULL || strchr (image, '$'))
        {
          all_known = false;
          continue;
        }
      bool is_stage = strcmp (image, "scratch") == 0;
      for (size_t i = 0; i < stages.n; i++)
        is_stage |= strcasecmp (stages.v[i], image) == 0;
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

/* Each --mount=... flag's spec up to white space or a line continuation;
   the ids of those of type `type`.  A secret's id defaults to the base name
   of target= / dst=, an ssh mount's to "default". */
static void
mount_ids (const char *dockerfile, const char *type, ps_strv *ids)
{
  bool secret = strcmp (type, "secret") == 0;
  for (const char *p = dockerfile; (p = strstr (p, "--mount=")) != NULL; p += 8)
    {
      const char *end = p + 8 + strcspn (p + 8, " \t\n\\");
      cleanup_free char *spec = xstrndup (p + 8, (size_t) (end - p - 8));
      cleanup_free char *id = NULL;
      bool typed = false;
      char *save = NULL;
      for (char *f = strtok_r (spec, ",", &save); f; f = strtok_r (NULL, ",", &save))
        {
          if (ps_str_has_prefix (f, "type="))
            typed = strcmp (f + 5, type) == 0;
          else if (ps_str_has_prefix (f, "id="))
            {
              free (id);
              id = xstrdup (f + 3);
            }
          else if (secret && id == NULL && (ps_str_has_prefix (f, "target=") || ps_str_has_prefix (f, "dst=")))
            {
              const char *t = strchr (f, '=') + 1;
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
dockerfile_secret_ids (const char *dockerfile, ps_strv *ids)
{
  mount_ids (dockerfile, "secret", ids);
}

void
dockerfile_ssh_ids (const char *dockerfile, ps_strv *ids)
{
  mount_ids (dockerfile, "ssh", ids);
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
