/* llb_exec.h — run a validated LLB graph (solver/llb.h) on buildah.
 *
 * Every vertex output is a committed buildah image; vertices run one at a
 * time in the graph's topological order.  What this slice executes:
 *
 *   source  docker-image:// (resolved in storage, pulled when missing or
 *           when image.resolvemode=pull), local://NAME (the multipart part
 *           NAME sent with the request, without include/exclude patterns),
 *           http:// and https:// (one downloaded file: http.checksum,
 *           filename, perm, uid, gid) and git:// (a checkout of one
 *           commit over http(s) or git://: ref, subdir, keepgitdir,
 *           checksum, submodules) — see llb_remote.h
 *   exec    root mount from an input or scratch; extra mounts: bind of an
 *           input (read-only, or writable and discarded), cache (a
 *           persistent directory under <state>/llb-cache-mounts), tmpfs;
 *           env, cwd, user, hostname, network none/host, validExitCodes
 *   file    mkdir, mkfile, rm, symlink, copy (owners by id only) on one
 *           rootfs, done natively on the buildah mount; every path is
 *           resolved inside that rootfs (symlinks cannot lead out of it)
 *
 * Everything else (merge, diff, build ops, git remotes over ssh, source
 * secrets, secret/ssh mounts, non-root exec outputs, ...) is refused
 * before anything runs with a 501 naming the op digest and the
 * unsupported feature.
 *
 * Each vertex is cached by key = sha256(op digest, input keys, content of
 * a local source, resolved id of an image source, digest of an http
 * source's file, commit of a git source's ref); the key's image id is
 * kept in <state>/llb-results/<key> and reused while the image exists.
 * Downloads and checkouts are made in <state>/llb-tmp and removed once
 * the vertex ran. */
#ifndef SOLVER_LLB_EXEC_H
#define SOLVER_LLB_EXEC_H

#include "common/ps.h"
#include "solver/job.h"
#include "solver/llb.h"
#include "solver/solve.h"

struct llb_exec_env
{
  const struct solve_source *sources; /* the request's local sources (copied) */
  size_t n_sources;
  const char *state_dir;              /* --state-dir: result records, cache mounts */
  const char *authfile;               /* registry credentials for pulls, or NULL */
  bool no_cache;                      /* frontendAttrs no-cache: run every vertex */
  bool network_host;                  /* the network.host entitlement was granted */
};

struct llb_exec;

/* Check that every vertex of `g` is something this executor can run (a
   501 naming the op and the feature otherwise, 400 for a missing local
   source or a refused entitlement).  Takes ownership of `g` whatever the
   result. */
int llb_exec_new (struct llb_graph *g, const struct llb_exec_env *env, struct llb_exec **out, ps_error **err);

/* Run the graph on the job's thread, one SOLVER_EV_VERTEX per state change
   and SOLVER_EV_LOG for exec output.  On success *image_id is the result
   image (64 hex).  On failure the ERROR event (with the failing vertex and
   exit code) has been emitted and -1 is returned with *err set. */
int llb_exec_run (struct llb_exec *x, solver_job *job, char **image_id, ps_error **err);

void llb_exec_free (struct llb_exec *x);

#endif
