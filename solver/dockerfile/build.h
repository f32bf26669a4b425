/* build.h — the dockerfile.v0 frontend: a Dockerfile build run by
 * `buildah build`, reported as vertices, logs and a final result. */
#ifndef SOLVER_DOCKERFILE_BUILD_H
#define SOLVER_DOCKERFILE_BUILD_H

#include "solver/dockerfile/build_options.h"
#include "solver/job.h"

struct session_sources; /* solver/session_io.h */

struct dockerfile_build
{
  struct build_options opts;
  char *dockerfile_name;   /* for "[internal] load build definition from X" */
  char *definition_digest; /* sha256 hex of the Dockerfile bytes (seeds vertex digests) */
  uint64_t context_bytes;  /* bytes of context received, for the status */
  struct session_sources *session; /* NULL: the context is already in opts */
};

void dockerfile_build_free (struct dockerfile_build *b);

/* The dockerfile.v0 frontend: run `buildah build`, append its vertices and
   logs.  On success *image_id is the built image (64 hex).  On failure the
   ERROR event (failing vertex, RUN exit code) is already appended. */
int dockerfile_frontend_run (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err);

/* The /build job: the frontend, then RESULT with the image ID and the
   client's tags.  userdata is a struct dockerfile_build *. */
int dockerfile_build_run (solver_job *job, void *userdata, ps_error **err);

#endif
