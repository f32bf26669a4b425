/* llb_fileop.h — LLB FileOps done natively on a buildah-mounted rootfs, and
 * the path resolution the other LLB ops share. */
#ifndef SOLVER_LLB_FILEOP_H
#define SOLVER_LLB_FILEOP_H

#include "common/ps.h"
#include "solver/llb/llb.h"

/* Resolve `path` as if `root` were "/": "..", absolute and relative
   symlinks never lead above root (as filepath-securejoin).  The last
   component is followed only when `follow_final`.  *out = root + the
   resolved path; components that do not exist are kept literally. */
int llb_scoped_resolve (const char *root, const char *path, bool follow_final, char **out, ps_error **err);

/* 501 for a FileOp option llb_fileop_run cannot do (ADD's archive
   unpacking, required_paths); 400 for a malformed modeStr, include or
   exclude pattern, or wildcard. */
int llb_fileop_check (const struct llb_vertex *v, ps_error **err);

/* Run a checked FileOp: inputs[i] is the image of the op's input i, or
   NULL with snaps[i] (snaps may be NULL) a snapshot under `state_dir`
   (snapshot.h) when the op only reads that input (a copy's source, an
   owner's passwd): it is read through a read-only overlay, and no image
   is made of it.  An input an action starts from must be an image.
   images[o] (v->n_outputs entries) gets the committed image of output o.
   Only the actions some output depends on run, as in BuildKit. */
int llb_fileop_run (const struct llb_vertex *v, const char *const *inputs, const char *const *snaps,
                    const char *state_dir, char **images, ps_error **err);

/* One action on plain directories: `root` is the rootfs it changes, a copy
   reads `src_root`; owner names are looked up in <user_root>/etc/passwd
   and <group_root>/etc/group (described as user_where / group_where in
   errors).  llb_fileop_run's worker, exposed for the unit tests. */
int llb_file_action_apply (const Pb__FileAction *a, const char *root, const char *src_root, const char *user_root,
                           const char *group_root, const char *user_where, const char *group_where, ps_error **err);

#endif
