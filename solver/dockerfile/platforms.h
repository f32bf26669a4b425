/* platforms.h — what a Dockerfile build for explicit --platform values
 * needs before buildah starts, and what it needs after.
 *
 * Before: each stage the target needs is built for the platform its FROM
 * names (--platform=$BUILDPLATFORM: the host's; nothing: the target's).  A
 * stage that RUNs commands for a platform this machine cannot execute
 * (another architecture and no qemu-user binfmt handler for it) fails the
 * build before anything runs, with the stage, the line and what to
 * install.  A base image that is in storage for other platforms only is
 * noted, so a failed pull can say why buildah went to a registry.
 *
 * After: buildah 1.28's layer cache does not tell platforms apart for
 * stages FROM scratch, so an image built "for linux/arm64" may be a cached
 * linux/amd64 one; platform_image_matches says whether a result really is
 * for its platform. */
#ifndef SOLVER_DOCKERFILE_PLATFORMS_H
#define SOLVER_DOCKERFILE_PLATFORMS_H

#include "common/ps.h"
#include "solver/dockerfile/build_options.h"

/* "linux/arm64" for "Linux/aarch64/v8" and the like: lower case, GOARCH
   names, arm64's default variant dropped; malloc'd. */
char *platform_normalize (const char *p);

/* True when platforms `a` and `b` (normalised or not) are the same; a
   variant only one of them names is not a difference. */
bool platform_equal (const char *a, const char *b);

/* The host's platform ("linux/amd64"); malloc'd. */
char *platform_host (void);

/* The checks above for the build `b` whose Dockerfile text is `text`
   (`fname` as the user named it, for messages).  -1 with *err (400) when a
   stage cannot run; notes about base images go to *notes ("FROM busybox
   for linux/arm64: ..."), to be added to a pull failure's message. */
int platform_preflight (const struct dockerfile_build *b, const char *text, size_t len, const char *fname,
                        ps_strv *notes, ps_error **err);

/* The platform of image `id` in storage ("linux/amd64"), malloc'd, or
   NULL when it cannot be read. */
char *platform_of_image (const char *id);

#endif
