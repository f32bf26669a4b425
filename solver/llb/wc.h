/* wc.h — the LLB executor's working containers (buildah.h's struct
 * buildah_wc, with the executor's error texts) and its 501 for what it
 * cannot run: what exec.c, fileop.c, merge.c and remote.c share. */
#ifndef SOLVER_LLB_WC_H
#define SOLVER_LLB_WC_H

#include "common/ps.h"
#include "solver/buildah.h"
#include "solver/llb/llb.h"

/* `buildah from` image (NULL = scratch), then `buildah mount` if asked. */
int llb_wc_from (const char *image, bool mount, struct buildah_wc *w, ps_error **err);
/* The same with extra `from` options (NULL-terminated, may be NULL): an
   exec's root takes the options only `from` knows (add-host, ulimit),
   which then live in the working container. */
int llb_wc_from_with (const char *image, const char *const *extra, bool mount, struct buildah_wc *w, ps_error **err);
/* `buildah commit`; *image gets the new image id. */
int llb_wc_commit (struct buildah_wc *w, char **image, ps_error **err);
/* The same with `--rm`: the container is gone afterwards (one buildah
   call less where nothing reads it again). */
int llb_wc_commit_rm (struct buildah_wc *w, char **image, ps_error **err);
/* Unmount and remove (no-op for a zeroed struct). */
void llb_wc_remove (struct buildah_wc *w);

/* A 501 "op <digest> ("name"): <what> is not supported ..."; returns -1. */
int llb_unsupported (ps_error **err, const struct llb_vertex *v, const char *fmt, ...) PS_PRINTF (3, 4);

#endif
