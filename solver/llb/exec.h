/* llb_exec.h — run a validated LLB graph (solver/llb/llb.h) on buildah.
 *
 * Every vertex output is a committed buildah image, but an exec's on the
 * direct runc path (runc_exec.h) on overlay storage: that one is a
 * snapshot (snapshot.h), the overlay upper directory the exec wrote, which
 * the next exec of a chain runs on directly and which becomes an image
 * (a layer per exec) only when something needs one.  Vertices run as soon
 * as their inputs are done, up to `max_parallel` at once; the first failure
 * stops the others (their buildah children are terminated) and is the
 * job's error.  What this executor runs:
 *
 *   source  docker-image:// (resolved in storage, pulled when missing or
 *           when image.resolvemode=pull), local://NAME (the multipart part
 *           NAME sent with the request, or the directory NAME of the
 *           request's session over DiffCopy; local.includepattern(s),
 *           local.excludepatterns, local.followpaths, local.sharedkeyhint),
 *           http:// and https:// (one downloaded file: http.checksum,
 *           filename, perm, uid, gid) and git:// (a checkout of one
 *           commit over http(s) or git://: ref, subdir, keepgitdir,
 *           checksum, submodules) — see llb_remote.h
 *   exec    root mount from an input or scratch; extra mounts: bind of an
 *           input or scratch (read-only, or writable: discarded, or an
 *           output of the op when the mount has one), cache (a persistent
 *           directory under <state>/llb-cache-mounts per cacheOpt.ID, with
 *           shared / private / locked sharing), tmpfs (size), secret (from
 *           the session, a 0600 tmpfs file for the step), ssh (the
 *           client's agent forwarded over the session on a socket bound at
 *           dest with SSHOpt's uid, gid and mode; skipped when optional and
 *           the client has no such agent); env, proxy env,
 *           cwd, user, hostname, extraHosts, ulimit, network none/host/
 *           sandbox (host only with network.host), security INSECURE (all
 *           capabilities; only with security.insecure), validExitCodes
 *   file    mkdir (makeParents), mkfile, rm (allowNotFound, allowWildcard),
 *           symlink, copy (followSymlink, dirCopyContents, createDestPath,
 *           allowWildcard, allowEmptyWildcard, include/exclude patterns,
 *           mode, modeStr, timestamp, alwaysReplaceExistingDestPaths);
 *           owner by id or by name (looked up in /etc/passwd and /etc/group
 *           of the rootfs NamedUserOpt.input names); actions starting from
 *           any op input, scratch or earlier action's result, and any
 *           number of outputs — done natively on buildah mounts
 *           (solver/llb/fileop.c); ADD's archive unpacking and
 *           required_paths are 501
 *   merge   inputs stacked like layers over the first one, deletions
 *           carried by diff results applied (solver/llb/merge.c)
 *   diff    the changes from lower to upper, either may be scratch; its
 *           deletions kept in <state>/llb-whiteouts/<image> for merges
 *
 * Everything else (build ops, git remotes over ssh, source
 * secrets, ...) is refused before anything runs with a 501 naming the op
 * digest and the unsupported feature.
 *
 * Each vertex is cached by key = sha256(op digest, input keys, content of
 * a local source, resolved id of an image source, digest of an http
 * source's file, commit of a git source's ref); the image of output N is
 * kept in <state>/llb-results/<key> (N = 0) or <key>.N and reused while it
 * exists.  Downloads and checkouts are made in <state>/llb-tmp and removed
 * once the vertex ran. */
#ifndef SOLVER_LLB_EXEC_H
#define SOLVER_LLB_EXEC_H

#include "common/ps.h"
#include "solver/job.h"
#include "solver/llb/llb.h"
#include "solver/solve_source.h"

struct llb_exec_env
{
  const struct solve_source *sources; /* the request's local sources (copied) */
  size_t n_sources;
  const char *state_dir;              /* --state-dir: result records, cache mounts */
  const char *authfile;               /* registry credentials for pulls, or NULL */
  bool no_cache;                      /* frontendAttrs no-cache: run every vertex */
  bool network_host;                  /* the network.host entitlement was granted */
  bool insecure;                      /* the security.insecure entitlement was granted */
  const char *session_id;             /* the request's session (local sources, secrets), or NULL */
  const char *work_dir;               /* the job's directory: staging of local sources */
  unsigned max_parallel;              /* vertices running at once; 0 = PS_LLB_DEFAULT_PARALLEL */
};

/* Vertices at once when the daemon sets no limit (--max-parallel 0): the
   work is buildah processes, and more of them than this only contend. */
#define PS_LLB_DEFAULT_PARALLEL 8

struct llb_exec;

/* Check that every vertex of `g` is something this executor can run (a
   501 naming the op and the feature otherwise, 400 for a missing local
   source or a refused entitlement).  Takes ownership of `g` whatever the
   result. */
int llb_exec_new (struct llb_graph *g, const struct llb_exec_env *env, struct llb_exec **out, ps_error **err);

/* Run the graph (worker threads of the job's thread), one SOLVER_EV_VERTEX
   per state change and SOLVER_EV_LOG for exec output.  On success *image_id is the result
   image (64 hex).  On failure the ERROR event (with the failing vertex and
   exit code) has been emitted and -1 is returned with *err set. */
int llb_exec_run (struct llb_exec *x, solver_job *job, char **image_id, ps_error **err);

void llb_exec_free (struct llb_exec *x);

/* Run execs in BuildKit's sandbox network mode (the default) on the host's
   network instead of a netavark bridge of their own (--sandbox-network). */
void llb_exec_set_sandbox_network_host (bool host);

#endif
