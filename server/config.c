/* config.c — command-line flags. */
#define _GNU_SOURCE
#include "server/config.h"

#include "common/log.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/limits.h"
#include "session/session_limits.h"
#include "solver/cache_prune.h"

struct ps_config ps_cfg;
static char *libpod_api_version;

const char *
config_libpod_api_version (void)
{
  return libpod_api_version ? libpod_api_version : "4.3.1";
}

void
config_set_libpod_api_version (const char *v)
{
  free (libpod_api_version);
  libpod_api_version = xstrdup (v);
}

static void
usage (FILE *f)
{
  fputs ("Usage: podsolved [OPTION]...\n"
         "Serve the Docker/Podman build API (and /solve) on a socket; builds run with buildah.\n"
         "\n"
         "  --listen URI            unix:///PATH or tcp://HOST:PORT; repeatable\n"
         "                          (default /run/podsolve/podsolve.sock as root,\n"
         "                          $XDG_RUNTIME_DIR/podsolve/podsolve.sock otherwise;\n"
         "                          systemd socket activation via LISTEN_FDS)\n"
         "  --root DIR              containers-storage root for buildah (default: Podman's)\n"
         "  --runroot DIR           containers-storage run root\n"
         "  --storage-driver NAME   containers-storage driver (overlay, vfs, ...)\n"
         "  --state-dir DIR         podsolve's own files (default /var/lib/podsolve as root,\n"
         "                          $XDG_DATA_HOME/podsolve otherwise)\n"
         "  --isolation oci|chroot  how RUN steps are isolated (default oci; probed at start,\n"
         "                          falling back to runc, then chroot)\n"
         "  --runtime PATH          OCI runtime for oci isolation\n"
         "  --buildah PATH          buildah binary (default: buildah from PATH)\n"
         "  --max-context-bytes N   largest build context accepted (default 4 GiB)\n"
         "  --max-connections N     concurrent connections per listener (default 256); one that\n"
         "                          arrives when all are taken closes the longest idle one\n"
         "  --max-connections-per-peer N  of them, from one TCP address or unix peer uid\n"
         "                          (default 3/4 of --max-connections)\n"
         "  --header-timeout S      close a connection with no request in progress after S\n"
         "                          seconds: a slow request head, an idle keep-alive (default 30; 0 = never)\n"
         "  --insecure-tcp          allow a tcp:// listener without TLS\n"
         "  --tls-cert FILE, --tls-key FILE  serve tcp:// listeners over TLS with this PEM pair\n"
         "  --tls-ca FILE           CA certificate (PEM) for client certificates\n"
         "  --tls-verify            require a client certificate signed by --tls-ca (as dockerd --tlsverify)\n"
         "  --allow-insecure-entitlement security.insecure\n"
         "                          let builds that ask for it (RUN --security=insecure) run with every\n"
         "                          capability; /build builds, which cannot ask, are granted it\n"
         "  --gc-keep-storage SIZE  keep the build cache under SIZE (e.g. 10GB) by itself, least\n"
         "                          recently used first, as BuildKit's GC (default: no bound)\n"
         "  --gc-keep-duration DUR  remove build cache unused for longer than DUR (e.g. 168h)\n"
         "  --insecure-registry HOST[:PORT]  pull from and push to this registry without TLS checks\n"
         "                          (as dockerd --insecure-registry; loopback ones need none); repeatable\n"
         "  --allow-output-root DIR /solve exporters may write server-side under DIR; repeatable\n"
         "  --max-parallel N        builds running at once; the rest queue (default 4)\n"
         "  --sandbox-network bridge|host  the network of LLB execs in BuildKit's default\n"
         "                          (sandbox) mode, e.g. RUN through a gateway frontend: a\n"
         "                          bridge of their own set up by netavark (default), or the\n"
         "                          host's, as buildkitd --oci-worker-net=host (no per-exec\n"
         "                          bridge: faster; the host's loopback is reachable)\n"
         "  --max-queued N          builds waiting for a slot; more get 429 (default 64)\n"
         "  --group NAME            group owning the unix sockets (mode 0660)\n"
         "  --job-ttl SECONDS       how long finished /solve jobs and their outputs are kept (default 600)\n"
         "  --session-idle-timeout SECONDS  close a /session no build uses after this (default 600; 0 = never)\n"
         "  --session-transfer-timeout SECONDS  fail a build whose client sends nothing of its\n"
         "                          context for this long (default 120)\n"
         "  --upstream URI          unix:///PATH of the Podman API service every non-build\n"
         "                          request is passed through to, or \"none\" (default\n"
         "                          /run/podman/podman.sock as root,\n"
         "                          $XDG_RUNTIME_DIR/podman/podman.sock otherwise)\n"
         "  --spawn-upstream        run `podman system service --time=0` on the upstream\n"
         "                          socket (default STATE_DIR/upstream/podman.sock) as a\n"
         "                          supervised child, stopped when podsolved exits\n"
         "  --buildkit-listen URI   also serve BuildKit's gRPC API (Control, LLBBridge, Health)\n"
         "                          on unix:///PATH or tcp://HOST:PORT (TLS only), as buildkitd\n"
         "                          --addr (buildx's remote driver, buildctl); repeatable; default off\n"
         "  --buildkit-tlscert FILE, --buildkit-tlskey FILE  the PEM pair --buildkit-listen tcp://\n"
         "                          serves TLS with (as buildkitd --tlscert, --tlskey)\n"
         "  --buildkit-tlscacert FILE  require client certificates signed by this CA on\n"
         "                          --buildkit-listen tcp:// (mutual TLS, as buildkitd --tlscacert)\n"
         "  --no-grpc               pass POST /grpc to the upstream instead of serving it\n"
         "  --dockerfile-frontend buildah|IMAGE  the Dockerfile dialect of BuildKit-mode builds\n"
         "                          without a `# syntax=` line: buildah's (default), or the\n"
         "                          gateway frontend IMAGE (e.g. docker.io/docker/dockerfile:1)\n"
         "  --log-level LEVEL       error, warn, info (default) or debug\n"
         "  --log-format text|json  log lines as text (default) or one JSON object each\n"
         "                          ({\"time\",\"level\",\"msg\"}: journald, Loki, jq)\n"
         "  --help, --version\n",
         f);
}

enum
{
  OPT_LISTEN = 1000,
  OPT_ROOT,
  OPT_RUNROOT,
  OPT_STORAGE_DRIVER,
  OPT_STATE_DIR,
  OPT_ISOLATION,
  OPT_RUNTIME,
  OPT_BUILDAH,
  OPT_MAX_CONTEXT,
  OPT_MAX_CONNECTIONS,
  OPT_INSECURE_TCP,
  OPT_LOG_LEVEL,
  OPT_HELP,
  OPT_VERSION,
  OPT_OUTPUT_ROOT,
  OPT_MAX_PARALLEL,
  OPT_MAX_QUEUED,
  OPT_TLS_CERT,
  OPT_TLS_KEY,
  OPT_TLS_CA,
  OPT_TLS_VERIFY,
  OPT_INSECURE_REGISTRY,
  OPT_GROUP,
  OPT_JOB_TTL,
  OPT_SESSION_IDLE_TIMEOUT,
  OPT_SESSION_TRANSFER_TIMEOUT,
  OPT_SANDBOX_NETWORK,
  OPT_UPSTREAM,
  OPT_SPAWN_UPSTREAM,
  OPT_BUILDKIT_LISTEN,
  OPT_BUILDKIT_TLSCERT,
  OPT_BUILDKIT_TLSKEY,
  OPT_BUILDKIT_TLSCACERT,
  OPT_NO_GRPC,
  OPT_DOCKERFILE_FRONTEND,
  OPT_LOG_FORMAT,
  OPT_ALLOW_ENTITLEMENT,
  OPT_GC_KEEP_STORAGE,
  OPT_MAX_CONNECTIONS_PER_PEER,
  OPT_HEADER_TIMEOUT,
  OPT_GC_KEEP_DURATION,
};

/* A size as dockerd and buildkitd take them: bytes, or a number with a
   unit (k, m, g, t, with or without "b" or "ib": 1024s, as Docker's
   RAMInBytes), "10GB", "512MiB", "1.5g". */
static int
parse_size (const char *flag, const char *s, uint64_t *out, ps_error **err)
{
  char *end = NULL;
  errno = 0;
  double v = strtod (s, &end);
  if (errno || end == s || v < 0 || s[0] == '-' || s[0] == '+')
    return ps_error_set (err, 400, "%s: \"%s\" is not a size (bytes, or e.g. 512MB, 10GB)", flag, s);
  static const char units[] = "bkmgt";
  double mult = 1;
  if (*end)
    {
      const char *u = strchr (units, tolower ((unsigned char) *end));
      if (u == NULL || *u == '\0')
        return ps_error_set (err, 400, "%s: \"%s\" has an unknown unit (b, k, m, g, t)", flag, s);
      for (const char *p = units; p < u; p++)
        mult *= 1024;
      end++;
      if (*u != 'b' && (strcasecmp (end, "b") == 0 || strcasecmp (end, "ib") == 0))
        end += strlen (end);
      if (*end)
        return ps_error_set (err, 400, "%s: \"%s\" has an unknown unit (b, k, m, g, t)", flag, s);
    }
  if (v * mult > 9e18)
    return ps_error_set (err, 400, "%s: \"%s\" is too large", flag, s);
  *out = (uint64_t) (v * mult);
  return 0;
}

static int
parse_u64 (const char *flag, const char *s, uint64_t *out, ps_error **err)
{
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno || end == s || *end != '\0' || s[0] == '-')
    return ps_error_set (err, 400, "%s: \"%s\" is not a positive integer", flag, s);
  *out = v;
  return 0;
}

int
config_check_entitlement (const char *name, ps_error **err)
{
  if (strcmp (name, "network.host") == 0)
    return 0;
  for (size_t i = 0; i < ps_cfg.allowed_entitlements.n; i++)
    if (strcmp (ps_cfg.allowed_entitlements.v[i], name) == 0)
      return 0;
  return ps_error_set (err, 403, "granting entitlement %s is not allowed by build daemon configuration "
                                 "(start podsolved with --allow-insecure-entitlement %s)", name, name);
}

int
config_check_buildkit_tls (const struct ps_config *cfg, ps_error **err)
{
  if ((cfg->buildkit_tls_cert == NULL) != (cfg->buildkit_tls_key == NULL))
    return ps_error_set (err, 400, "--buildkit-tlscert and --buildkit-tlskey go together");
  if (cfg->buildkit_tls_ca && cfg->buildkit_tls_cert == NULL)
    return ps_error_set (err, 400, "--buildkit-tlscacert needs --buildkit-tlscert and --buildkit-tlskey");
  /* Anyone who can reach a TCP port could run builds as this user: a
     tcp:// gRPC socket is served with TLS or not at all. */
  for (size_t i = 0; i < cfg->buildkit_listen.n; i++)
    if (ps_str_has_prefix (cfg->buildkit_listen.v[i], "tcp://") && cfg->buildkit_tls_cert == NULL)
      return ps_error_set (err, 400,
                           "--buildkit-listen %s: tcp:// is served only with TLS: give --buildkit-tlscert and "
                           "--buildkit-tlskey (and --buildkit-tlscacert to require client certificates)",
                           cfg->buildkit_listen.v[i]);
  return 0;
}

int
config_parse (int argc, char **argv, ps_error **err)
{
  static const struct option opts[] = {
    { "listen", required_argument, NULL, OPT_LISTEN },
    { "root", required_argument, NULL, OPT_ROOT },
    { "runroot", required_argument, NULL, OPT_RUNROOT },
    { "storage-driver", required_argument, NULL, OPT_STORAGE_DRIVER },
    { "state-dir", required_argument, NULL, OPT_STATE_DIR },
    { "isolation", required_argument, NULL, OPT_ISOLATION },
    { "runtime", required_argument, NULL, OPT_RUNTIME },
    { "buildah", required_argument, NULL, OPT_BUILDAH },
    { "max-context-bytes", required_argument, NULL, OPT_MAX_CONTEXT },
    { "max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS },
    { "max-connections-per-peer", required_argument, NULL, OPT_MAX_CONNECTIONS_PER_PEER },
    { "header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT },
    { "insecure-tcp", no_argument, NULL, OPT_INSECURE_TCP },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "allow-output-root", required_argument, NULL, OPT_OUTPUT_ROOT },
    { "max-parallel", required_argument, NULL, OPT_MAX_PARALLEL },
    { "max-queued", required_argument, NULL, OPT_MAX_QUEUED },
    { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
    { "tls-key", required_argument, NULL, OPT_TLS_KEY },
    { "tls-ca", required_argument, NULL, OPT_TLS_CA },
    { "tls-verify", no_argument, NULL, OPT_TLS_VERIFY },
    { "insecure-registry", required_argument, NULL, OPT_INSECURE_REGISTRY },
    { "group", required_argument, NULL, OPT_GROUP },
    { "job-ttl", required_argument, NULL, OPT_JOB_TTL },
    { "session-idle-timeout", required_argument, NULL, OPT_SESSION_IDLE_TIMEOUT },
    { "sandbox-network", required_argument, NULL, OPT_SANDBOX_NETWORK },
    { "session-transfer-timeout", required_argument, NULL, OPT_SESSION_TRANSFER_TIMEOUT },
    { "upstream", required_argument, NULL, OPT_UPSTREAM },
    { "spawn-upstream", no_argument, NULL, OPT_SPAWN_UPSTREAM },
    { "buildkit-listen", required_argument, NULL, OPT_BUILDKIT_LISTEN },
    { "buildkit-tlscert", required_argument, NULL, OPT_BUILDKIT_TLSCERT },
    { "buildkit-tlskey", required_argument, NULL, OPT_BUILDKIT_TLSKEY },
    { "buildkit-tlscacert", required_argument, NULL, OPT_BUILDKIT_TLSCACERT },
    { "no-grpc", no_argument, NULL, OPT_NO_GRPC },
    { "dockerfile-frontend", required_argument, NULL, OPT_DOCKERFILE_FRONTEND },
    { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
    { "allow-insecure-entitlement", required_argument, NULL, OPT_ALLOW_ENTITLEMENT },
    { "gc-keep-storage", required_argument, NULL, OPT_GC_KEEP_STORAGE },
    { "gc-keep-duration", required_argument, NULL, OPT_GC_KEEP_DURATION },
    { "help", no_argument, NULL, OPT_HELP },
    { "version", no_argument, NULL, OPT_VERSION },
    { NULL, 0, NULL, 0 },
  };

  ps_cfg.isolation = xstrdup ("oci");
  ps_cfg.log_level = PS_LOG_INFO;
  ps_cfg.max_context_bytes = PS_DEFAULT_MAX_CONTEXT_BYTES;
  ps_cfg.max_connections = PS_DEFAULT_MAX_CONNECTIONS;
  ps_cfg.header_timeout_s = PS_DEFAULT_HEADER_TIMEOUT_S;
  bool per_peer_given = false;
  ps_cfg.max_parallel = PS_DEFAULT_MAX_PARALLEL;
  ps_cfg.max_queued = PS_DEFAULT_MAX_QUEUED;
  ps_cfg.job_ttl_s = PS_DEFAULT_JOB_TTL_S;
  ps_cfg.session_idle_timeout_s = PS_DEFAULT_SESSION_IDLE_TIMEOUT_S;
  ps_cfg.session_transfer_timeout_s = PS_DIFFCOPY_IDLE_TIMEOUT_MS / 1000;

  int c;
  uint64_t u;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1)
    {
      switch (c)
        {
        case OPT_LISTEN:
          if (!ps_str_has_prefix (optarg, "unix://") && !ps_str_has_prefix (optarg, "tcp://"))
            return ps_error_set (err, 400, "--listen: \"%s\": use unix:///PATH or tcp://HOST:PORT", optarg);
          ps_strv_push (&ps_cfg.listen, optarg);
          break;
        case OPT_ROOT:
          ps_cfg.root = xstrdup (optarg);
          break;
        case OPT_RUNROOT:
          ps_cfg.runroot = xstrdup (optarg);
          break;
        case OPT_STORAGE_DRIVER:
          ps_cfg.storage_driver = xstrdup (optarg);
          break;
        case OPT_STATE_DIR:
          ps_cfg.state_dir = xstrdup (optarg);
          break;
        case OPT_ISOLATION:
          if (strcmp (optarg, "oci") != 0 && strcmp (optarg, "chroot") != 0)
            return ps_error_set (err, 400, "--isolation: \"%s\": use oci or chroot", optarg);
          free (ps_cfg.isolation);
          ps_cfg.isolation = xstrdup (optarg);
          break;
        case OPT_RUNTIME:
          ps_cfg.runtime = xstrdup (optarg);
          break;
        case OPT_BUILDAH:
          ps_cfg.buildah = xstrdup (optarg);
          break;
        case OPT_MAX_CONTEXT:
          if (parse_u64 ("--max-context-bytes", optarg, &ps_cfg.max_context_bytes, err) < 0)
            return -1;
          break;
        case OPT_MAX_CONNECTIONS_PER_PEER:
          if (parse_u64 ("--max-connections-per-peer", optarg, &u, err) < 0)
            return -1;
          ps_cfg.max_connections_per_peer = (unsigned) (u ? u : 1);
          per_peer_given = true;
          break;
        case OPT_HEADER_TIMEOUT:
          if (parse_u64 ("--header-timeout", optarg, &u, err) < 0)
            return -1;
          ps_cfg.header_timeout_s = (unsigned) (u > 86400 ? 86400 : u);
          break;
        case OPT_MAX_CONNECTIONS:
          if (parse_u64 ("--max-connections", optarg, &u, err) < 0)
            return -1;
          ps_cfg.max_connections = (unsigned) (u ? u : 1);
          break;
        case OPT_OUTPUT_ROOT:
          if (optarg[0] != '/')
            return ps_error_set (err, 400, "--allow-output-root: \"%s\" must be an absolute path", optarg);
          ps_strv_push (&ps_cfg.output_roots, optarg);
          break;
        case OPT_TLS_CERT:
          ps_cfg.tls_cert = xstrdup (optarg);
          break;
        case OPT_TLS_KEY:
          ps_cfg.tls_key = xstrdup (optarg);
          break;
        case OPT_TLS_CA:
          ps_cfg.tls_ca = xstrdup (optarg);
          break;
        case OPT_TLS_VERIFY:
          ps_cfg.tls_verify = true;
          break;
        case OPT_GC_KEEP_STORAGE:
          if (parse_size ("--gc-keep-storage", optarg, &ps_cfg.gc_keep_bytes, err) < 0)
            return -1;
          break;
        case OPT_GC_KEEP_DURATION:
          if (cache_prune_parse_duration (optarg, &ps_cfg.gc_keep_duration_ns, err) < 0)
            return ps_error_wrap (err, "--gc-keep-duration");
          break;
        case OPT_ALLOW_ENTITLEMENT:
          if (strcmp (optarg, "security.insecure") && strcmp (optarg, "network.host"))
            return ps_error_set (err, 400, "--allow-insecure-entitlement: \"%s\": expected security.insecure or "
                                           "network.host", optarg);
          ps_strv_push (&ps_cfg.allowed_entitlements, optarg);
          break;
        case OPT_INSECURE_REGISTRY:
          if (*optarg == '\0' || strpbrk (optarg, "/\" \n"))
            return ps_error_set (err, 400, "--insecure-registry: \"%s\": expected HOST[:PORT]", optarg);
          ps_strv_push (&ps_cfg.insecure_registries, optarg);
          break;
        case OPT_MAX_QUEUED:
          if (parse_u64 ("--max-queued", optarg, &u, err) < 0)
            return -1;
          ps_cfg.max_queued = (unsigned) u;
          break;
        case OPT_GROUP:
          ps_cfg.socket_group = xstrdup (optarg);
          break;
        case OPT_MAX_PARALLEL:
          if (parse_u64 ("--max-parallel", optarg, &u, err) < 0)
            return -1;
          ps_cfg.max_parallel = (unsigned) u;
          break;
        case OPT_JOB_TTL:
          if (parse_u64 ("--job-ttl", optarg, &u, err) < 0)
            return -1;
          ps_cfg.job_ttl_s = (unsigned) u;
          break;
        case OPT_SESSION_IDLE_TIMEOUT:
          if (parse_u64 ("--session-idle-timeout", optarg, &u, err) < 0)
            return -1;
          if (u > PS_MAX_SESSION_IDLE_TIMEOUT_S)
            return ps_error_set (err, 400, "--session-idle-timeout: %llu s is more than a week",
                                 (unsigned long long) u);
          ps_cfg.session_idle_timeout_s = (unsigned) u;
          break;
        case OPT_SANDBOX_NETWORK:
          if (strcmp (optarg, "host") != 0 && strcmp (optarg, "bridge") != 0)
            return ps_error_set (err, 400, "--sandbox-network: \"%s\" is neither bridge nor host", optarg);
          ps_cfg.sandbox_network_host = strcmp (optarg, "host") == 0;
          break;
        case OPT_SESSION_TRANSFER_TIMEOUT:
          if (parse_u64 ("--session-transfer-timeout", optarg, &u, err) < 0)
            return -1;
          if (u == 0 || u > PS_MAX_SESSION_TRANSFER_TIMEOUT_S)
            return ps_error_set (err, 400, "--session-transfer-timeout: %llu s is not between 1 s and a day",
                                 (unsigned long long) u);
          ps_cfg.session_transfer_timeout_s = (unsigned) u;
          break;
        case OPT_UPSTREAM:
          free (ps_cfg.upstream);
          ps_cfg.upstream = NULL;
          ps_cfg.upstream_explicit = true;
          if (strcmp (optarg, "none") == 0)
            break;
          /* unix:// only: attach relays and the 502 advice assume a local
             Podman service; its TCP listener has no client authentication. */
          if (!ps_str_has_prefix (optarg, "unix:///"))
            return ps_error_set (err, 400, "--upstream: \"%s\": use unix:///PATH or none", optarg);
          if (strlen (optarg + 7) >= sizeof ((struct sockaddr_un *) 0)->sun_path)
            return ps_error_set (err, 400, "--upstream: \"%s\": the socket path is too long", optarg);
          ps_cfg.upstream = xstrdup (optarg + 7);
          break;
        case OPT_SPAWN_UPSTREAM:
          ps_cfg.spawn_upstream = true;
          break;
        case OPT_BUILDKIT_LISTEN:
          if (!(ps_str_has_prefix (optarg, "unix://") && optarg[7] == '/') && !ps_str_has_prefix (optarg, "tcp://"))
            return ps_error_set (err, 400, "--buildkit-listen: \"%s\": use unix:///PATH or tcp://HOST:PORT", optarg);
          ps_strv_push (&ps_cfg.buildkit_listen, optarg);
          break;
        case OPT_BUILDKIT_TLSCERT:
          free (ps_cfg.buildkit_tls_cert);
          ps_cfg.buildkit_tls_cert = xstrdup (optarg);
          break;
        case OPT_BUILDKIT_TLSKEY:
          free (ps_cfg.buildkit_tls_key);
          ps_cfg.buildkit_tls_key = xstrdup (optarg);
          break;
        case OPT_BUILDKIT_TLSCACERT:
          free (ps_cfg.buildkit_tls_ca);
          ps_cfg.buildkit_tls_ca = xstrdup (optarg);
          break;
        case OPT_LOG_FORMAT:
          if (ps_log_set_format (optarg) < 0)
            return ps_error_set (err, 400, "--log-format: \"%s\" (use text or json)", optarg);
          break;
        case OPT_DOCKERFILE_FRONTEND:
          if (*optarg == '\0')
            return ps_error_set (err, 400, "--dockerfile-frontend: give buildah or an image");
          free (ps_cfg.dockerfile_frontend);
          ps_cfg.dockerfile_frontend = xstrdup (optarg);
          break;
        case OPT_NO_GRPC:
          ps_cfg.no_grpc = true;
          break;
        case OPT_INSECURE_TCP:
          ps_cfg.insecure_tcp = true;
          break;
        case OPT_LOG_LEVEL:
          if (ps_log_parse_level (optarg, &ps_cfg.log_level) < 0)
            return ps_error_set (err, 400, "--log-level: \"%s\": use error, warn, info or debug", optarg);
          break;
        case OPT_HELP:
          usage (stdout);
          return 1;
        case OPT_VERSION:
          printf ("podsolved %s\n", PODSOLVE_VERSION);
          return 1;
        default:
          usage (stderr);
          return ps_error_set (err, 400, "unknown or incomplete option %s", argv[optind - 1]);
        }
    }
  if (optind < argc)
    return ps_error_set (err, 400, "unexpected argument %s", argv[optind]);
  if (!per_peer_given)
    ps_cfg.max_connections_per_peer = ps_cfg.max_connections - ps_cfg.max_connections * (100 - PS_PEER_SHARE_PERCENT) / 100;
  if (ps_cfg.max_connections_per_peer == 0 || ps_cfg.max_connections_per_peer > ps_cfg.max_connections)
    ps_cfg.max_connections_per_peer = ps_cfg.max_connections;
  if ((ps_cfg.tls_cert == NULL) != (ps_cfg.tls_key == NULL))
    return ps_error_set (err, 400, "--tls-cert and --tls-key go together");
  if (ps_cfg.tls_verify && (ps_cfg.tls_ca == NULL || ps_cfg.tls_cert == NULL))
    return ps_error_set (err, 400, "--tls-verify needs --tls-ca, --tls-cert and --tls-key");
  if (config_check_buildkit_tls (&ps_cfg, err) < 0)
    return -1;

  bool root_user = geteuid () == 0;
  const char *xdg_run = getenv ("XDG_RUNTIME_DIR");
  if (ps_cfg.listen.n == 0 && getenv ("LISTEN_FDS") == NULL)
    {
      if (root_user || xdg_run == NULL)
        ps_strv_push (&ps_cfg.listen, "unix:///run/podsolve/podsolve.sock");
      else
        ps_strv_pushf (&ps_cfg.listen, "unix://%s/podsolve/podsolve.sock", xdg_run);
    }
  if (ps_cfg.state_dir == NULL)
    {
      const char *xdg_data = getenv ("XDG_DATA_HOME");
      const char *home = getenv ("HOME");
      if (root_user)
        ps_cfg.state_dir = xstrdup ("/var/lib/podsolve");
      else if (xdg_data)
        ps_cfg.state_dir = xasprintf ("%s/podsolve", xdg_data);
      else
        ps_cfg.state_dir = xasprintf ("%s/.local/share/podsolve", home ? home : "/tmp");
    }
  if (ps_cfg.spawn_upstream)
    {
      if (ps_cfg.upstream_explicit && ps_cfg.upstream == NULL)
        return ps_error_set (err, 400, "--spawn-upstream needs an upstream socket, not --upstream none");
      if (!ps_cfg.upstream_explicit)
        {
          /* A private socket: nobody else's Podman service is disturbed. */
          ps_cfg.upstream = xasprintf ("%s/upstream/podman.sock", ps_cfg.state_dir);
          ps_cfg.upstream_explicit = true;
          if (strlen (ps_cfg.upstream) >= sizeof ((struct sockaddr_un *) 0)->sun_path)
            return ps_error_set (err, 400,
                                 "--spawn-upstream: %s is too long for a socket path; pass "
                                 "--upstream unix:///SHORTER/PATH",
                                 ps_cfg.upstream);
        }
    }
  else if (!ps_cfg.upstream_explicit)
    {
      /* Where `podman system service` listens by default (podman-build-api.md §2.5). */
      if (root_user)
        ps_cfg.upstream = xstrdup ("/run/podman/podman.sock");
      else if (xdg_run)
        ps_cfg.upstream = xasprintf ("%s/podman/podman.sock", xdg_run);
    }
  /* Forwarding to ourselves would loop until every connection is taken. */
  for (size_t i = 0; ps_cfg.upstream && i < ps_cfg.listen.n; i++)
    if (ps_str_has_prefix (ps_cfg.listen.v[i], "unix://") && strcmp (ps_cfg.listen.v[i] + 7, ps_cfg.upstream) == 0)
      return ps_error_set (err, 400, "--upstream unix://%s is podsolved's own --listen socket", ps_cfg.upstream);
  return 0;
}
