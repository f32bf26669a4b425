/* solve.h — a /solve job: a frontend (dockerfile.v0 via buildah build; LLB
 * definitions are the LLB solver's) followed by its exporters, reported
 * through the job's event log and ending in one RESULT or ERROR. */
#ifndef SOLVER_SOLVE_H
#define SOLVER_SOLVE_H

#include "schema/solve_request.h"
#include "solver/dockerfile/build.h"
#include "solver/job.h"
#include "solver/solve_source.h"

struct solve_plan;

struct solve_env
{
  const char *job_dir;                 /* the job's own directory */
  const struct solve_source *sources;  /* local sources by name; those with a `tar` are unpacked by
                                          solve_plan_new (a Dockerfile build's context only when
                                          its result cannot be reused) */
  size_t n_sources;
  const ps_strv *output_roots;         /* --allow-output-root dirs */
  const char *authfile;                /* registry credentials, or NULL */
  const char *state_dir;               /* --state-dir (session context caches) */
  uint64_t max_context_bytes;          /* --max-context-bytes */
  const uint8_t *definition;           /* a multipart "definition" part (raw pb.Definition), or NULL */
  size_t definition_len;
  /* Control.Solve's client-side gateway mode (no frontend, no definition):
     the result comes from `gateway` (gateway.h's gateway_frontend_run:
     the client drives the build over LLBBridge) instead of a frontend, and
     the exporters export it.  The plan owns gateway_ud (freed with
     gateway_ud_free). */
  struct solve_gateway
  {
    int (*run) (solver_job *job, void *ud, char **image_id, ps_error **err);
    void *ud;
    void (*ud_free) (void *ud);
  } gateway;
};

/* Check everything about `req` that can be checked before running and
 * derive the build: frontend attrs (unknown ones are 400s), the context and
 * Dockerfile sources, named contexts, exporters and their destinations,
 * cache options and entitlements.  `req` is moved into the plan. */
int solve_plan_new (struct solve_request *req, const struct solve_env *env, struct solve_plan **out, ps_error **err);
void solve_plan_free (struct solve_plan *p);

/* Run the plan's frontend (or its definition) on `job` without the
   exporters: *image_id gets the result image (64 hex).  On failure the
   ERROR event has been emitted.  solve_run is this plus the exporters;
   a client-side gateway build (gateway.h) solves its refs with it. */
int solve_plan_build (solver_job *job, struct solve_plan *p, char **image_id, ps_error **err);

/* The job function; userdata is the plan. */
int solve_run (solver_job *job, void *userdata, ps_error **err);

#endif
