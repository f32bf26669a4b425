/* rootfs_export.h — a built image's filesystem out of containers-storage,
 * as a tar file or a directory (the tar and local exporters). */
#ifndef SOLVER_ROOTFS_EXPORT_H
#define SOLVER_ROOTFS_EXPORT_H

#include "common/ps.h"

/* Mount `image_id` with buildah, call `fn` with the mount point, unmount
   and remove the working container, whatever fn returned. */
int rootfs_with_mount (const char *image_id, int (*fn) (const char *root, void *ud, ps_error **err), void *ud,
                       ps_error **err);

/* Write the tree at `root` as a tar archive at `tar_path`; *bytes gets its size. */
int rootfs_write_tar (const char *root, const char *tar_path, uint64_t *bytes, ps_error **err);

/* A tar of several trees, each under a directory of its own (a
   multi-platform tar export: linux_amd64/..., linux_arm64/...).  Add each
   tree (prefix NULL: at the top), then finish: `ret` is the result so far,
   returned unless closing the archive fails first; *bytes gets its size. */
typedef struct rootfs_tar rootfs_tar;
rootfs_tar *rootfs_tar_new (const char *tar_path, ps_error **err);
int rootfs_tar_add (rootfs_tar *t, const char *root, const char *prefix, ps_error **err);
int rootfs_tar_finish (rootfs_tar *t, int ret, uint64_t *bytes, ps_error **err);

/* Write the overlay upper directory `upper` as an OCI layer: an
   uncompressed tar at `tar_path` in which overlay's whiteouts (0/0
   character devices) are ".wh.<name>" files, an opaque directory is
   followed by its ".wh..wh..opq", and overlay's own xattrs are left out.
   *diff_id gets "sha256:<hex>" of the tar, *bytes its size. */
int rootfs_write_layer_tar (const char *upper, const char *tar_path, char **diff_id, uint64_t *bytes, ps_error **err);

/* Copy the tree at `root` into `dest` (created if missing), keeping modes,
   owners, times and symlinks as they are. */
int rootfs_copy_dir (const char *root, const char *dest, ps_error **err);

#endif
