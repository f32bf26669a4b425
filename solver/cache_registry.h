/* cache_registry.h — the "local" cache type of /solve.  buildah keeps
 * build cache only in registries (--cache-from/--cache-to take a
 * repository), so a local cache directory is served for the length of one
 * build by a private Distribution registry (Debian's docker-registry) bound
 * to 127.0.0.1, with the directory as its filesystem storage. */
#ifndef SOLVER_CACHE_REGISTRY_H
#define SOLVER_CACHE_REGISTRY_H

#include <sys/types.h>

#include "common/ps.h"

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

#endif
