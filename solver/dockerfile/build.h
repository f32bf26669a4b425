/* build.h — the dockerfile.v0 frontend: a Dockerfile build run by
 * `buildah build`, reported as vertices, logs and a final result. */
#ifndef SOLVER_DOCKERFILE_BUILD_H
#define SOLVER_DOCKERFILE_BUILD_H

#include "solver/dockerfile/build_options.h"
#include "solver/job.h"

/* The dockerfile.v0 frontend: run `buildah build`, append its vertices and
   logs.  On success *image_id is the built image (64 hex).  On failure the
   ERROR event (failing vertex, RUN exit code) is already appended. */
int dockerfile_frontend_run (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err);

/* The Dockerfile in buildah's dialect (solver/dockerfile/parse.h), checked
   before anything runs: 0, or -1 with a 400 naming the file as the user
   gave it and the line.  A Dockerfile not at hand (a URL, inside a remote
   context) is left to buildah. */
int dockerfile_build_check_dialect (const struct dockerfile_build *b, ps_error **err);

/* The context of `b` (opts.context_dir, not made yet) is the stored tar
   `tar`: key the build from the tar (result_cache.h), the Dockerfile being
   the first of `dockerfiles` (names in the context) the tar holds.  1 when
   a whole result may be reused (a local record under the key, or a cache
   import to look in): the unpack is put off until a miss, and
   opts.dockerfiles, dockerfile_name and definition_digest are set from the
   tar.  0 when the caller unpacks as before; the keys, when the tar could
   be keyed, are still used to record the result.  Reads the tar and asks
   storage for the FROM images: no error of its own, a tar it cannot key is
   left to the unpack to judge. */
int dockerfile_build_key_tar (struct dockerfile_build *b, const char *tar, const char *const *dockerfiles, size_t n,
                              uint64_t max_context_bytes);

/* The /build job: the frontend, then RESULT with the image ID and the
   client's tags.  userdata is a struct dockerfile_build *. */
int dockerfile_build_run (solver_job *job, void *userdata, ps_error **err);

/* A multi-platform build's manifest list keeps a name of its own until the
   job's exporters are done with it: drop that name now (the list goes with
   it when the build has no tags).  Nothing when there is none. */
void dockerfile_build_release_list (struct dockerfile_build *b);

#endif
