/* build_params.h — /build and /libpod/build query parameters (as Docker's
 * and Podman's clients send them) to build options.  Pure parsing: no I/O,
 * so every rule has a unit test. */
#ifndef HANDLERS_BUILD_PARAMS_H
#define HANDLERS_BUILD_PARAMS_H

#include "common/ps.h"
#include "solver/dockerfile/build_options.h"

struct build_request
{
  struct build_options opts;
  bool libpod;
  ps_strv dockerfile_param; /* as sent: relative paths or URLs; empty = auto-detect */
  ps_strv secrets_param;    /* libpod "id=X,src=<path in context>" */
  ps_strv excludes;         /* libpod excludes= overrides the ignore file */
  int version;              /* 1 (classic) or 2 (BuildKit) */
  char *session;
  char *buildid;
  bool use_session_context; /* remote=client-session */
  char *output_type;        /* BuildKit outputs=[{"Type":...}]: "local", "tar", or NULL (the image) */
};

void build_request_init (struct build_request *r);
void build_request_free (struct build_request *r);

/* Parse all query parameters.  Unknown keys are ignored, as Docker and
 * Podman do.  Errors are 400 with Podman's message shape:
 * "failed to parse query parameter 'memory': \"abc\": not an integer". */
int build_params_parse (const struct ps_kv *kv, size_t n, bool libpod, struct build_request *r,
                        ps_error **err);

#endif
