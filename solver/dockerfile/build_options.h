/* build_options.h — what a Dockerfile build asks of buildah, independent of
 * which endpoint (/build, /libpod/build, /solve) the request came through,
 * and a build's whole input (struct dockerfile_build: the options and where
 * the sources come from), which the driver (build.h), the session
 * transfers (transfer.h) and the result cache (result_cache.h) share. */
#ifndef SOLVER_BUILD_OPTIONS_H
#define SOLVER_BUILD_OPTIONS_H

#include "common/ps.h"

enum build_pull_policy
{
  BUILD_PULL_MISSING = 0, /* pull only when the image is not in storage */
  BUILD_PULL_ALWAYS,
  BUILD_PULL_NEVER,
  BUILD_PULL_NEWER,
};

struct build_options
{
  char *context_dir;    /* unpacked local context; NULL when `remote` is used */
  char *remote;         /* git or http(s) context URL handed to buildah */
  ps_strv dockerfiles;  /* relative to the context dir, or URLs */

  ps_strv tags;         /* normalised names given to buildah -t */
  ps_strv client_tags;  /* the same names as the client sent them */

  bool quiet;
  bool nocache;
  bool rm;              /* default true */
  bool forcerm;
  bool layers;
  bool squash;
  enum build_pull_policy pull;

  ps_strv build_args;   /* "K=V" */
  ps_strv labels;       /* "K=V" */
  char *target;
  ps_strv platforms;    /* "os/arch[/variant]" */
  ps_strv cache_from;   /* registry repositories */
  ps_strv cache_to;
  ps_strv cache_from_refs; /* the cache imports as named (tags kept); empty: cache_from */

  char *network;        /* NULL (default), "host", "none" */
  ps_strv add_hosts;    /* "host:ip" */
  ps_strv ulimits;      /* "name=soft:hard" */
  int64_t shm_size;     /* bytes, 0 = default */
  int64_t memory, memswap, cpu_shares, cpu_period, cpu_quota;
  char *cpuset_cpus, *cpuset_mems, *cgroup_parent;

  char *format;         /* "docker" or "oci" */
  char *isolation;      /* "chroot" / "oci" override, NULL = daemon's choice */
  ps_strv secrets;      /* "id=X,src=/abs/path" */
  ps_strv ssh;          /* "ID=/abs/socket": agents forwarded from the session */
  ps_strv build_contexts; /* "name=value" for buildah --build-context */
  char *authfile;       /* registry credentials for pulls, 0600 */
  ps_strv env;          /* extra "NAME=value" for the buildah process */
};

void build_options_init (struct build_options *o);
void build_options_free (struct build_options *o);

/* The complete `buildah build` argv for these options. */
void build_options_to_argv (const struct build_options *o, ps_strv *argv);

struct session_sources; /* solver/session_io.h */

/* A Dockerfile build's input. */
struct dockerfile_build
{
  struct build_options opts;
  char *dockerfile_name;   /* for "[internal] load build definition from X" */
  char *definition_digest; /* sha256 hex of the Dockerfile bytes (seeds vertex digests) */
  uint64_t context_bytes;  /* bytes of context received, for the status */
  struct session_sources *session; /* NULL: the context is already in opts */
  char *client_session;    /* with session NULL: the client's session (secrets, ssh agents) for a
                              gateway frontend's LLB, when the context came another way */
  char *state_dir;         /* --state-dir (gateway frontends) */
  ps_strv warnings;        /* said when the build starts (cache imports it cannot use...) */
  ps_strv entitlements;    /* granted (network.host, security.insecure): for a gateway frontend's LLB */
  char *list_name;         /* a multi-platform build's manifest list, under a name of its own until the
                              job ends (dockerfile_build_release_list); NULL otherwise */
  char *list_id;           /* that list's id */
  ps_strv platform_images; /* that list's images: platform, image id, platform, image id ... */
  ps_strv platform_notes;  /* base images in storage for other platforms only (platforms.h) */
  bool legacy;             /* classic /build and /libpod/build: `# syntax=` is ignored (and said so),
                              as Docker's legacy builder does; BuildKit-mode builds honour it */
  /* A context the client sent as a tar, keyed before it is unpacked
     (dockerfile_build_key_tar, result_cache.h): */
  bool keyed_by_tar;       /* the keys below came from the tar (NULL ones: not reusable) */
  char *tar_key;           /* the local whole-build key */
  char *tar_shared_key;    /* the shared one (cache imports/exports) */
  char *context_tar;       /* the tar, while its unpack into opts.context_dir waits for a miss */
  char *dockerfile_bytes;  /* the Dockerfile, as read from that tar */
  size_t dockerfile_len;
  uint64_t max_context_bytes; /* --max-context-bytes, for that unpack */
};

/* Free what `b` holds (an embedded one: solve.c's plan); it is zeroed. */
void dockerfile_build_clear (struct dockerfile_build *b);
void dockerfile_build_free (struct dockerfile_build *b);

#endif
