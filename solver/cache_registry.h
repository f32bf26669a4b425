/* cache_registry.h — build caches in registries.  buildah keeps build
 * cache only in registries (--cache-from/--cache-to take a repository), so
 * the "local" cache type of /solve is a local cache directory served for the
 * length of one build by a private Distribution registry (Debian's
 * docker-registry) bound to 127.0.0.1, with the directory as its filesystem
 * storage; and an import or export of either type goes with the ARG-step
 * index described below. */
#ifndef SOLVER_CACHE_REGISTRY_H
#define SOLVER_CACHE_REGISTRY_H

#include <sys/types.h>

#include "common/ps.h"
#include "solver/job.h"

struct cache_registry
{
  pid_t pid;
  int port;
  int out_fd, err_fd; /* kept open (and unread: it logs little) until stop */
  char *repo; /* "127.0.0.1:PORT/podsolve-cache" */
};

/* Start a registry storing in `storage_dir` (created if missing); its
   config goes in `work_dir`.  Waits until it answers GET /v2/. */
int cache_registry_start (const char *storage_dir, const char *work_dir, struct cache_registry *r, ps_error **err);
void cache_registry_stop (struct cache_registry *r);

/* Write a registries.conf at `path`: the system's, plus the registries
   ("host[:port]") in `insecure` marked insecure (plain HTTP or unverified
   TLS: the loopback cache registries, and registry caches whose attrs say
   registry.insecure=true). */
int cache_registry_write_conf (const char *path, const ps_strv *insecure, ps_error **err);

/* ---- registry caches (--cache-from / --cache-to type=registry) ----------
 *
 * The format is buildah's: one image per build step, tagged REPO:<key>,
 * the key a hash of the step and of the history and layers of the image
 * it runs on.  buildah 1.28 looks every step up in REPO except ARG steps,
 * which it only looks for in local storage; an ARG step it commits anew
 * gets a new creation time, and that time is in the key of every later
 * step, so on an empty machine the whole build after an ARG missed the
 * cache.  An export therefore also pushes REPO:podsolve-arg-steps, a
 * scratch image whose label lists the keys of the ARG steps the build
 * pushed, and an import pulls those images first: buildah's local lookup
 * then finds the ARG steps, and the steps after them match. */

#define CACHE_REGISTRY_ARG_INDEX_TAG "podsolve-arg-steps"
#define CACHE_REGISTRY_ARG_INDEX_LABEL "io.podsolve.cache.arg-steps"

/* How to reach the registry: the credentials file and the registries.conf
   the build uses (NULL: buildah's defaults, the daemon's environment). */
struct cache_registry_access
{
  const char *authfile;
  const char *registries_conf;
};

/* buildah's flags for `a` (--registries-conf, --authfile), appended to `argv`. */
void cache_registry_access_argv (ps_strv *argv, const struct cache_registry_access *a);

/* "skopeo --command-timeout=… [--registries-conf=…] COMMAND" for `a`,
   appended to `argv`: the start of every skopeo call on a cache. */
void cache_registry_skopeo_argv (ps_strv *argv, const char *command, const struct cache_registry_access *a);

/* The repository buildah keys its cache by: `ref` without its tag. */
char *cache_registry_repository (const char *ref);

/* Before a build with --cache-from `ref`: a BuildKit-format cache there
   (application/vnd.buildkit.cacheconfig.v0, which podsolve cannot read) is
   a warning on `job`, and the build goes on without it; else the ARG steps
   listed in the repository's podsolve-arg-steps index are pulled.  Nothing
   here fails the build (a registry that cannot be reached is only logged:
   buildah reports what it cannot read). */
void cache_registry_import (solver_job *job, const char *ref, const struct cache_registry_access *a);

/* After a build that pushed its cache to `ref`: push the index of the ARG
   steps it pushed (`keys`, buildah's cache keys, in build order). */
int cache_registry_export_arg_steps (const char *ref, const ps_strv *keys, const struct cache_registry_access *a,
                                     ps_error **err);

#endif
