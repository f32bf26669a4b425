/* gateway.h — client-side gateway builds (BuildKit's client.Build, what
 * buildx and buildctl do): Control.Solve arrives with no frontend and no
 * definition, and the client then drives the build itself over LLBBridge
 * (handlers/grpc_bridge.c), every call naming the build by the metadata
 * `buildkit-controlapi-buildid` = Control.SolveRequest.Ref.  Each
 * LLBBridge.Solve becomes a ref: a result solved by the existing solver
 * (the Dockerfile frontend or the LLB engine, through solve.h's plan) on
 * the build's job, so its vertexes and logs are the job's events.
 * LLBBridge.Return names the ref the build produced; Control.Solve then
 * exports it with the request's exporters.
 *
 * The registry is process-wide: the LLBBridge calls may come on any
 * stream of any connection, before, during or after the Control.Solve
 * that registers the build (calls arriving early wait for it, as
 * BuildKit's do). */
#ifndef SOLVER_GATEWAY_H
#define SOLVER_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/ps.h"
#include "schema/fsutil.pb-c.h"
#include "schema/ops.pb-c.h"
#include "schema/solve_request.h"
#include "solver/job.h"
#include "solver/solve_source.h"

/* How long an LLBBridge call naming a build not (yet) registered waits
   for it before NOT_FOUND (BuildKit: 3 s). */
#define GATEWAY_BUILD_WAIT_MS 3000

/* Control.SolveRequest.FrontendInputs: a name and its raw pb.Definition. */
struct gateway_input
{
  const char *name;
  const uint8_t *definition;
  size_t len;
};

/* A FrontendInputs entry (`name`, a definition; NULL is an empty one) as
   a gateway_input: the definition packed into a buffer the caller frees
   ((uint8_t *) in.definition). */
struct gateway_input gateway_input_pack (const char *name, const Pb__Definition *d);

/* What Control.Solve knows about the build; everything is copied. */
struct gateway_build_opts
{
  const char *session;          /* Control.SolveRequest.Session (local sources, secrets), or NULL */
  const ps_strv *entitlements;  /* granted entitlements (network.host, security.insecure), or NULL */
  const char *job_dir;          /* each ref solve works in a subdirectory (NULL: the job's directory) */
  const char *authfile;         /* registry credentials, or NULL */
  const char *state_dir;        /* --state-dir */
  uint64_t max_context_bytes;   /* --max-context-bytes */
  const struct gateway_input *inputs; /* FrontendInputs, served by LLBBridge.Inputs */
  size_t n_inputs;
  /* Control.SolveRequest.Cache: every Dockerfile ref the client solves
     imports and exports these (the LLB executor takes none). */
  const struct solve_cache_entry *cache_imports, *cache_exports;
  size_t n_cache_imports, n_cache_exports;
  /* Polled while waiting for the client (NULL: only the job's cancel
     counts): true once the Control.Solve call is gone; the build is then
     cancelled. */
  bool (*cancelled) (void *ud);
  void *cancelled_ud;
  /* Local sources by name that the refs' LLB reads instead of the
     session's (a frontend image's "context" and "dockerfile"). */
  const struct solve_source *sources;
  size_t n_sources;
  /* Polled like `cancelled` (NULL: not asked): -1 with the error once the
     client cannot go on (a frontend container that exited); the build
     ends with that error, the job is not cancelled. */
  int (*alive) (void *ud, ps_error **err);
  void *alive_ud;
  /* > 0: the build fails (504) once no LLBBridge call has been in
     progress, and no solve running, for this long (a frontend that
     never speaks, or stops speaking). */
  int idle_ms;
};

/* At most this many LLBBridge.Solve calls in one build (BuildKit has no
   such bound; a frontend that loops gets RESOURCE_EXHAUSTED). */
#define GATEWAY_MAX_SOLVES 1000

/* Run client-side gateway build `build_id` on `job` (call it from the
   job's function: the refs the client asks for are solved on this thread,
   one at a time).  Registers the build, serves LLBBridge.Solve requests
   until the client calls LLBBridge.Return, then unregisters it.  On
   success *result_image is the image id (64 hex) of the ref the client
   returned, or NULL when it returned no ref (buildx's probe build).
   Fails with 409 if `build_id` is already running, 499 if the job or the
   call was cancelled, and with the client's own error when it returned
   one (its google.rpc code mapped to the nearest HTTP status). */
int gateway_solve_run (const char *build_id, const struct gateway_build_opts *opts, solver_job *job,
                       char **result_image, ps_error **err);

/* The same as solve.h's struct solve_gateway, for a Control.Solve in
   gateway mode that runs as a solve plan (its exporters export the
   result):
     env.gateway = (struct solve_gateway) { gateway_frontend_run,
                                            gateway_frontend_new (ref, &opts),
                                            gateway_frontend_free };
   `opts` is copied; a NULL job_dir means the job's own directory. */
void *gateway_frontend_new (const char *build_id, const struct gateway_build_opts *opts);
int gateway_frontend_run (solver_job *job, void *ud, char **image_id, ps_error **err);
void gateway_frontend_free (void *ud);

/* How a frontend container's stdio is served: LLBBridge bound to one build
   (handlers/grpc.c's handlers_grpc_serve_frontend, registered at
   start-up; blocks until the peer goes away, the fd stays the caller's).
   NULL when the peer ended cleanly, else why the connection failed
   (malloc'd). */
typedef char *(*gateway_bridge_serve_fn) (int fd, const char *build_id, const char *origin);
void gateway_set_bridge_server (gateway_bridge_serve_fn fn);
gateway_bridge_serve_fn gateway_bridge_server (void);

/* ---- for the LLBBridge handlers ------------------------------------------ */

typedef struct gateway_build gateway_build;

/* The running build `build_id` (a new reference), waiting up to `wait_ms`
   for it to be registered; NULL when there is none (NOT_FOUND). */
gateway_build *gateway_build_lookup (const char *build_id, int wait_ms);
void gateway_build_unref (gateway_build *b);
solver_job *gateway_build_job (gateway_build *b);

/* LLBBridge.Solve: a frontend ("dockerfile.v0" with `frontend_opt`, or
   "gateway.v0" with the image in its "source" opt: a nested frontend) or a
   raw pb.Definition.  Queued to the build's job thread; the caller blocks
   until it is solved, polling `cancelled` (its call went away: the build
   is cancelled).  *ref_id gets the new ref's id.  An empty definition
   (and no frontend) is a valid request for "no result": *ref_id = NULL. */
struct gateway_solve_req
{
  const char *frontend;               /* NULL/"" with a definition */
  const struct solve_attrs *frontend_opt;
  const uint8_t *definition;          /* NULL with a frontend */
  size_t definition_len;
  const struct solve_cache_entry *cache_imports;
  size_t n_cache_imports;
  const struct gateway_input *inputs; /* FrontendInputs for a gateway.v0 frontend (its Inputs) */
  size_t n_inputs;
};
int gateway_build_solve (gateway_build *b, const struct gateway_solve_req *req, bool (*cancelled) (void *ud),
                         void *ud, char **ref_id, ps_error **err);

/* LLBBridge.Return: `ref_id` (NULL: no result) or an error (code != 0, a
   google.rpc code, with its message).  `image_config`: the result's
   metadata "containerimage.config" (an OCI image config a client-side
   frontend sets, see image_config.h), or NULL; it is applied to the ref's
   image before the build hands it over.  An unknown ref is a 404, a
   config that is not one a 400. */
int gateway_build_return (gateway_build *b, const char *ref_id, int code, const char *message,
                          const char *image_config, ps_error **err);

/* LLBBridge.Evaluate: 0 when `ref_id` names a solved ref (every ref is
   solved when LLBBridge.Solve returns), 404 otherwise. */
int gateway_build_ref_check (gateway_build *b, const char *ref_id, ps_error **err);

/* FrontendInputs of the build (borrowed, valid while `b` is held). */
const struct gateway_input *gateway_build_inputs (gateway_build *b, size_t *n);

/* LLBBridge.Warn: a SOLVER_EV_WARNING on the build's job (`vertex` may
   be NULL or ""; `details` NULL-terminated, may be NULL). */
void gateway_build_warn (gateway_build *b, const char *vertex, int64_t level, const char *short_msg,
                         const char *const *details, const char *url);

/* LLBBridge.ResolveImageConfig: the config (OCI JSON, *config) and the
   manifest digest (*digest, may be "") of image `ref` in storage.
   `mode` "local": never pull (404 when missing); "pull": pull first;
   anything else ("default", ""): pull only when missing. */
int gateway_resolve_image_config (gateway_build *b, const char *ref, const char *mode, char **digest,
                                  char **config, ps_error **err);

/* ---- reading a ref's files (mounted read-only; paths resolved inside the
   ref's root file system, symlinks included: nothing outside is reached) */

/* ReadFile: the whole file, or `length` bytes from `offset` when
   `has_range`; more than `max` bytes is a 413. */
int gateway_ref_read_file (gateway_build *b, const char *ref_id, const char *path, bool has_range, int64_t offset,
                           int64_t length, size_t max, ps_buf *out, ps_error **err);
/* StatFile: *st filled (strings allocated; free with gateway_stat_free). */
int gateway_ref_stat (gateway_build *b, const char *ref_id, const char *path, Fsutil__Types__Stat *st,
                      ps_error **err);
/* ReadDir: the entries of `dir` (not recursive) whose names match
   `include_pattern` (a shell pattern; NULL/"" = all), sorted by name. */
int gateway_ref_read_dir (gateway_build *b, const char *ref_id, const char *dir, const char *include_pattern,
                          Fsutil__Types__Stat ***entries, size_t *n, ps_error **err);
void gateway_stat_free (Fsutil__Types__Stat *st);

/* The same below `root`, an open directory (O_PATH will do) taken as "/":
   what the three above do once the ref is mounted (unit tests and
   fuzz_bridge_request run them on a directory of their own). */
int gateway_root_read_file (int root, const char *path, bool has_range, int64_t offset, int64_t length, size_t max,
                            ps_buf *out, ps_error **err);
int gateway_root_stat (int root, const char *path, Fsutil__Types__Stat *st, ps_error **err);
int gateway_root_read_dir (int root, const char *dir, const char *include_pattern, Fsutil__Types__Stat ***entries,
                           size_t *n, ps_error **err);

#endif
