/* export_layout.h — the OCI layout an image was exported as, kept for the
 * next export of the same image.
 *
 * A `store` or `s3` export writes the image as an OCI layout (buildah
 * push: gzip of every layer, CPU-bound) and uploads the layout's blobs.
 * An image ID is the digest of its config, and the config names its
 * layers by digest, so the layout of an image ID is valid for as long as
 * the ID exists: a later export of the same image (to another prefix,
 * bucket or store, or the same one again) uploads that layout and
 * compresses nothing, as BuildKit keeps compressed blobs in its content
 * store.  Layouts live in <state>/export-layouts/<image id>; they are
 * build cache of type `export.layout` (solver/cache_prune.h): pruned by
 * POST /build/prune and the garbage collector, last use the directory's
 * mtime.  Builds hold the cache lock shared while a prune holds it
 * exclusively, so a layout is never removed while an export reads it. */
#ifndef SOLVER_EXPORT_LAYOUT_H
#define SOLVER_EXPORT_LAYOUT_H

#include <stdbool.h>

/* <state_dir>/CACHE_EXPORT_LAYOUTS/<image_id> (malloc'd), or NULL when
   `image_id` is not a 64-hex image ID. */
char *export_layout_path (const char *state_dir, const char *image_id);

/* Whether `path` holds a whole layout (index.json is written last);
   touched as used when it does. */
bool export_layout_ready (const char *path);

/* Move the finished layout `built` (a directory of the job's) to `path`.
   true when it is there now (moved, or another export put one there
   first: `built` is then left for the caller to remove). */
bool export_layout_keep (const char *built, const char *path);

#endif
