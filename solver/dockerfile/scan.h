/* scan.h — the Dockerfile loader (find, read, hash) and what the daemon reads out of a Dockerfile's text before buildah
 * sees it: the base images its FROM lines name (registry credentials, the
 * result cache's key) and the secrets and ssh agents its RUN --mount flags
 * ask for (from the client's session), read through the Dockerfile parser
 * (parse.h), so continuations, comments, heredoc bodies and quoted flag
 * values are what BuildKit would make of them.  A Dockerfile that does not
 * parse yields nothing here: the build reports why. */
#ifndef SOLVER_DOCKERFILE_SCAN_H
#define SOLVER_DOCKERFILE_SCAN_H

#include "common/ps.h"

/* The base images a Dockerfile's FROM lines name, in order, without
   "scratch" and the names of earlier stages.  A FROM whose image comes
   from an ARG ("$...") is known only at build time: it is left out and
   the result is false. */
bool dockerfile_from_images (const char *dockerfile, ps_strv *images);

/* The secret ids a Dockerfile mounts, RUN --mount=type=secret,id=X (the id
   defaults to the base name of target= / dst=), each once, in order of
   first use.  Ids that are empty or hold a '/' are left out. */
void dockerfile_secret_ids (const char *dockerfile, ps_strv *ids);

/* The ssh ids a Dockerfile mounts, RUN --mount=type=ssh[,id=X] (the id
   defaults to "default"), each once, in order of first use, in every stage
   (the scan does not know which stages the build needs).  Ids holding a
   '/' are left out. */
void dockerfile_ssh_ids (const char *dockerfile, ps_strv *ids);

/* ---- the Dockerfile loader ----------------------------------------------------------- */

/* Look for the first of `names` (tried in order) that is a regular file
   inside `dir`, by context_file's rules.  Returns 1 with *found pointing at
   that name, 0 when none exists, -1 (400) when a name leads outside `dir`. */
int dockerfile_find (const char *dir, const char *const *names, size_t n, const char **found, ps_error **err);

/* Read the Dockerfile at `path` (at most PS_MAX_DOCKERFILE_BYTES).  `text`
   and `len` may be NULL; `digest`, unless NULL, gets the sha256 hex of the
   bytes, which seeds the build's vertex digests. */
int dockerfile_read (const char *path, char **text, size_t *len, char digest[65], ps_error **err);

#endif
