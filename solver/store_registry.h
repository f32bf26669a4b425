/* store_registry.h — a store (store_client.h) seen by buildah as a
 * registry, for the length of one build: build caches in a store.
 *
 * buildah keeps build cache only in registries (--cache-from/--cache-to
 * take a repository; solver/cache_registry.h has the format: one image per
 * step, tagged with its cache key).  For `type=store` caches podsolved
 * serves the part of the registry API buildah uses (OCI distribution: the
 * /v2/ check, blobs, uploads, manifests, tags) on 127.0.0.1 and passes it
 * through to the store, one to one:
 *
 *   /v2/<repo>/blobs/<digest>           /v1/blobs/<digest>
 *   /v2/<repo>/blobs/uploads/...        a file in the work dir, then PUT /v1/blobs/<digest>
 *   /v2/<repo>/manifests/<ref>          /v1/names/<name>/manifests/<ref>
 *   /v2/<repo>/tags/list                /v1/names/<name>/tags
 *
 * so a step is a tag (its cache key) pointing at an immutable manifest,
 * blobs are fetched only when buildah asks for the step that needs them,
 * and two replicas writing the same cache write the same objects.  <repo>
 * is the cache's name in the store. */
#ifndef SOLVER_STORE_REGISTRY_H
#define SOLVER_STORE_REGISTRY_H

#include "common/ps.h"
#include "solver/store_client.h"

typedef struct store_registry store_registry;

/* Serve the store on 127.0.0.1 (a port of the kernel's choosing), staging
   uploads under `work_dir`.  *repo gets "127.0.0.1:PORT/<name>" for
   buildah (malloc'd).  NULL with *err when the store cannot be reached. */
store_registry *store_registry_start (const struct store_config *cfg, const char *name, const char *work_dir,
                                      char **repo, ps_error **err);
void store_registry_stop (store_registry *r);

/* Requests that failed against the store while serving (buildah sees
   them as registry errors; cache imports carry on without the step). */
size_t store_registry_failures (store_registry *r);

#endif
