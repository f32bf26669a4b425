/* runc_state.h — runc's records of the RUN containers of a killed buildah.
 *
 * buildah runs a RUN step (and `buildah run`) as `runc create` + `runc
 * start` of a container named "buildah-buildah<N>" whose bundle is a
 * temporary directory "$TMPDIR/buildah<N>", and `runc delete`s it and
 * removes the bundle when the step ends.  A buildah killed by a signal
 * (SIGKILL from outside, the OOM killer, or our own cancel running out of
 * grace) does neither: runc's state directory stays in its root (tmpfs)
 * with the container `stopped`, and the bundle stays in $TMPDIR — one of
 * each per killed build, forever.
 *
 * Which records are the killed buildah's is told by the container's init:
 * runc keeps its pid and start time (state.json "init_process_pid",
 * "init_process_start", the same clock ticks as /proc/PID/stat field 22),
 * and podsolved saw that process below buildah (ps_child_watch_below).  A
 * pid and start time both equal cannot be another container's, so
 * Podman's containers and other builds' are never touched. */
#ifndef SOLVER_RUNC_STATE_H
#define SOLVER_RUNC_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/process.h"

/* buildah passes its runtime no --root (buildah 1.28 runs `RUNTIME create
   --bundle B --pid-file P ID`), so runc keeps its state in its default
   root, which for root outside a user namespace is this. */
#define RUNC_STATE_ROOT "/run/runc"

/* ps_child_killed_fn for a `buildah build` or `buildah run`: remove runc's
   record (`runc delete --force`) and the bundle of every container whose
   init was among `procs`; logs one line per container.  `ud` is unused. */
void runc_state_remove_killed (void *ud, const struct ps_proc_id *procs, size_t n);

/* The same with the state root and runtime binary given, for tests:
   returns how many containers were removed. */
size_t runc_state_remove_of (const char *root, const char *runtime, const struct ps_proc_id *procs, size_t n);

/* ---- exposed for unit tests ---------------------------------------------- */

/* What podsolved reads of runc's <root>/<id>/state.json. */
struct runc_state
{
  char *id;
  pid_t init_pid;
  unsigned long long init_start;
  char *bundle; /* the config's "bundle=" label; NULL when absent */
};

/* `runtime --root root delete --force id`: runc kills what may still run
   in the container, removes its cgroup and its state directory.  False
   (and a warning) when it fails. */
bool runc_state_delete (const char *root, const char *runtime, const char *id);

/* Parse a state.json; -1 when it is not one (no id, no init pid). */
int runc_state_parse (const char *json, struct runc_state *out);
void runc_state_clear (struct runc_state *s);
/* Whether the container's init is one of `procs` (pid and start time). */
bool runc_state_init_among (const struct runc_state *s, const struct ps_proc_id *procs, size_t n);
/* The bundle of a buildah RUN container that may be removed with it: a
   directory "…/buildah<digits>" for the id "buildah-buildah<digits>",
   an absolute path with nothing mountinfo would escape.  Else NULL. */
const char *runc_state_buildah_bundle (const struct runc_state *s);

#endif
