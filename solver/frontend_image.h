/* frontend_image.h — gateway frontends (BuildKit's gateway.v0): an image
 * whose entrypoint turns a build definition (a Dockerfile, anything) into
 * LLB, talking to the daemon's LLBBridge over its stdin and stdout.  They
 * are asked for from places that must not depend on the gateway itself
 * (the Dockerfile wing reads `# syntax=`, /solve takes frontend
 * "gateway.v0"), so the runner is registered here at start-up by
 * solver/gateway_image.c and called through frontend_image_run. */
#ifndef SOLVER_FRONTEND_IMAGE_H
#define SOLVER_FRONTEND_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/ps.h"
#include "schema/solve_request.h"
#include "solver/job.h"
#include "solver/solve_source.h"

/* Everything is borrowed for the call. */
struct gateway_input; /* solver/gateway.h */

struct frontend_image_req
{
  const char *image;        /* the frontend image ("docker/dockerfile:1") */
  const char *resolve_mode; /* image-resolve-mode: "default"/NULL, "pull", "local" */
  const struct solve_attrs *opts; /* its options: BUILDKIT_FRONTEND_OPT_<n>=key=value */
  const struct solve_source *sources; /* local sources by name ("context", "dockerfile"): directories
                                         the LLB it returns reads instead of the session's */
  size_t n_sources;
  const char *session;      /* BUILDKIT_SESSION_ID: secrets, ssh, credentials, other local sources */
  const ps_strv *entitlements;
  const char *job_dir;      /* work directory (NULL: the job's) */
  const char *authfile;     /* registry credentials, or NULL */
  const char *state_dir;
  uint64_t max_context_bytes;
  const struct solve_cache_entry *cache_imports, *cache_exports;
  size_t n_cache_imports, n_cache_exports;
  const struct gateway_input *inputs; /* its LLBBridge.Inputs (solver/gateway.h), may be NULL */
  size_t n_inputs;
};

/* Run frontend `req->image` on `job` (from the job's thread); *image_id
   gets the image of the result it returned (64 hex).  On failure the
   job's ERROR event is not emitted (the caller does).  501 when no runner
   is registered. */
typedef int (*frontend_image_fn) (solver_job *job, const struct frontend_image_req *req, char **image_id,
                                  ps_error **err);
void frontend_image_set_runner (frontend_image_fn fn);
int frontend_image_run (solver_job *job, const struct frontend_image_req *req, char **image_id, ps_error **err);

/* --dockerfile-frontend: the image every BuildKit-mode Dockerfile without
   a syntax line is built with, or NULL for buildah (the default).  Set
   once at start-up. */
void frontend_image_set_dockerfile_default (const char *image);
const char *frontend_image_dockerfile_default (void);

/* The frontend a Dockerfile build runs through: the build-arg
   BUILDKIT_SYNTAX, else the Dockerfile's `# syntax=` directive (both as
   BuildKit reads them: the image ref up to the first space; the rest is
   the frontend's "cmdline"), else --dockerfile-frontend; NULL for buildah.
   `syntax` is the directive's value or NULL; *cmdline (may be NULL) gets
   what followed the ref, malloc'd. */
char *frontend_image_for_dockerfile (const char *syntax_directive, const char *buildkit_syntax_arg,
                                     char **cmdline);

#endif
