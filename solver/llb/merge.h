/* llb_merge.h — LLB MergeOp and DiffOp (buildkit-protocols.md §6.5, BuildKit's
 * docs/merge+diff.md) done natively on buildah-mounted rootfs.
 *
 * Merge(a, b, ...): each input's filesystem applied over the previous ones
 * as a layer would be: later inputs win, directories merge (the later
 * one's metadata), a file replaces a directory and vice versa, and the
 * deletions an input carries remove those paths from what came before.
 *
 * Diff(lower, upper): what changed from lower to upper — entries added or
 * different (type, mode, owner, mtime, size, link target, xattrs, and the
 * content when a time may have lost its nanoseconds in a tar), the
 * directories that hold them (with upper's metadata), and the deletions.  Seen as a filesystem the deletions are simply absent;
 * used as a merge input they delete.
 *
 * A result's deletions ("whiteouts") are kept beside the image, in
 * <state>/llb-whiteouts/<image id>: diff writes them, merge reads its
 * inputs' and keeps those whose paths are still absent in its result.
 * Unlike BuildKit, where every op's layers carry their own deletions, only
 * merge and diff results carry any: an input made by exec or file ops is
 * taken as its filesystem (a `rm` in its own history deletes nothing from
 * the inputs merged before it).
 *
 * Paths never leave a rootfs: every entry is reached through directory
 * fds opened with O_NOFOLLOW, a symlink is copied as a link and never
 * followed.  Hard links within one input stay hard links; devices and
 * sockets are skipped with a log line (a container gets its /dev at run
 * time); fifos are made anew.  No static state: vertices may run on
 * several threads at once. */
#ifndef SOLVER_LLB_MERGE_H
#define SOLVER_LLB_MERGE_H

#include "common/ps.h"
#include "solver/llb/llb.h"

/* Largest whiteout record read back, in bytes: a diff deleting every file
   of a big distribution image (~100k paths of ~60 bytes) stays well
   below; more means a corrupt or foreign file. */
#define LLB_WHITEOUTS_MAX_BYTES (64 * 1024 * 1024)

/* A checked MergeOp: inputs[i] is the image of the op's input i (NULL =
   scratch).  *image gets the result (an input's own id when only one
   input is not scratch). */
int llb_merge_run (const struct llb_vertex *v, const char *const *inputs, const char *state_dir, char **image,
                   ps_error **err);

/* A checked DiffOp: lower and upper are images, NULL for scratch (input
   -1).  *image gets the result: upper itself when lower is scratch (as
   BuildKit), an empty image when both are the same. */
int llb_diff_run (const struct llb_vertex *v, const char *lower, const char *upper, const char *state_dir,
                  char **image, ps_error **err);

/* ---- the pieces, on plain directories (unit-tested without buildah) ---- */

/* Whiteouts are paths relative to the rootfs ("etc/motd"), contained (no
   "..", ".", empty components or leading '/'). */

/* Read the whiteouts recorded for `image` into *out (appended; none when
   there is no record).  A malformed record is a 500. */
int llb_whiteouts_read (const char *state_dir, const char *image, ps_strv *out, ps_error **err);
/* Record `w` for `image` (temp file + rename); an empty set removes the
   record. */
int llb_whiteouts_write (const char *state_dir, const char *image, const ps_strv *w, ps_error **err);

/* Remove each whiteout path from the tree at `root` (nothing happens for
   a path that is absent or lies below a symlink or a non-directory). */
int llb_tree_delete (const char *root, const ps_strv *w, ps_error **err);

/* Apply the tree `src` over `dst` as a layer (no deletions: see
   llb_tree_delete).  `who` names the op in log lines. */
int llb_tree_apply (const char *dst, const char *src, const char *who, ps_error **err);

/* The same for `src` an overlay upper directory (solver/llb/snapshot.h):
   its whiteouts (0/0 character devices) delete, its opaque directories
   replace what `dst` has there, overlay's own xattrs are not copied. */
int llb_tree_apply_upper (const char *dst, const char *src, const char *who, ps_error **err);

/* Write into the empty directory `out` the changes from `lower` to
   `upper` (NULL = an empty tree) and append the deleted paths to *w. */
int llb_tree_diff (const char *lower, const char *upper, const char *out, ps_strv *w, const char *who,
                   ps_error **err);

/* The paths of `w` not present in the tree at `root` (never followed
   through a symlink), sorted and without repeats, into *out. */
int llb_whiteouts_absent (const char *root, const ps_strv *w, ps_strv *out, ps_error **err);

#endif
