/* orphans.h — working containers a stopped `buildah build` left behind.
 *
 * buildah handles SIGTERM only while a RUN step runs: it stops the step and
 * --force-rm removes the working container.  During FROM, COPY or the
 * commit the signal ends it on the spot, and its container stays in
 * storage.  buildah names build containers after the base image, so the
 * only thing tying such a container to the build is its creation time:
 * inside the stopped build's lifetime.
 *
 * Every `buildah build` is watched from spawn to reap.  When one was
 * stopped, its lifetime becomes a window; once every build that was running
 * when it died has finished (their own containers are gone by then), the
 * containers created inside the window that are still there are removed.
 * Never removed: podsolve's own named containers (podsolve-…), Podman's
 * (they carry metadata), anything made outside the window, and nothing at
 * all for a window that a build keeping its containers (rm=false)
 * overlapped.
 *
 * A running build is also recorded in the state directory, so the window
 * of a build whose daemon was killed is known at the next start. */
#ifndef SOLVER_ORPHANS_H
#define SOLVER_ORPHANS_H

#include <stdbool.h>
#include <time.h>

typedef struct orphan_watch orphan_watch;

/* At start-up, before any build: where builds are recorded while they run
   (<state-dir>/running-builds), and the tag in this daemon's container
   names (buildah_set_container_tag_source: a hash of the state dir).  Then
   removes what a dead earlier run left behind — containers made while its
   builds ran (as for a stopped build, the window ending now) and every
   working container it named itself — and logs one line. */
void orphans_recover (const char *state_dir);

/* Just before spawning a `buildah build`. */
orphan_watch *orphans_build_started (bool keeps_containers);
/* After reaping it.  `stopped`: it was signalled (cancel, disconnect,
   shutdown).  May remove containers (due windows) before returning. */
void orphans_build_ended (orphan_watch *w, bool stopped);

/* ---- exposed for unit tests ---------------------------------------------- */

struct orphan_candidate
{
  char *id;
  char *name;
  struct timespec created;
  bool has_metadata;
};

/* Parse containers-storage's containers.json; returns -1 if it is not. */
int orphans_parse_containers (const char *json, struct orphan_candidate **out, size_t *n_out);
void orphans_candidates_free (struct orphan_candidate *c, size_t n);
/* "2026-11-21T07:12:56.663333687Z" (or with a ±hh:mm offset). */
bool orphans_parse_time (const char *s, struct timespec *out);
/* Whether candidate `c` is a leak of a build that lived in [from, to]. */
bool orphans_is_leak (const struct orphan_candidate *c, const struct timespec *from, const struct timespec *to);

#endif
