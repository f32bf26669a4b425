/* control_request.h — Control.Solve's protobuf SolveRequest (control.proto,
 * as buildx and buildctl send it) as the struct solve_request the /solve
 * path runs.  The request is rewritten into /solve's JSON shape and checked
 * by schema_solve_request_parse, so both paths accept exactly the same
 * things and name problems the same way (400 -> INVALID_ARGUMENT).
 *
 * What is mapped rather than copied (grpc-clients.md §5, §10):
 *   - Exporters (field 13), or the deprecated Exporter/ExporterAttrs (3/4)
 *     when 13 is empty;
 *   - exporter "moby" (buildx's docker driver) is the "image" exporter into
 *     podsolve's storage; attrs that mean nothing here (prefer-image-digest,
 *     unpack, store) are dropped;
 *   - local, tar, oci and docker without a server-side "dest" go back to
 *     the client over SolveRequest.Session's FileSend (to_client);
 *   - FrontendAttrs local-sessionid:context / :dockerfile name the session
 *     the sources come from (source_session) when it is another one;
 *     frontend.caps, attest:* and cache-imports (a copy of Cache.Imports)
 *     are the client's bookkeeping and are dropped;
 *   - the deprecated cache fields (ExportRef, ImportRefs) become registry
 *     cache entries. */
#ifndef SCHEMA_CONTROL_REQUEST_H
#define SCHEMA_CONTROL_REQUEST_H

#include "common/ps.h"
#include "schema/control.pb-c.h"
#include "schema/solve_request.h"

/* Frontend "" and no Definition: the client-side gateway (LLBBridge). */
bool schema_control_solve_is_gateway (const Moby__Buildkit__V1__SolveRequest *in);

/* Convert a request.  In gateway mode the frontend attrs are left out (the
   client's frontend reads them) and Ref is required; FrontendInputs are
   the caller's (only gateway mode takes them).  On success *out is filled (free with
   schema_solve_request_free), *definition holds the packed pb.Definition
   (malloc'd, NULL without one) and *internal SolveRequest.Internal.  On
   failure (400) nothing stays allocated. */
int schema_control_solve_request (const Moby__Buildkit__V1__SolveRequest *in, struct solve_request *out,
                                  uint8_t **definition, size_t *definition_len, bool *internal, ps_error **err);

/* FrontendAttrs keys that are the client's bookkeeping and dropped (the
   same for LLBBridge.Solve's FrontendOpt): frontend.caps, attest:*,
   cache-imports, local-sessionid:* (which names the sources' session). */
bool schema_control_frontend_attr_dropped (const char *key);

/* SolveResponse{ExporterResponse} for a job's response pairs (key, value,
   ..., NULL; may be NULL): packed, malloc'd. */
uint8_t *schema_control_solve_response (char *const *response, size_t *len);

#endif
