/* build_params.h — /build and /libpod/build query parameters (as Docker's
 * and Podman's clients send them) to build options.  Pure parsing: no I/O,
 * so every rule has a unit test. */
#ifndef HANDLERS_BUILD_PARAMS_H
#define HANDLERS_BUILD_PARAMS_H

#include "common/ps.h"
#include "solver/dockerfile/plan.h" /* struct build_request */

void build_request_init (struct build_request *r);
void build_request_free (struct build_request *r);

/* Parse all query parameters.  Unknown keys are ignored, as Docker and
 * Podman do.  Errors are 400 with Podman's message shape:
 * "failed to parse query parameter 'memory': \"abc\": not an integer". */
int build_params_parse (const struct ps_kv *kv, size_t n, bool libpod, struct build_request *r,
                        ps_error **err);

#endif
