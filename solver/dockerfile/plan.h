/* plan.h — a /build request made ready to run, and the one Dockerfile
 * loader every frontend path uses.
 *
 * dockerfile_plan_new is to /build and /libpod/build what solve_plan_new
 * (solver/solve.h) is to /solve: everything that can be wrong with the
 * request is found here, before the response starts streaming; what comes
 * out is the dockerfile.v0 job's input. */
#ifndef SOLVER_DOCKERFILE_PLAN_H
#define SOLVER_DOCKERFILE_PLAN_H

#include "common/ps.h"
#include "solver/dockerfile/build.h"
#include "solver/dockerfile/build_options.h"

/* A /build or /libpod/build request as its query parameters describe it
   (handlers/build_params.c parses them). */
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

struct dockerfile_env
{
  const char *job_dir;         /* the build's own directory */
  const char *body_path;       /* the uploaded request body (a context tar); removed once used */
  const char *state_dir;       /* --state-dir (session context caches) */
  uint64_t max_context_bytes;  /* --max-context-bytes */
  const char *registry_config; /* the X-Registry-Config header, or NULL */
  const char *registry_auth;   /* the X-Registry-Auth header, or NULL */
};

/* Prepare the build: unpack the context (or arrange for it to come over
 * the client's session, or from a URL), find the Dockerfile(s), apply the
 * ignore rules, move libpod's secrets out of the context, write the
 * registry credentials and hash the Dockerfile.  req->opts is moved into
 * *out, a struct dockerfile_build for dockerfile_build_run (free it with
 * dockerfile_build_free). */
int dockerfile_plan_new (struct build_request *req, const struct dockerfile_env *env, struct dockerfile_build **out,
                         ps_error **err);

#endif
