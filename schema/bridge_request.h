/* bridge_request.h — LLBBridge (gateway.proto) requests as the gateway
 * (solver/gateway.h) takes them: what handlers/grpc_bridge.c decodes from a
 * client-side frontend (buildx, buildctl, a frontend image) before any of
 * it reaches a build.  Kept apart from the handlers so the unit tests and
 * fuzz_bridge_request run it without a server or a build.
 *
 * Everything here only reads the protobuf-c message; what it returns
 * either points into the message (borrowed: valid while the message is)
 * or is the caller's to free, as each function says. */
#ifndef SCHEMA_BRIDGE_REQUEST_H
#define SCHEMA_BRIDGE_REQUEST_H

#include "common/ps.h"
#include "schema/gateway.pb-c.h"
#include "schema/solve_request.h"

/* A FrontendInputs entry: its name (borrowed) and its pb.Definition
   packed again (owned; an entry without a value is an empty definition). */
struct bridge_input
{
  const char *name;
  uint8_t *definition;
  size_t len;
};

/* LLBBridge.Solve's request, as gateway_build_solve takes it. */
struct bridge_solve
{
  const char *frontend;          /* borrowed; "" or NULL with a definition */
  struct solve_attrs frontend_opt;
  struct solve_cache_entry *cache_imports;
  size_t n_cache_imports;
  uint8_t *definition;           /* the packed pb.Definition, NULL without one */
  size_t definition_len;
  struct bridge_input *inputs;   /* FrontendInputs (gateway.v0 only) */
  size_t n_inputs;
};

/* Convert a SolveRequest.  Refused with 501 (nothing allocated, *out all
   zero): FrontendInputs with a frontend other than gateway.v0, Final (the
   deprecated inline return), SourcePolicies.  On success free *out with
   schema_bridge_solve_free.  The definition's op bytes are kept as the
   client marshalled them (each op's digest is of those bytes). */
int schema_bridge_solve (const Moby__Buildkit__V1__Frontend__SolveRequest *in, struct bridge_solve *out,
                         ps_error **err);
void schema_bridge_solve_free (struct bridge_solve *s);

/* The one ref a Result names (*id borrowed from `res`, NULL when it names
   none; `res` may be NULL).  A map of more than one ref (several
   platforms) is refused with 501. */
int schema_bridge_result_ref (const Moby__Buildkit__V1__Frontend__Result *res, const char **id, ps_error **err);

/* The result's "containerimage.config" metadata (with one platform a
   client may key it "containerimage.config/<platform>") as a string
   (malloc'd; cut at a NUL inside), or NULL when it has none. */
char *schema_bridge_result_image_config (const Moby__Buildkit__V1__Frontend__Result *res);

/* WarnRequest's byte fields as text (malloc'd; each cut at a NUL inside):
   *short_msg, and *details NULL-terminated (free with ps_strv_free_raw). */
void schema_bridge_warn_text (const Moby__Buildkit__V1__Frontend__WarnRequest *in, char **short_msg,
                              char ***details);

#endif
