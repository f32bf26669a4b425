/* router.h — the route table: (method, pattern, handler).  Compat routes
 * match with or without a /vX.Y prefix; libpod routes live under
 * /vX.Y.Z/libpod/ (and /libpod/_ping bare, as Podman allows). */
#ifndef SERVER_ROUTER_H
#define SERVER_ROUTER_H

#include "server/http.h"

/* Strip the version prefix and match; fills req->path, req->libpod,
   req->params.  Returns the handler, or NULL (404). */
const struct ps_handler *router_lookup (struct ps_request *req);

/* True when the path exists for some other method (405 rather than 404). */
bool router_path_known (const char *path);

#endif
