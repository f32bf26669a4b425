/* gateway_image.h — gateway frontends run from images (BuildKit's
 * gateway.v0): the runner frontend_image.h dispatches to. */
#ifndef SOLVER_GATEWAY_IMAGE_H
#define SOLVER_GATEWAY_IMAGE_H

#include "solver/frontend_image.h"

/* Run frontend image `req->image` (see frontend_image.h): resolve it,
   start its entrypoint with LLBBridge on its stdio (network none unless
   its label moby.buildkit.frontend.network.none says "false"), solve
   what it asks on this thread until it calls Return.  A frontend that
   exits first, never calls (PS_FRONTEND_IDLE_MS, default 60 s, without
   a call), or returns an error fails the build with that; nothing of it
   is left running. */
int gateway_image_run (solver_job *job, const struct frontend_image_req *req, char **image_id, ps_error **err);

/* Register gateway_image_run with frontend_image.h (start-up). */
void gateway_image_init (void);

#endif
