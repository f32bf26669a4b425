/* snapshot.h — exec results that are not images until something needs one.
 *
 * An LLB exec on podsolved's direct runc path (runc_exec.h) runs on an
 * overlay mount of its own: the lower directories are its root input's
 * (the layer directories of an image in containers-storage, under the
 * snapshots that input was made of), the upper directory is new.  When
 * the exec ends, the upper directory is the result: a *snapshot*, kept in
 * <state>/llb-snapshots/<id>/ as
 *
 *   diff/     the upper directory (overlay whiteouts and opaque
 *             directories as the kernel wrote them)
 *   parent    "image <64 hex>" or "snap <id>": what it lies on; written
 *             last, so a snapshot without it is unfinished (a crash) and
 *             is removed by llb_snapshots_recover
 *   created_by  the op's name, for the history of images made of it
 *   image     the image it was made into, once something needed one
 *
 * The next exec of a chain stacks it as one more lower directory: no
 * `buildah from`, `buildah mount` or `buildah commit` between the steps.
 * Whatever needs an image (a file op, a merge, a bind mount, an export,
 * a gateway reference) asks llb_snapshot_image, which makes one the way a
 * step's commit did — a working container from the base image, the
 * chain's upper directories applied over it oldest first, `buildah
 * commit` — and keeps its id in `image`.
 *
 * Snapshots are content of the LLB cache: llb-results records name them
 * ("snap <id>"), a prune removes them (type exec.snapshot).  Only on the
 * overlay storage driver, and only where the kernel mounts overlay with
 * the lower directories given one at a time (Linux 6.8's "lowerdir+"), so
 * no chain is too long for one mount; elsewhere execs commit images as
 * before. */
#ifndef SOLVER_LLB_SNAPSHOT_H
#define SOLVER_LLB_SNAPSHOT_H

#include "common/ps.h"
#include "solver/cache_prune.h"

#define LLB_SNAPSHOTS_DIR CACHE_LLB_SNAPSHOTS

/* Whether snapshots can be used here (the storage driver is overlay and
   the kernel takes "lowerdir+"); asked once, with `state_dir` for the
   probe's directories. */
bool llb_snapshots_usable (const char *state_dir);

/* Ids are 32 hex digits. */
bool llb_snapshot_id_ok (const char *id);

/* A mounted, unfinished snapshot. */
struct llb_snapshot_mount
{
  char *id;
  char *dir;    /* <state>/llb-snapshots/<id> */
  char *merged; /* the mount point: the exec's rootfs */
  char *parent; /* "image <id>" or "snap <id>" */
  const char *created_by; /* set by the caller: the image history's line for it (the op's name) */
};

/* Make a snapshot over `parent_image` (an image id) or `parent_snap` (a
   finished snapshot's id; exactly one of the two) and mount it. */
int llb_snapshot_mount (const char *state_dir, const char *parent_image, const char *parent_snap,
                        struct llb_snapshot_mount *m, ps_error **err);

/* Mount snapshot `id`'s filesystem read-only (its chain and the image
   below, no upper directory): what a file op reads a snapshot input
   through, without making an image of it.  Undo with
   llb_snapshot_unmount_ro. */
int llb_snapshot_mount_ro (const char *state_dir, const char *id, struct llb_snapshot_mount *m, ps_error **err);
void llb_snapshot_unmount_ro (struct llb_snapshot_mount *m);

/* Unmount it; with `keep` it becomes a finished snapshot (m->id stays
   valid; the caller takes it), without it is removed.  Zeroes *m's
   other fields. */
int llb_snapshot_finish (struct llb_snapshot_mount *m, bool keep, ps_error **err);

/* Whether `id` is a finished snapshot whose chain is whole (every
   snapshot below it finished, the image at the bottom in storage). */
bool llb_snapshot_valid (const char *state_dir, const char *id);

/* The image holding snapshot `id`'s filesystem: the one made before when
   it is still in storage, else a new one with a layer per snapshot of the
   chain over the image below it (or below the newest snapshot that was
   made an image before) — each upper directory written as a layer tar,
   the image put into storage by one `skopeo copy`, which finds the lower
   image's layers there by their diff IDs.  When that cannot be done (a
   config containers-storage does not keep where expected), a working
   container from the image below, the chain applied over it, `buildah
   commit`: one layer for the chain.  *image is a new string.  `who`
   names the op in log lines. */
int llb_snapshot_image (const char *state_dir, const char *id, const char *who, char **image, ps_error **err);

/* At start-up: unmount what a stopped daemon left mounted and remove the
   unfinished snapshots. */
void llb_snapshots_recover (const char *state_dir);

#endif
