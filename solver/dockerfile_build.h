/* dockerfile_build.h — the dockerfile.v0 frontend: a Dockerfile build run by
 * `buildah build`, reported as vertices, logs and a final result. */
#ifndef SOLVER_DOCKERFILE_BUILD_H
#define SOLVER_DOCKERFILE_BUILD_H

#include "solver/build_options.h"
#include "solver/job.h"

struct dockerfile_build
{
  struct build_options opts;
  char *dockerfile_name;   /* for "[internal] load build definition from X" */
  char *definition_digest; /* sha256 hex of the Dockerfile bytes (seeds vertex digests) */
  uint64_t context_bytes;  /* bytes of context received, for the status */
};

void dockerfile_build_free (struct dockerfile_build *b);

/* The job function: run the build, append every event, end with RESULT or
   ERROR.  userdata is a struct dockerfile_build *. */
int dockerfile_build_run (solver_job *job, void *userdata, ps_error **err);

#endif
