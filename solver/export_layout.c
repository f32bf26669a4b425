/* export_layout.c — exported images' OCI layouts, kept (export_layout.h). */
#define _GNU_SOURCE
#include "solver/export_layout.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/ps.h"
#include "solver/cache_prune.h"

char *
export_layout_path (const char *state_dir, const char *image_id)
{
  if (state_dir == NULL || image_id == NULL || strlen (image_id) != 64
      || strspn (image_id, "0123456789abcdef") != 64)
    return NULL;
  return xasprintf ("%s/" CACHE_EXPORT_LAYOUTS "/%s", state_dir, image_id);
}

bool
export_layout_ready (const char *path)
{
  cleanup_free char *index = xasprintf ("%s/index.json", path);
  struct stat st;
  if (lstat (index, &st) < 0 || !S_ISREG (st.st_mode))
    return false;
  cache_record_touch (path);
  return true;
}

bool
export_layout_keep (const char *built, const char *path)
{
  cleanup_free char *parent = xstrndup (path, (size_t) (strrchr (path, '/') - path));
  ps_error *err = NULL;
  if (ps_mkdir_p (parent, 0700, &err) < 0)
    {
      ps_warn ("export layouts: %s", err->msg);
      ps_error_free (err);
      return false;
    }
  /* rename(2) of a directory onto an existing non-empty one fails: the
     first export to finish keeps its layout, and both are the same image. */
  if (rename (built, path) == 0)
    return true;
  if (errno != EEXIST && errno != ENOTEMPTY)
    ps_warn ("export layouts: keep %s: %s", path, strerror (errno));
  return export_layout_ready (path);
}
