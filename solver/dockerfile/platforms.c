/* platforms.c — the platform checks of a Dockerfile build (platforms.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/platforms.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "solver/buildah.h"
#include "solver/dockerfile/parse.h"
#include "solver/worker.h"

char *
platform_normalize (const char *p)
{
  char *s = xstrdup (p ? p : "");
  for (char *c = s; *c; c++)
    *c = (char) tolower ((unsigned char) *c);
  char *arch = strchr (s, '/');
  if (arch == NULL)
    return s;
  *arch++ = '\0';
  char *variant = strchr (arch, '/');
  if (variant)
    *variant++ = '\0';
  const char *goarch = worker_go_arch (arch);
  char *out;
  if (variant && *variant && !(strcmp (goarch, "arm64") == 0 && strcmp (variant, "v8") == 0))
    out = xasprintf ("%s/%s/%s", s, goarch, variant);
  else
    out = xasprintf ("%s/%s", s, goarch);
  free (s);
  return out;
}

bool
platform_equal (const char *a, const char *b)
{
  cleanup_free char *na = platform_normalize (a);
  cleanup_free char *nb = platform_normalize (b);
  /* os/arch must match; a variant counts only when both name one. */
  char *va = strchr (na, '/') ? strchr (strchr (na, '/') + 1, '/') : NULL;
  char *vb = strchr (nb, '/') ? strchr (strchr (nb, '/') + 1, '/') : NULL;
  bool variants_differ = va && vb && strcmp (va, vb) != 0;
  if (va)
    *va = '\0';
  if (vb)
    *vb = '\0';
  return strcmp (na, nb) == 0 && !variants_differ;
}

char *
platform_host (void)
{
  struct utsname u;
  uname (&u);
  return xasprintf ("linux/%s", worker_go_arch (u.machine));
}

char *
platform_of_image (const char *id)
{
  char *out = NULL;
  if (buildah_callv (&out, NULL, "inspect", "--type=image",
                     "--format={{.OCIv1.OS}}/{{.OCIv1.Architecture}}/{{.OCIv1.Variant}}", id, NULL)
      < 0)
    return NULL;
  out[strcspn (out, "\n")] = '\0';
  size_t n = strlen (out);
  if (n && out[n - 1] == '/')
    out[n - 1] = '\0';
  char *norm = platform_normalize (out);
  free (out);
  return norm;
}

/* ---- stages ------------------------------------------------------------------------- */

struct stage
{
  const char *name;     /* AS name, or NULL */
  const char *base;     /* the FROM image (or an earlier stage's name / index) */
  const char *platform; /* FROM --platform= value, or NULL */
  unsigned from_line;
  unsigned run_line;    /* first RUN, 0 if none */
  bool needed;
};

#define MAX_STAGES 64

/* The stage `ref` names (an AS name, case-insensitive, or an index), or -1. */
static int
stage_index (const struct stage *st, size_t n, const char *ref, size_t before)
{
  for (size_t i = 0; i < before && i < n; i++)
    if (st[i].name && strcasecmp (st[i].name, ref) == 0)
      return (int) i;
  char *end;
  long idx = strtol (ref, &end, 10);
  if (*ref && *end == '\0' && idx >= 0 && (size_t) idx < before)
    return (int) idx;
  return -1;
}

static void
mark_needed (struct stage *st, int i, int *deps[], size_t *n_deps)
{
  if (i < 0 || st[i].needed)
    return;
  st[i].needed = true;
  for (size_t d = 0; d < n_deps[i]; d++)
    mark_needed (st, deps[i][d], deps, n_deps);
}

/* The value of key `key` in a --mount's CSV (from=...), malloc'd, or NULL. */
static char *
mount_value (const char *csv, const char *key)
{
  size_t kl = strlen (key);
  for (const char *p = csv; p && *p;)
    {
      size_t len = strcspn (p, ",");
      if (len > kl && strncasecmp (p, key, kl) == 0 && p[kl] == '=')
        return xstrndup (p + kl + 1, len - kl - 1);
      p += len;
      if (*p == ',')
        p++;
    }
  return NULL;
}

/* The platform a stage builds for: the target's, the host's for
   $BUILDPLATFORM, a literal one as written; NULL when it comes from an
   ARG we do not evaluate. */
static char *
stage_platform (const struct stage *s, const char *target, const char *host)
{
  if (s->platform == NULL || *s->platform == '\0')
    return platform_normalize (target);
  if (strstr (s->platform, "BUILDPLATFORM"))
    return platform_normalize (host);
  if (strstr (s->platform, "TARGETPLATFORM"))
    return platform_normalize (target);
  if (strchr (s->platform, '$'))
    return NULL;
  return platform_normalize (s->platform);
}

static bool
can_run (const ps_strv *runnable, const char *platform)
{
  for (size_t i = 0; i < runnable->n; i++)
    if (platform_equal (runnable->v[i], platform))
      return true;
  return false;
}

/* What storage holds under `image` for `want`: 1 when an image (or a list
   entry) for it is there, 0 when the name is not in storage, -1 with
   *note when it is there for other platforms only. */
static int
local_base (const char *image, const char *want, char **note)
{
  cleanup_free char *found = NULL;
  const char *found_platform = NULL;
  if (buildah_callv (&found, NULL, "inspect", "--type=image",
                     "--format={{.FromImage}}|{{.OCIv1.OS}}/{{.OCIv1.Architecture}}/{{.OCIv1.Variant}}", image, NULL)
      == 0)
    {
      found[strcspn (found, "\n")] = '\0';
      char *bar = strchr (found, '|');
      if (bar)
        {
          *bar = '\0';
          size_t n = strlen (bar + 1);
          if (n && bar[n] == '/')
            bar[n] = '\0';
          found_platform = bar + 1;
          if (platform_equal (found_platform, want))
            return 1;
        }
    }
  /* A manifest list in storage: the entries it has. */
  cleanup_free char *json = NULL;
  if (buildah_callv (&json, NULL, "manifest", "inspect", image, NULL) == 0)
    {
      cJSON *doc = cJSON_Parse (json);
      const cJSON *mans = cJSON_GetObjectItemCaseSensitive (doc, "manifests");
      ps_buf have = { 0 };
      bool match = false;
      const cJSON *m;
      cJSON_ArrayForEach (m, mans)
      {
        const cJSON *pl = cJSON_GetObjectItemCaseSensitive (m, "platform");
        const cJSON *os = cJSON_GetObjectItemCaseSensitive (pl, "os");
        const cJSON *arch = cJSON_GetObjectItemCaseSensitive (pl, "architecture");
        const cJSON *var = cJSON_GetObjectItemCaseSensitive (pl, "variant");
        if (!cJSON_IsString (os) || !cJSON_IsString (arch))
          continue;
        cleanup_free char *p = cJSON_IsString (var) && *var->valuestring
                                   ? xasprintf ("%s/%s/%s", os->valuestring, arch->valuestring, var->valuestring)
                                   : xasprintf ("%s/%s", os->valuestring, arch->valuestring);
        match = match || platform_equal (p, want);
        ps_buf_printf (&have, "%s%s", have.len ? ", " : "", p);
      }
      cJSON_Delete (doc);
      if (match || have.len == 0)
        {
          ps_buf_free (&have);
          return match ? 1 : 0;
        }
      *note = xasprintf ("the manifest list %s in storage has %s, not %s", image, have.data, want);
      ps_buf_free (&have);
      return -1;
    }
  if (found_platform == NULL)
    return 0;
  *note = xasprintf ("the image %s in storage is %s only, not %s", found, found_platform, want);
  return -1;
}

int
platform_preflight (const struct dockerfile_build *b, const char *text, size_t len, const char *fname,
                    ps_strv *notes, ps_error **err)
{
  const struct build_options *o = &b->opts;
  if (o->platforms.n == 0 || text == NULL)
    return 0;
  cleanup_dockerfile dockerfile *df = NULL;
  if (dockerfile_parse (text, len, fname, &df, NULL) < 0)
    return 0; /* the dialect check says what is wrong */

  struct stage st[MAX_STAGES];
  int *deps[MAX_STAGES] = { 0 };
  size_t n_deps[MAX_STAGES] = { 0 };
  size_t n = 0;
  int ret = 0;
  memset (st, 0, sizeof st);
  for (size_t i = 0; i < df->n_insns; i++)
    {
      const struct df_instruction *in = &df->insns[i];
      if (strcmp (in->keyword, "FROM") == 0)
        {
          if (n == MAX_STAGES)
            goto out; /* too many to reason about: buildah decides */
          struct stage *s = &st[n++];
          s->from_line = in->line;
          s->platform = df_instruction_flag (in, "platform");
          /* "image [AS name]": the args hold both, split in place on a copy
             the dockerfile owns no longer needs. */
          char *args = in->args;
          size_t w = strcspn (args, " \t");
          const char *as = strcasestr (args + w, " as ");
          s->name = as ? as + 4 : NULL;
          while (s->name && isspace ((unsigned char) *s->name))
            s->name++;
          if (args[w])
            args[w] = '\0';
          s->base = args;
          int dep = stage_index (st, n, s->base, n - 1);
          if (dep >= 0)
            {
              deps[n - 1] = realloc (deps[n - 1], (n_deps[n - 1] + 1) * sizeof (int));
              deps[n - 1][n_deps[n - 1]++] = dep;
            }
          continue;
        }
      if (n == 0)
        continue;
      struct stage *s = &st[n - 1];
      if (strcmp (in->keyword, "RUN") == 0 && s->run_line == 0)
        s->run_line = in->line;
      for (size_t f = 0; f < in->n_flags; f++)
        {
          cleanup_free char *ref = NULL;
          if (strcmp (in->flags[f].name, "from") == 0 && in->flags[f].value)
            ref = xstrdup (in->flags[f].value);
          else if (strcmp (in->flags[f].name, "mount") == 0 && in->flags[f].value)
            ref = mount_value (in->flags[f].value, "from");
          int dep = ref ? stage_index (st, n, ref, n - 1) : -1;
          if (dep >= 0)
            {
              deps[n - 1] = realloc (deps[n - 1], (n_deps[n - 1] + 1) * sizeof (int));
              deps[n - 1][n_deps[n - 1]++] = dep;
            }
        }
    }
  if (n == 0)
    goto out;
  int last = (int) n - 1;
  if (o->target && *o->target)
    {
      last = stage_index (st, n, o->target, n);
      if (last < 0)
        goto out; /* buildah names the missing target */
    }
  mark_needed (st, last, deps, n_deps);

  {
    cleanup_free char *host = platform_host ();
    ps_strv runnable = { 0 };
    worker_platforms (&runnable);
    for (size_t p = 0; p < o->platforms.n && ret == 0; p++)
      for (size_t i = 0; i < n && ret == 0; i++)
        {
          if (!st[i].needed)
            continue;
          cleanup_free char *plat = stage_platform (&st[i], o->platforms.v[p], host);
          if (plat == NULL)
            continue;
          cleanup_free char *label = st[i].name ? xasprintf ("\"%s\"", st[i].name) : xasprintf ("%zu", i);
          if (st[i].run_line && !can_run (&runnable, plat))
            {
              ps_error_set (err, 400,
                            "%s:%u: RUN in stage %s runs %s programs, and this machine (%s) cannot: no qemu-user "
                            "binfmt handler for %s is registered in /proc/sys/fs/binfmt_misc (on Debian: apt-get "
                            "install qemu-user-static binfmt-support); or build that stage FROM "
                            "--platform=$BUILDPLATFORM and cross-compile, or leave %s out of --platform",
                            fname, st[i].run_line, label, plat, host, plat, plat);
              ret = -1;
              break;
            }
          const char *base = st[i].base;
          if (strcasecmp (base, "scratch") == 0 || strchr (base, '$') || stage_index (st, n, base, i) >= 0
              || o->pull == BUILD_PULL_ALWAYS)
            continue;
          cleanup_free char *note = NULL;
          if (local_base (base, plat, &note) < 0)
            {
              if (o->pull == BUILD_PULL_NEVER)
                {
                  ps_error_set (err, 400, "%s:%u: FROM %s for %s: %s, and the build may not pull (pull=never)",
                                fname, st[i].from_line, base, plat, note);
                  ret = -1;
                  break;
                }
              ps_strv_pushf (notes, "FROM %s for %s: %s", base, plat, note);
            }
        }
    ps_strv_free (&runnable);
  }
out:
  for (size_t i = 0; i < MAX_STAGES; i++)
    free (deps[i]);
  return ret;
}
