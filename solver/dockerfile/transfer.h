/* transfer.h — a Dockerfile build's sources pulled from the client's
 * BuildKit session (/build v2 and /solve with a session), in the order
 * BuildKit's Dockerfile frontend asks for them (buildkit-protocols.md §7.2):
 *   1. dir "dockerfile" with followpaths [<file>, <file>.dockerignore]
 *      -> "[internal] load build definition from <file>";
 *   2. dir "context" with followpaths [.dockerignore]
 *      -> "[internal] load .dockerignore";
 *   3. registry credentials for the FROM images (Auth/Credentials);
 *   4. dir "context" with the ignore patterns as exclude-patterns
 *      -> "[internal] load build context", status "transferring context:".
 * Each directory lands in a cache under <state-dir>/contexts (session_io.h),
 * so a rebuild transfers only what changed.  Secrets the Dockerfile mounts
 * are fetched into 0600 files on tmpfs for the build's duration, and the
 * ssh agents it mounts that the client forwards are served on sockets there
 * (buildah --ssh ID=SOCKET) until session_sources_release. */
#ifndef SOLVER_DOCKERFILE_TRANSFER_H
#define SOLVER_DOCKERFILE_TRANSFER_H

#include "solver/dockerfile/build_options.h"
#include "solver/job.h"

/* Sync b->session's sources and fill b->opts (context dir, Dockerfile, auth
   file, secrets, ssh sockets) and b->definition_digest.  The caches stay locked until
   session_sources_release. */
int dockerfile_transfer_sources (solver_job *job, struct dockerfile_build *b, ps_error **err);

/* A build whose files came with the request (a tar part, a directory)
   but that names the client's session (b->client_session, POST /solve
   with "session"): the secrets and ssh agents the Dockerfile mounts, from
   that session, into b->opts as dockerfile_transfer_sources does.  *held
   (NULL when the Dockerfile mounts neither) holds them until
   session_sources_free. */
int dockerfile_client_session_inputs (solver_job *job, struct dockerfile_build *b, const char *dockerfile,
                                      struct session_sources **held, ps_error **err);

/* Send the built image's filesystem to the client over its session
   (FileSend): a tree for output "local", a tar for "tar". */
int dockerfile_transfer_export (solver_job *job, struct dockerfile_build *b, const char *image_id, ps_error **err);

#endif
