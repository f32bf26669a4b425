/* result_cache.h — whole-build reuse for session builds.
 *
 * A rebuild whose inputs are unchanged should not run `buildah build` at
 * all (its COPY steps re-hash the whole context, ~0.5 s for 50 MB).  The
 * key of a build is the digest of everything that decides its result: the
 * build options that shape the image, the Dockerfile bytes, the IDs of the
 * FROM images as they are in storage now, the client's context cache
 * directory (keyed by its session shared key) and a digest of that synced
 * tree.  The context digest covers each entry's path, type, mode,
 * owner, size, mtime and link target — the same facts the DiffCopy
 * receiver uses to decide what to transfer, so a change the sync would
 * carry changes the key.  A hit replays the recorded vertices as cached,
 * re-tags the image and skips buildah. */
#ifndef SOLVER_RESULT_CACHE_H
#define SOLVER_RESULT_CACHE_H

#include "solver/dockerfile/build_options.h"
#include "solver/job.h"

/* The key for `b` (whose context and Dockerfile are in place), or NULL
   when the build must not be reused (no-cache, pull=always, FROM with an
   ARG, a FROM image missing from storage). */
char *result_cache_key (const struct dockerfile_build *b, const char *dockerfile_text);

/* On a hit: emit the recorded vertices as cached, tag the image with the
   build's tags and return 1 with *image_id.  0 on a miss (or when the
   recorded image is gone). */
int result_cache_lookup (solver_job *job, const char *state_dir, const char *key, const struct dockerfile_build *b,
                         char **image_id);

/* Record a finished build: the image and the vertices the job emitted from
   event index `first_event` on. */
void result_cache_store (solver_job *job, const char *state_dir, const char *key, size_t first_event,
                         const char *image_id);

#endif
