/* registry_auth.h — Docker's X-Registry-Config / X-Registry-Auth headers to
 * a containers-auth.json file buildah reads with --authfile. */
#ifndef SOLVER_REGISTRY_AUTH_H
#define SOLVER_REGISTRY_AUTH_H

#include "common/ps.h"

/* Decode the header values (either may be NULL) and, when they carry any
 * credential, write `path` (mode 0600) and return 1; return 0 when there is
 * nothing to write (e.g. "e30=" = {} or "null"), -1 with a 400 error when a
 * header cannot be decoded.  Credentials never reach a log line. */
int registry_auth_write (const char *x_registry_config, const char *x_registry_auth,
                         const char *path, ps_error **err);

#endif
