/* router.h — the route table: (method, pattern, handler).  Compat routes
 * match with or without a /vX.Y prefix; libpod routes live under
 * /vX.Y.Z/libpod/ (and /libpod/_ping bare, as Podman allows). */
#ifndef SERVER_ROUTER_H
#define SERVER_ROUTER_H

#include "server/http.h"

/* Strip the version prefix and match; fills req->path, req->libpod,
   req->params.  Returns the handler, or NULL (404). */
const struct ps_handler *router_lookup (struct ps_request *req);

/* The methods routed for this path, as the value of a 405's Allow header
   ("GET, POST"; RFC 9110 §15.5.6 requires it), or NULL when no route has
   the path (404).  The caller frees it. */
char *router_allowed_methods (const char *url);

#endif
