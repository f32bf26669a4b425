/* buildah.h — the buildah driver: every buildah call goes through here, as
 * an argv array (never a shell string) with podsolved's storage flags. */
#ifndef SOLVER_BUILDAH_H
#define SOLVER_BUILDAH_H

#include <sys/types.h>

#include "common/process.h"
#include "common/ps.h"

struct buildah_config
{
  const char *buildah;        /* binary; default "buildah" from PATH */
  const char *root;           /* --root, NULL = buildah's (Podman's) default */
  const char *runroot;        /* --runroot */
  const char *storage_driver; /* --storage-driver */
};

/* Set once at start-up, before any thread uses the driver. */
void buildah_configure (const struct buildah_config *cfg);

/* Start an argv with the binary and the global storage flags. */
void buildah_argv_init (ps_strv *argv);

/* The isolation every RUN uses, chosen at start-up by buildah_probe_isolation. */
const char *buildah_isolation (void);
const char *buildah_runtime (void); /* NULL = buildah's default */
/* Append "--isolation X [--runtime R]" for the chosen (or overridden) mode. */
void buildah_argv_isolation (ps_strv *argv, const char *override_isolation);

/* Run one tiny container the configured way (a scratch container with the
 * host's /usr bound read-only, running /usr/bin/true).  If OCI isolation
 * cannot run here, fall back to runc when present, else to chroot, and log
 * one line saying what was chosen and why. */
int buildah_probe_isolation (const char *wanted, const char *runtime, ps_error **err);

/* buildah's version string ("1.28.2"), read once at start-up. */
const char *buildah_version (void);

/* Run `buildah ARGS...` (`args` NULL-terminated, the storage flags added)
   to completion.  With `out`, *out gets the whole stdout.  A non-zero exit
   is a 500 "buildah ARGS[0]: exit status N: <its stderr>". */
int buildah_call (const char *const *args, char **out, ps_error **err);
/* The same, *out being the first line of stdout (an id, a path). */
int buildah_call_line (const char *const *args, char **out, ps_error **err);

/* Every working container podsolve makes itself is named PREFIX + random
   hex: the sweep of stopped builds' leftovers (orphans.h) never takes one. */
#define PS_CONTAINER_PREFIX "podsolve-"
/* `buildah from --quiet --pull=never [extra...] IMAGE` (NULL = scratch) under
   such a name; *ctr gets the container's id.  If `from` fails half way
   the name is removed, so nothing is left either way. */
int buildah_from (const char *image, const char *const *extra, char **ctr, ps_error **err);

#endif
