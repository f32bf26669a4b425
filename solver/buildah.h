/* buildah.h — the buildah driver: every buildah call goes through here, as
 * an argv array (never a shell string) with podsolved's storage flags. */
#ifndef SOLVER_BUILDAH_H
#define SOLVER_BUILDAH_H

#include <sys/types.h>

#include "common/process.h"
#include "common/ps.h"

struct buildah_config
{
  const char *buildah;        /* binary; default "buildah" from PATH */
  const char *root;           /* --root, NULL = buildah's (Podman's) default */
  const char *runroot;        /* --runroot */
  const char *storage_driver; /* --storage-driver */
};

/* Set once at start-up, before any thread uses the driver. */
void buildah_configure (const struct buildah_config *cfg);

/* containers/image's name for image `id` in podsolved's storage, for
   tools other than buildah (skopeo): "containers-storage:[DRIVER@ROOT+RUNROOT]@ID",
   or "containers-storage:@ID" when the storage is the default one. */
char *buildah_storage_image_ref (const char *id);
/* The same for a name ("localhost/app:1"): where skopeo copies an image to
   store it under that name. */
char *buildah_storage_name_ref (const char *name);

/* `skopeo copy SRC` (a containers/image reference: "dir:/path", ...) into
   podsolved's storage as image `id` (64 hex: the config's digest); a
   non-zero exit is a 500 naming `what`. */
int buildah_copy_into_storage (const char *src, const char *id, const char *what, ps_error **err);

/* Start an argv with the binary and the global storage flags. */
void buildah_argv_init (ps_strv *argv);

/* The isolation every RUN uses, chosen at start-up by buildah_probe_isolation. */
const char *buildah_isolation (void);
const char *buildah_runtime (void); /* NULL = buildah's default */
/* Append "--isolation X [--runtime R]" for the chosen (or overridden) mode. */
void buildah_argv_isolation (ps_strv *argv, const char *override_isolation);

/* Run one tiny container the configured way (a scratch container with the
 * host's /usr bound read-only, running /usr/bin/true).  If OCI isolation
 * cannot run here, fall back to runc when present, else to chroot, and log
 * one line saying what was chosen and why. */
int buildah_probe_isolation (const char *wanted, const char *runtime, ps_error **err);

/* buildah's version string ("1.28.2"), read once at start-up. */
const char *buildah_version (void);

/* The storage driver buildah uses ("overlay", "vfs"): --storage-driver
   when given, else what `buildah info` says, asked once and kept;
   "unknown" when buildah cannot tell. */
const char *buildah_storage_driver (void);

/* Every short buildah command goes through the three calls below (the
   start-up probes aside; the streamed `buildah build` and `buildah run`
   start from buildah_argv_init): `buildah ARGS...` with the storage flags
   added, run to completion.  A non-zero exit is a 500
   "buildah ARGS[0]: exit status N: <its stderr>".

   buildah_call: `args` NULL-terminated; with `out`, *out gets the whole
   stdout. */
int buildah_call (const char *const *args, char **out, ps_error **err);
/* The same, *out being the first line of stdout (an id, a path). */
int buildah_call_line (const char *const *args, char **out, ps_error **err);
/* buildah_call_line with the arguments listed, NULL-terminated (any number). */
int buildah_callv (char **out, ps_error **err, const char *arg0, ...) __attribute__ ((sentinel));

/* The ID of image `image` (a name or an ID) as storage has it now:
   `buildah inspect --type=image --format={{.FromImageID}}`, first line
   (empty when buildah printed none). */
int buildah_image_id (const char *image, char **id, ps_error **err);

/* What the store's own image list says (<graph root>/<driver>-images/
   images.json, which containers-storage replaces whole on every change),
   read again only when it changed: a fully cached LLB graph checks an image
   per vertex, and a `buildah inspect` each (a Go program opening the
   store) cost 15 ms or more.  Full 64-hex IDs and fully qualified tagged
   names ("localhost/busybox:latest"; ":latest" is implied) are looked up
   there; anything else (short names, digests), an image the list lacks
   (an additional read-only store may hold it) or an unreadable list asks
   buildah, as before. */
bool buildah_image_present (const char *id);
/* buildah_image_id, from the list when it can say. */
int buildah_image_resolve (const char *ref, char **id, ps_error **err);
/* Whether the list says fully qualified `name` names image `id` (full ID)
   already: a `buildah tag` would change nothing. */
bool buildah_image_named (const char *name, const char *id);
/* One layer of an image in containers-storage (overlay driver). */
struct buildah_layer
{
  char *dir;         /* <graph root>/overlay/<layer id>/diff */
  char *diff_digest; /* "sha256:..." of its uncompressed tar (the config's diff_id), or NULL */
  int64_t diff_size; /* bytes of that tar, -1 when unknown */
};
/* Image `id`'s layers (full ID), top layer first, from the store's image
   and layer lists: what an overlay mount of the image stacks as its lower
   directories (overlay driver only: a 501 for another).  None for an
   image of no layers.  Free with buildah_layers_free. */
int buildah_image_layers (const char *id, struct buildah_layer **out, size_t *n, ps_error **err);
void buildah_layers_free (struct buildah_layer *v, size_t n);
/* Just the directories, appended to *dirs. */
int buildah_image_layer_dirs (const char *id, ps_strv *dirs, ps_error **err);
/* Image `id`'s config document as stored (full ID). */
int buildah_image_config (const char *id, char **json, size_t *len, ps_error **err);
/* The image's manifest digest (buildah's FromImageDigest), malloc'd, or NULL. */
char *buildah_image_digest (const char *id);

/* Every working container podsolve makes itself is named PREFIX + <tag> +
   "-" + random hex: the sweep of stopped builds' leftovers (orphans.h)
   never takes one, and a later run of the same daemon finds them. */
#define PS_CONTAINER_PREFIX "podsolve-"
/* The tag: the first 8 hex digits of the SHA-256 of the state directory
   named at start-up (orphans_recover), hashed when first asked for; "0"
   when none was named. */
void buildah_set_container_tag_source (const char *state_dir);
const char *buildah_container_tag (void);
/* A new name for a working container of ours. */
char *buildah_container_name (void);

/* `buildah from --quiet --pull=never [extra...] IMAGE` (NULL = scratch) under
   such a name; *ctr gets the container's id.  If `from` fails half way
   the name is removed, so nothing is left either way. */
int buildah_from (const char *image, const char *const *extra, char **ctr, ps_error **err);

/* ---- working containers: from, mount, commit, rm ------------------------- */

/* A buildah working container, optionally mounted; zeroed = none. */
struct buildah_wc
{
  char *ctr;
  char *mnt; /* mount point, NULL when not mounted */
};

/* buildah_from (image, extra), then `buildah mount` if asked (a failed
   mount removes the container).  Nothing is wrapped: callers say what the
   container was for. */
int buildah_wc_from (const char *image, const char *const *extra, bool mount, struct buildah_wc *w, ps_error **err);
/* `buildah mount`: w->mnt gets the mount point. */
int buildah_wc_mount (struct buildah_wc *w, ps_error **err);
/* `buildah commit --quiet [opts...] [--rm] CTR`; *image gets the new image
   id (first line).  With `rm` the container is gone afterwards (w zeroed):
   one buildah call less where nothing reads it again. */
int buildah_wc_commit (struct buildah_wc *w, const char *const *opts, bool rm, char **image, ps_error **err);
/* `buildah rm` (which unmounts too); no-op for a zeroed struct. */
void buildah_wc_remove (struct buildah_wc *w);

#endif
