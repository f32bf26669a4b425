/* runc_state.c — removing runc's records of a killed buildah's RUN
 * containers (see runc_state.h). */
#define _GNU_SOURCE
#include "solver/runc_state.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "common/log.h"
#include "solver/buildah.h"

int
runc_state_parse (const char *json, struct runc_state *out)
{
  memset (out, 0, sizeof *out);
  cJSON *root = json ? cJSON_Parse (json) : NULL;
  const char *id = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (root, "id"));
  const cJSON *pid = cJSON_GetObjectItemCaseSensitive (root, "init_process_pid");
  const cJSON *start = cJSON_GetObjectItemCaseSensitive (root, "init_process_start");
  if (id == NULL || *id == '\0' || !cJSON_IsNumber (pid) || pid->valuedouble < 1 || !cJSON_IsNumber (start)
      || start->valuedouble < 0)
    {
      cJSON_Delete (root);
      return -1;
    }
  out->id = xstrdup (id);
  out->init_pid = (pid_t) pid->valuedouble;
  /* Clock ticks since boot: far below 2^53, exact in a double. */
  out->init_start = (unsigned long long) start->valuedouble;
  /* runc labels the config with "bundle=<path>" (libcontainer/specconv). */
  const cJSON *config = cJSON_GetObjectItemCaseSensitive (root, "config");
  const cJSON *labels = cJSON_GetObjectItemCaseSensitive (config, "labels");
  if (!cJSON_IsArray (labels))
    labels = NULL;
  const cJSON *label;
  cJSON_ArrayForEach (label, labels)
  {
    const char *l = cJSON_GetStringValue (label);
    if (l && ps_str_has_prefix (l, "bundle=") && l[7] != '\0' && out->bundle == NULL)
      out->bundle = xstrdup (l + 7);
  }
  cJSON_Delete (root);
  return 0;
}

void
runc_state_clear (struct runc_state *s)
{
  free (s->id);
  free (s->bundle);
  memset (s, 0, sizeof *s);
}

bool
runc_state_init_among (const struct runc_state *s, const struct ps_proc_id *procs, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (procs[i].pid == s->init_pid && procs[i].start == s->init_start)
      return true;
  return false;
}

const char *
runc_state_buildah_bundle (const struct runc_state *s)
{
  if (s->bundle == NULL || s->bundle[0] != '/' || strpbrk (s->bundle, " \t\n\\") != NULL
      || !ps_str_has_prefix (s->id, "buildah-buildah"))
    return NULL;
  /* buildah names the container "buildah-" + the bundle's base name. */
  const char *base = strrchr (s->bundle, '/') + 1;
  const char *digits = s->id + strlen ("buildah-buildah");
  if (strcmp (base, s->id + strlen ("buildah-")) != 0 || *digits == '\0'
      || strspn (digits, "0123456789") != strlen (digits))
    return NULL;
  return s->bundle;
}

/* Whether anything is mounted at or below `path` here (mountinfo field 5;
   runc_state_buildah_bundle keeps out the paths it would escape). */
static bool
mounted_below (const char *path)
{
  cleanup_file FILE *f = fopen ("/proc/self/mountinfo", "re");
  if (f == NULL)
    return true; /* cannot tell: as if */
  size_t len = strlen (path);
  cleanup_free char *line = NULL;
  size_t cap = 0;
  while (getline (&line, &cap, f) > 0)
    {
      char mnt[4096];
      if (sscanf (line, "%*s %*s %*s %*s %4095s", mnt) == 1 && strncmp (mnt, path, len) == 0
          && (mnt[len] == '\0' || mnt[len] == '/'))
        return true;
    }
  return false;
}

bool
runc_state_delete (const char *root, const char *runtime, const char *id)
{
  ps_strv argv = { 0 };
  ps_strv_push (&argv, runtime);
  ps_strv_pushf (&argv, "--root=%s", root);
  ps_strv_push (&argv, "delete");
  ps_strv_push (&argv, "--force");
  ps_strv_push (&argv, id);
  cleanup_free char *errout = NULL;
  ps_error *err = NULL;
  int status = -1;
  int r = ps_run_capture (argv.v, NULL, &errout, &status, &err);
  ps_strv_free (&argv);
  if (r < 0 || status != 0)
    {
      ps_warn ("%s --root=%s delete --force %s: %s", runtime, root, id,
               err ? err->msg : (errout && *errout ? errout : "failed"));
      ps_error_free (err);
      return false;
    }
  return true;
}

size_t
runc_state_remove_of (const char *root, const char *runtime, const struct ps_proc_id *procs, size_t n)
{
  size_t removed = 0;
  DIR *d = n > 0 ? opendir (root) : NULL;
  if (d == NULL)
    return 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      cleanup_free char *path = xasprintf ("%s/%s/state.json", root, de->d_name);
      cleanup_free char *json = NULL;
      struct runc_state s;
      if (ps_read_file (path, RUNC_STATE_MAX_BYTES, &json, NULL, NULL) < 0 || runc_state_parse (json, &s) < 0)
        continue;
      if (strcmp (s.id, de->d_name) == 0 && runc_state_init_among (&s, procs, n)
          && runc_state_delete (root, runtime, s.id))
        {
          removed++;
          /* The bundle (config.json, hosts, resolv.conf, an empty rootfs
             mount point) is what buildah would have removed after the
             delete.  Never through a mount: the rootfs may still be one. */
          const char *bundle = runc_state_buildah_bundle (&s);
          ps_error *err = NULL;
          if (bundle && (mounted_below (bundle) || ps_rm_rf (bundle, &err) < 0))
            {
              ps_warn ("keep the bundle %s of %s: %s", bundle, s.id, err ? err->msg : "something is mounted in it");
              ps_error_free (err);
              bundle = NULL;
            }
          ps_info ("removed runc's record of container %s (its init, pid %d, ran below a killed buildah)%s%s", s.id,
                   (int) s.init_pid, bundle ? " and its bundle " : "", bundle ? bundle : "");
        }
      runc_state_clear (&s);
    }
  closedir (d);
  return removed;
}

void
runc_state_remove_killed (void *ud, const struct ps_proc_id *procs, size_t n)
{
  (void) ud;
  /* The runtime podsolved chose (--runtime=), when it is a runc; records
     in runc's root are runc's whatever buildah's default runtime is. */
  const char *chosen = buildah_runtime ();
  const char *base = chosen ? strrchr (chosen, '/') : NULL;
  base = base ? base + 1 : chosen;
  const char *runtime = base && strcmp (base, "runc") == 0 ? chosen : "runc";
  runc_state_remove_of (RUNC_STATE_ROOT, runtime, procs, n);
}
