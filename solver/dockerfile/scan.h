/* scan.h — what the daemon reads out of a Dockerfile's text before buildah
 * sees it: the base images its FROM lines name (registry credentials, the
 * result cache's key) and the secrets its RUN --mount flags ask for (fetched
 * from the client's session).  A light line scan, not a Dockerfile parser:
 * buildah parses the file for real and reports its errors itself. */
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

#endif
