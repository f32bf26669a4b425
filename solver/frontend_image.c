/* frontend_image.c — the registered gateway-frontend runner and the daemon's
 * Dockerfile dialect (see frontend_image.h). */
#define _GNU_SOURCE
#include "solver/frontend_image.h"

#include <stdlib.h>
#include <string.h>

static frontend_image_fn runner;
static char *dockerfile_default;

void
frontend_image_set_runner (frontend_image_fn fn)
{
  runner = fn;
}

int
frontend_image_run (solver_job *job, const struct frontend_image_req *req, char **image_id, ps_error **err)
{
  *image_id = NULL;
  if (runner == NULL)
    return ps_error_set (err, 501, "gateway frontends are not available in this process");
  return runner (job, req, image_id, err);
}

void
frontend_image_set_dockerfile_default (const char *image)
{
  free (dockerfile_default);
  dockerfile_default = image && *image && strcmp (image, "buildah") != 0 ? xstrdup (image) : NULL;
}

const char *
frontend_image_dockerfile_default (void)
{
  return dockerfile_default;
}

char *
frontend_image_for_dockerfile (const char *syntax_directive, const char *buildkit_syntax_arg, char **cmdline)
{
  if (cmdline)
    *cmdline = NULL;
  const char *v = buildkit_syntax_arg && *buildkit_syntax_arg ? buildkit_syntax_arg : syntax_directive;
  while (v && (*v == ' ' || *v == '\t'))
    v++;
  if (v == NULL || *v == '\0')
    return dockerfile_default ? xstrdup (dockerfile_default) : NULL;
  size_t n = strcspn (v, " \t");
  if (cmdline && v[n])
    {
      const char *rest = v + n + strspn (v + n, " \t");
      if (*rest)
        *cmdline = xstrdup (rest);
    }
  return xstrndup (v, n);
}
