/* runc_exec.h — an LLB exec run by podsolved itself as ONE `runc run`.
 *
 * `buildah run` costs an exec four re-executions of buildah for the user
 * lookups (chrootuser-open) and four runc processes (create, start, state,
 * delete).  When podsolved's RUN isolation is OCI with runc and the exec
 * needs no network of its own (network none, or host), the LLB executor
 * mounts the working container itself, writes the OCI bundle buildah would
 * write (config.json made here, /etc/hosts, /etc/resolv.conf,
 * /etc/hostname, /run/.containerenv) and runs `runc --root <private root>
 * run --bundle B ID`: create, start, wait and delete in one process.
 *
 * The spec is the one buildah 1.28 generates for the same `buildah run`
 * (captured from its bundle: see the comments at each part), with three
 * deliberate LLB differences: env, cwd and user are the op's (BuildKit's
 * meaning: an empty user is root, an empty cwd "/", PATH added when the op
 * has none), never the image config's, which `buildah run` would fill in.
 *
 * runc's records live in a root of podsolved's own (<state>/runc), so that
 * everything found there at start-up is a dead run's and is deleted
 * (llb_runc_sweep), and the tests can tell them apart. */
#ifndef SOLVER_LLB_RUNC_EXEC_H
#define SOLVER_LLB_RUNC_EXEC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/ps.h"

/* ---- the user ------------------------------------------------------------ */

struct llb_user
{
  uint32_t uid, gid;
  uint32_t *groups; /* additional gids, the primary one first (as buildah) */
  size_t n_groups;
};

void llb_user_clear (struct llb_user *u);

/* buildah's chrootuser.GetUser and GetAdditionalGroupsForUser on the texts
   of a rootfs's /etc/passwd and /etc/group (NULL = the file is absent):
   spec "user[:group]", each a name or a number; "" is root.  A number not
   in passwd is that uid with gid 0; an unknown name is a 400.  Without an
   explicit group the additional groups are the groups of /etc/group that
   list the user's name. */
int llb_user_from_text (const char *passwd, size_t passwd_len, const char *group, size_t group_len,
                        const char *spec, struct llb_user *u, ps_error **err);
/* The same, reading /etc/passwd and /etc/group below `rootfs` with
   openat2 RESOLVE_IN_ROOT (symlinks and ".." never leave it). */
int llb_user_resolve (const char *rootfs, const char *spec, struct llb_user *u, ps_error **err);

/* ---- seccomp ------------------------------------------------------------- */

/* containers-common's profile (moby's format: archMap, includes/excludes
   by arch, capability and kernel) turned into the OCI form for a process
   whose bounding set is `caps` ("CAP_X" names), on architecture `goarch`
   ("amd64") and kernel `kmaj`.`kmin`, as containers/common's
   seccomp.setupSeccomp does for buildah.  NULL with *err on bad input. */
cJSON *llb_seccomp_from_moby (const char *profile, const char *const *caps, size_t n_caps, const char *goarch,
                              int kmaj, int kmin, ps_error **err);

/* ---- the spec ------------------------------------------------------------ */

struct llb_oci_mount
{
  const char *dest;
  const char *type;   /* "bind", "tmpfs" */
  const char *source;
  const char *options[6]; /* NULL-terminated */
};

struct llb_rlimit
{
  char type[32]; /* "RLIMIT_NOFILE" */
  uint64_t soft, hard;
};

struct llb_oci_spec
{
  const char *rootfs;
  const char *const *args;
  size_t n_args;
  const char *const *env; /* final, "NAME=value" */
  size_t n_env;
  const char *cwd;
  const struct llb_user *user;
  const char *const *caps; /* the bounding set; also effective, permitted and ambient for uid 0 */
  size_t n_caps;
  bool host_network;
  const char *hostname;
  const struct llb_oci_mount *mounts; /* the op's and the bundle's files, in any order */
  size_t n_mounts;
  const struct llb_rlimit *rlimits;
  size_t n_rlimits;
  const cJSON *seccomp; /* copied; NULL = none */
};

/* buildah's default capabilities (containers.conf default_capabilities). */
extern const char *const llb_default_caps[];
extern const size_t llb_n_default_caps;

/* BuildKit's INSECURE: every capability podsolved's own bounding set
   holds, as "CAP_X" ("all" would include ones outside it, which runc
   cannot grant). */
void llb_all_caps (ps_strv *out);

/* config.json text for `s`. */
char *llb_oci_spec_json (const struct llb_oci_spec *s);

/* buildah's rlimits for an exec with the op's ulimits `names`/`soft`/`hard`
   (-1 = unlimited): RLIMIT_NOFILE 1024 and RLIMIT_NPROC 32768 unless
   given, as its generated spec has them.  *out malloc'd. */
int llb_rlimits (const char *const *names, const int64_t *soft, const int64_t *hard, size_t n,
                 struct llb_rlimit **out, size_t *n_out, ps_error **err);

/* ---- running ------------------------------------------------------------- */

/* Whether execs may run this way: isolation oci with a runc runtime, and
   the seccomp profile readable and converted (said once in the log when
   not).  `insecure`: the profile for every capability. */
bool llb_runc_usable (void);
const cJSON *llb_runc_seccomp (bool insecure);
const char *llb_runc_binary (void);

/* Set at start-up: <state_dir>/runc is runc's root, <state_dir>/runc-bundles
   the bundles' parent.  Everything found in either is a dead run's: each
   container is deleted (`runc delete --force`, which kills what runs in
   it) and each bundle removed; one log line says how many. */
void llb_runc_sweep (const char *state_dir);
const char *llb_runc_root (void);
const char *llb_runc_bundles (void);

/* `runc --root R delete --force ID` when runc still has a record of ID. */
void llb_runc_delete (const char *id);

#endif
