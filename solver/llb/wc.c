/* wc.c — the LLB executor's working containers and its 501 (see wc.h). */
#define _GNU_SOURCE
#include "solver/llb/wc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int
llb_wc_from_with (const char *image, const char *const *extra, bool mount, struct buildah_wc *w, ps_error **err)
{
  w->ctr = w->mnt = NULL;
  if (buildah_from (image, extra, &w->ctr, err) < 0)
    return ps_error_wrap (err, "working container from %.12s", image ? image : "scratch");
  if (mount && buildah_wc_mount (w, err) < 0)
    {
      llb_wc_remove (w);
      return -1;
    }
  return 0;
}

int
llb_wc_from (const char *image, bool mount, struct buildah_wc *w, ps_error **err)
{
  return llb_wc_from_with (image, NULL, mount, w, err);
}

void
llb_wc_remove (struct buildah_wc *w)
{
  buildah_wc_remove (w);
}

/* No io.buildah.version label on what the LLB engine commits: BuildKit
   adds no builder label to its results, and the image a frontend's config
   lands on would otherwise carry one the frontend never asked for. */
static const char *const commit_opts[] = { "--identity-label=false", NULL };

int
llb_wc_commit (struct buildah_wc *w, char **image, ps_error **err)
{
  if (buildah_wc_commit (w, commit_opts, false, image, err) < 0)
    return ps_error_wrap (err, "commit");
  return 0;
}

int
llb_wc_commit_rm (struct buildah_wc *w, char **image, ps_error **err)
{
  if (buildah_wc_commit (w, commit_opts, true, image, err) < 0)
    return ps_error_wrap (err, "commit");
  return 0;
}

int
llb_unsupported (ps_error **err, const struct llb_vertex *v, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *what = NULL;
  if (vasprintf (&what, fmt, ap) < 0)
    abort ();
  va_end (ap);
  int r = ps_error_set (err, 501, "op %s (\"%s\"): %s is not supported by podsolve's LLB executor yet", v->digest,
                        v->name, what);
  free (what);
  return r;
}
