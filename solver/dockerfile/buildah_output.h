/* buildah_output.h — the shapes of `buildah build` output podsolve relies
 * on, in one place, and the mapping from them to job events.
 *
 * Shapes (buildah 1.28; each has a unit test in tests/unit/solver/dockerfile/test_buildah_output.c):
 *   stdout  "STEP i/n: INSTR"              single-stage step i of n
 *   stdout  "[s/S] STEP i/n: INSTR"        step i of n in stage s of S
 *   stdout  "--> Using cache <64 hex>"     the step just announced was cached
 *   stdout  "--> <11+ hex>"                the step's layer was committed
 *   stdout  "COMMIT [name]", "[s/S] COMMIT [name]"   final image commit starts
 *   stdout  "Successfully tagged <name>"
 *   stdout  "<64 hex>"                     last line: the image ID
 *   stderr  "Error: <message>"             the build failed; a message ending
 *           "ssh required but no ssh with id <ID> found" (a required=true
 *           ssh mount whose id was not given with --ssh) is reported as
 *           BuildKit's "no SSH key "<ID>" forwarded from the client"
 *   stderr  "subprocess exited with status N"  a RUN exited N
 * Anything else is output of the step being run (stdout -> stream 1,
 * stderr -> stream 2).  If buildah changes a shape, steps stop becoming
 * vertices and show up as plain log text instead: builds still work, the
 * structured progress degrades, and the unit test for that shape fails. */
#ifndef SOLVER_BUILDAH_OUTPUT_H
#define SOLVER_BUILDAH_OUTPUT_H

#include "common/ps.h"
#include "solver/job.h"

enum buildah_line_kind
{
  BUILDAH_LINE_OTHER,
  BUILDAH_LINE_STEP,
  BUILDAH_LINE_USING_CACHE,
  BUILDAH_LINE_LAYER,
  BUILDAH_LINE_COMMIT,
  BUILDAH_LINE_TAGGED,
  BUILDAH_LINE_IMAGE_ID,
  BUILDAH_LINE_ERROR,
  BUILDAH_LINE_SUBPROCESS_EXIT,
};

struct buildah_line
{
  enum buildah_line_kind kind;
  int stage, nstages;      /* STEP/COMMIT: 1-based, 0 when single-stage */
  int step, nsteps;        /* STEP */
  const char *rest;        /* STEP: the instruction; COMMIT/TAGGED: name;
                              ERROR: message; points into the line */
  char id[65];             /* USING_CACHE, LAYER, IMAGE_ID */
  int exit_code;           /* SUBPROCESS_EXIT */
};

/* Classify one line (without its trailing newline). */
void buildah_line_classify (const char *line, bool from_stderr, struct buildah_line *out);

/* The failed build's message for the client (malloc'd): buildah's, with
   the shapes listed above said in BuildKit's words. */
char *buildah_error_message (const char *message);

/* The mapping state for one build: turns lines into vertex/log events. */
typedef struct buildah_progress buildah_progress;

/* Say `line` (a STEP line buildah is known to print first, from
   dockerfile_buildah_first_step) now, as if buildah had; buildah's own
   line is then passed over when it comes as predicted. */
void buildah_progress_announce (buildah_progress *p, const char *line);

/* `root_digest` seeds the vertex digests (the digest of the build
   definition), so the same Dockerfile gives the same digests every run. */
buildah_progress *buildah_progress_new (solver_job *job, const char *root_digest);
/* The build's context directory, so error messages can say "the build
   context" instead of a server path (NULL: none). */
void buildah_progress_set_context_dir (buildah_progress *p, const char *dir);
/* One platform's run of a multi-platform build: its vertices are named
   "[linux/arm64 1/2] ..." and have digests of their own. */
void buildah_progress_set_platform (buildah_progress *p, const char *platform);

/* The step opened by the last STEP line was reused whole: complete it as
   cached, with `text` (may be NULL) as its output. */
void buildah_progress_cached (buildah_progress *p, const char *text);

/* A buildah error message as a user should read it: a Go struct dump
   (" &imagebuilder.Step{...}") cut off, the context directory `ctx_dir`
   (may be NULL) named as the build context instead of by its server path,
   and buildah_error_message's BuildKit wording. */
char *buildah_error_for_user (const char *msg, const char *ctx_dir);
/* Feed one complete line, newline included when the builder printed one. */
void buildah_progress_line (buildah_progress *p, const char *line, size_t len, bool from_stderr);
/* The build process ended: complete or fail the open vertex. */
void buildah_progress_finish (buildah_progress *p, bool success, const char *error);

const char *buildah_progress_image_id (const buildah_progress *p); /* "" if none seen */
const char *buildah_progress_error (const buildah_progress *p);    /* NULL if none */
int buildah_progress_exit_code (const buildah_progress *p);        /* 0 if unknown */
const char *buildah_progress_current_vertex (const buildah_progress *p);
/* The cache keys of the ARG steps buildah pushed to --cache-to, in build
   order (see cache_registry.h for why they matter). */
const ps_strv *buildah_progress_arg_cache_keys (const buildah_progress *p);
void buildah_progress_free (buildah_progress *p);

#endif
