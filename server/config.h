/* config.h — podsolved's configuration: command-line flags, parsed once at
 * start-up and read-only afterwards. */
#ifndef SERVER_CONFIG_H
#define SERVER_CONFIG_H

#include "common/log.h"
#include "common/ps.h"

struct ps_config
{
  ps_strv listen;           /* unix:///path or tcp://host:port */
  char *root;               /* buildah --root, NULL = Podman's storage */
  char *runroot;
  char *storage_driver;
  char *state_dir;          /* podsolve's own files */
  char *isolation;          /* wanted: oci or chroot */
  char *runtime;            /* OCI runtime path, NULL = buildah's default */
  char *buildah;            /* buildah binary */
  enum ps_log_level log_level;
  uint64_t max_context_bytes;
  unsigned max_connections;
  unsigned max_connections_per_peer; /* --max-connections-per-peer (default PS_PEER_SHARE_PERCENT of the max) */
  unsigned header_timeout_s; /* --header-timeout: idle connections are closed after it */
  bool insecure_tcp;
  char *tls_cert, *tls_key;  /* TLS for tcp:// listeners */
  char *tls_ca;              /* CA that signs client certificates */
  bool tls_verify;           /* clients must present a certificate signed by tls_ca */
  ps_strv insecure_registries; /* --insecure-registry: plain HTTP / unverified TLS */
  ps_strv output_roots;     /* --allow-output-root: where /solve may write server-side */
  unsigned max_parallel;    /* running jobs at once */
  unsigned max_queued;      /* jobs waiting for a slot; beyond: 429 */
  char *socket_group;       /* --group: group owning the unix sockets */
  unsigned job_ttl_s;       /* finished /solve jobs are kept this long */
  unsigned session_idle_timeout_s; /* unused sessions are closed after this; 0 = never */
  unsigned session_transfer_timeout_s; /* a DiffCopy silent this long fails its build */
  bool sandbox_network_host;           /* --sandbox-network host */
  char *upstream;           /* Podman API socket path non-build requests go to; NULL = none */
  bool upstream_explicit;   /* --upstream was given (else the per-user default) */
  bool spawn_upstream;      /* run `podman system service` on `upstream` ourselves */
  ps_strv buildkit_listen;  /* --buildkit-listen: unix:///PATH, tcp://HOST:PORT sockets serving gRPC (BuildKit's API) */
  char *buildkit_tls_cert, *buildkit_tls_key; /* TLS for the tcp:// ones (required there) */
  char *buildkit_tls_ca;    /* clients of the tcp:// ones need a certificate it signed */
  char *dockerfile_frontend; /* --dockerfile-frontend: NULL or "buildah", or a frontend image */
  bool no_grpc;             /* --no-grpc: POST /grpc goes to the upstream */
  ps_strv allowed_entitlements; /* --allow-insecure-entitlement, besides network.host */
  uint64_t gc_keep_bytes;   /* --gc-keep-storage: the build cache's bound, 0 = none */
  int64_t gc_keep_duration_ns; /* --gc-keep-duration: drop cache unused this long, 0 = never */
};

/* The daemon's configuration (server/ owns it; handlers read it). */
extern struct ps_config ps_cfg;

/* Parse argv into ps_cfg.  Returns 1 when the program should exit 0 at once
   (--help, --version), 0 to run, -1 on a usage error. */
int config_parse (int argc, char **argv, ps_error **err);

/* The --buildkit-tls* flags make sense together and with the
   --buildkit-listen URIs: cert and key both or neither, a CA only with
   them, and tcp:// only with them.  -1 with *err saying what to add. */
int config_check_buildkit_tls (const struct ps_config *cfg, ps_error **err);

/* Whether a build may be granted `name` (network.host always, as dockerd
   allows it by default; security.insecure with --allow-insecure-entitlement).
   -1 with a 403 *err naming the flag for one it may not. */
int config_check_entitlement (const char *name, ps_error **err);

/* The libpod API version podsolved speaks (that of the Podman it fronts). */
const char *config_libpod_api_version (void);
void config_set_libpod_api_version (const char *v);

#define PS_COMPAT_API_VERSION "1.41"
#define PS_COMPAT_MIN_API_VERSION "1.24"

#endif
