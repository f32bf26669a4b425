/* dockerfile_build.h — the dockerfile.v0 frontend: a Dockerfile build run by
 * `buildah build`, reported as vertices, logs and a final result. */
#ifndef SOLVER_DOCKERFILE_BUILD_H
#define SOLVER_DOCKERFILE_BUILD_H

#include "solver/dockerfile/build_options.h"
#include "solver/job.h"

/* Sources that come over a BuildKit session instead of the request body
   (see session_sources.h). */
struct session_sources
{
  char *session_id;     /* the /session uuid */
  char *state_dir;      /* podsolved's --state-dir */
  char *cache_root;     /* <state-dir>/contexts: caches kept between builds */
  char *job_dir;        /* the job's directory (credentials) */
  char *filename;       /* Dockerfile name in the "dockerfile" dir; NULL = Dockerfile */
  char *context_name;   /* the client's dir names: "context" ... */
  char *dockerfile_name;/* ... and "dockerfile" */
  /* filled while preparing, released after the build */
  int lock_fds[3];
  char *secrets_dir;    /* tmpfs directory holding this build's secrets */
  size_t files_requested; /* context files the daemon asked for (tests read it) */
  char *output_type;    /* "local" or "tar": send the result to the client (FileSend) */
  uint64_t max_context_bytes; /* --max-context-bytes for what the session sends */
};

struct dockerfile_build
{
  struct build_options opts;
  char *dockerfile_name;   /* for "[internal] load build definition from X" */
  char *definition_digest; /* sha256 hex of the Dockerfile bytes (seeds vertex digests) */
  uint64_t context_bytes;  /* bytes of context received, for the status */
  struct session_sources *session; /* NULL: the context is already in opts */
};

void dockerfile_build_free (struct dockerfile_build *b);

/* The dockerfile.v0 frontend: run `buildah build`, append its vertices and
   logs.  On success *image_id is the built image (64 hex).  On failure the
   ERROR event (failing vertex, RUN exit code) is already appended. */
int dockerfile_frontend_run (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err);

/* The /build job: the frontend, then RESULT with the image ID and the
   client's tags.  userdata is a struct dockerfile_build *. */
int dockerfile_build_run (solver_job *job, void *userdata, ps_error **err);

#endif
