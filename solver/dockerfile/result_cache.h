/* result_cache.h — whole-build reuse: session builds, builds whose
 * context is an uploaded tar (below), and results in shared caches.
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

#include "solver/cache_registry.h"
#include "solver/context.h"
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

/* Whether a build was recorded under `key` (its image may be gone since:
   result_cache_lookup checks). */
bool result_cache_has (const char *state_dir, const char *key);

/* Record a finished build: the image and the vertices the job emitted from
   event index `first_event` on. */
void result_cache_store (solver_job *job, const char *state_dir, const char *key, size_t first_event,
                         const char *image_id);

/* ---- whole-build results in a shared cache ----------------------------
 *
 * A build that exports its cache (--cache-to: a registry, or a store, an
 * S3 bucket or a local directory, each of which buildah sees as a
 * registry) also pushes its final image there, tagged
 * RESULT_CACHE_SHARED_TAG<key>.  The key is result_cache_key's material
 * with two differences: the context is hashed by content (each entry's
 * path, type, mode, owner, size, link target and bytes; not its mtime, as
 * BuildKit's content checksums), not by its directory and mtimes, and the
 * cache options are left out.  A build that imports the cache (another
 * replica's first build of the same project) pulls that one image instead
 * of running buildah: every step reused, the same image ID.  buildah's own
 * per-step cache stays beside it for builds whose inputs differ. */
#define RESULT_CACHE_SHARED_TAG "podsolve-result-"

/* The key, or NULL when the build must not be reused (as result_cache_key,
   and multi-platform builds). */
char *result_cache_shared_key (const struct dockerfile_build *b, const char *dockerfile_text);

/* Pull REPO:podsolve-result-<key> and tag it with the build's tags: 1 with
   *image_id, 0 when the cache has no such result (or it cannot be read:
   the build then runs). */
int result_cache_shared_pull (const char *repo, const char *key, const struct cache_registry_access *a,
                              const ps_strv *tags, char **image_id);

/* Push `image_id` to REPO:podsolve-result-<key>. */
int result_cache_shared_push (const char *repo, const char *key, const char *image_id,
                              const struct cache_registry_access *a, ps_error **err);

/* ---- builds whose context is a tar the client uploaded ------------------
 *
 * POST /build v1 and POST /solve store the context tar before unpacking
 * it; unpacking thousands of files is most of a no-op rebuild's time.
 * These keys are computed from the stored tar itself (one read, nothing
 * written): each entry's clean name, type, permissions, size, symlink
 * target and the digest of its bytes (not owners, which the extraction
 * does not restore, nor mtimes), in name order, with the same options,
 * Dockerfile bytes and FROM image IDs as the keys above.  A local hit
 * (state_dir/results/<key>.json, result_cache_lookup) or a shared one
 * (result_cache_shared_pull) then never unpacks the tar. */

struct result_cache_tar
{
  char digest[65];  /* of the context's entries */
  char *dockerfile; /* the Dockerfile's clean name in the tar */
  char *text;       /* its bytes (len of them, NUL-terminated) */
  size_t len;
};

/* Read the context tar at `tar` (context_tar_walk: bounded by `lim`): its
   digest and the first of `dockerfiles` (names in the context, in order of
   preference) that it holds as a regular file.  0, or -1 when the tar
   cannot be keyed (anything context_tar_walk refuses, no such Dockerfile,
   a candidate that is not a regular file): the caller unpacks it as
   before, and the extraction reports what is wrong.  Clear *out after. */
int result_cache_tar_read (const char *tar, const struct ps_context_limits *lim, const char *const *dockerfiles,
                           size_t n_dockerfiles, struct result_cache_tar *out);
void result_cache_tar_clear (struct result_cache_tar *t);

/* The local (`shared` false: result_cache_lookup/store) or shared
   (result_cache_shared_pull/push) key of `b` with the context in `t`, or
   NULL when the build must not be reused: as result_cache_key, plus
   layers=false, a client session, several platforms, a frontend image. */
char *result_cache_tar_key (const struct dockerfile_build *b, const struct result_cache_tar *t, bool shared);

#endif
