/* main.c — podsolved: start-up, the isolation probe, listeners, and an
 * orderly shutdown on SIGTERM/SIGINT (stop accepting, cancel builds, let
 * buildah remove its working containers, exit 0). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <microhttpd.h>
#include <openssl/ssl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "handlers/grpc.h"
#include "server/buildkit_listen.h"
#include "solver/llb/exec.h"
#include "solver/gateway.h"
#include "solver/gateway_image.h"
#include "server/config.h"
#include "server/http.h"
#include "server/listen.h"
#include "server/proxy.h"
#include "server/router.h"
#include "server/upstream.h"
#include "solver/buildah.h"
#include "solver/cache_gc.h"
#include "solver/cache_prune.h"
#include "solver/cache_registry.h"
#include "solver/job.h"
#include "solver/orphans.h"
#include "session/diffcopy.h"
#include "session/session.h"
#include "session/session_limits.h"
#include "solver/llb/runc_exec.h"
#include "solver/llb/snapshot.h"

/* Builds interrupted by a crash leave their directories behind. */
static void
clean_stale_builds (const char *builds_dir)
{
  DIR *d = opendir (builds_dir);
  if (d == NULL)
    return;
  int removed = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      cleanup_free char *path = xasprintf ("%s/%s", builds_dir, de->d_name);
      ps_error *err = NULL;
      if (ps_rm_rf (path, &err) == 0)
        removed++;
      else
        {
          ps_warn ("cannot remove stale build directory %s: %s", path, err->msg);
          ps_error_free (err);
        }
    }
  closedir (d);
  if (removed)
    ps_info ("removed %d build directories left by an earlier run", removed);
}

/* The libpod API version is that of the Podman installed beside us, which
   podman-remote compares against its own. */
static void
detect_libpod_version (void)
{
  char *argv[] = { (char *) "podman", (char *) "--version", NULL };
  cleanup_free char *out = NULL;
  int status = -1;
  if (ps_run_capture (argv, &out, NULL, &status, NULL) < 0 || status != 0 || out == NULL)
    return;
  const char *v = strstr (out, "version ");
  if (v == NULL)
    return;
  v += 8;
  cleanup_free char *ver = xstrndup (v, strcspn (v, " \n"));
  if (*ver)
    config_set_libpod_api_version (ver);
}

int
main (int argc, char **argv)
{
  sigset_t stop_signals;
  sigemptyset (&stop_signals);
  sigaddset (&stop_signals, SIGTERM);
  sigaddset (&stop_signals, SIGINT);
  /* Blocked before any thread starts, so only sigwait() below sees them. */
  pthread_sigmask (SIG_BLOCK, &stop_signals, NULL);
  signal (SIGPIPE, SIG_IGN);
  /* As dockerd: files we make (git checkouts, downloads, state) and the
     buildah children we start must not depend on the umask of whoever
     launched us; with 000 a git checkout's executables would be 0777. */
  umask (022);
  /* A --buildkit-listen TLS connection still being served when main
     returns (past the shutdown grace) may be inside OpenSSL: no atexit
     clean-up may free the library's state under it.  Only that is settled
     here, in OpenSSL's first initialisation: loading its configuration,
     error strings and providers waits for the first digest, TLS handshake
     or libcurl transfer (about 2 MB of resident pages an idle daemon with
     nothing proxied yet does without). */
  OPENSSL_init_crypto (OPENSSL_INIT_NO_ATEXIT, NULL);

  /* Before any thread: the arena bound applies to all of them. */
  long ncpu = sysconf (_SC_NPROCESSORS_ONLN);
  mallopt (M_ARENA_MAX, (int) (ncpu > 0 ? ncpu : 1) * PS_MALLOC_ARENAS_PER_CPU);

  cleanup_error ps_error *err = NULL;
  int r = config_parse (argc, argv, &err);
  if (r != 0)
    {
      if (r < 0)
        fprintf (stderr, "podsolved: %s\n", err->msg);
      return r < 0 ? 2 : 0;
    }
  ps_log_set_level (ps_cfg.log_level);
  proxy_global_init ();
  http_set_dispatch (&(struct http_dispatch){
      .lookup = router_lookup,
      .allowed_methods = router_allowed_methods,
      .fallback = proxy_route,
      .fallback_owns = proxy_owns,
      .fallback_bytes = proxy_bytes,
  });

  for (size_t i = 0; i < ps_cfg.listen.n; i++)
    if (ps_str_has_prefix (ps_cfg.listen.v[i], "tcp://") && !ps_cfg.insecure_tcp && ps_cfg.tls_cert == NULL)
      {
        fprintf (stderr, "podsolved: %s: a TCP listener without TLS lets anyone on the network run builds as "
                         "this user; give --tls-cert and --tls-key (and --tls-verify --tls-ca for client "
                         "certificates), or pass --insecure-tcp to allow it\n",
                 ps_cfg.listen.v[i]);
        return 2;
      }

  cleanup_free char *builds_dir = xasprintf ("%s/builds", ps_cfg.state_dir);
  if (ps_mkdir_p (builds_dir, 0700, &err) < 0)
    {
      ps_error_log ("state directory: %s", err->msg);
      return 1;
    }
  clean_stale_builds (builds_dir);
  cleanup_free char *solves_dir = xasprintf ("%s/solves", ps_cfg.state_dir);
  if (ps_mkdir_p (solves_dir, 0700, &err) < 0)
    {
      ps_error_log ("state directory: %s", err->msg);
      return 1;
    }
  clean_stale_builds (solves_dir);
  /* Builds hold the cache lock shared; POST /build/prune takes it alone. */
  cleanup_free char *cache_lock = xasprintf ("%s/%s", ps_cfg.state_dir, CACHE_LOCK_FILE);
  cleanup_free char *cache_gate = xasprintf ("%s/%s", ps_cfg.state_dir, CACHE_PRUNE_GATE_FILE);
  solver_jobs_set_cache_lock (cache_lock, cache_gate);
  cleanup_free char *jobs_dir = xasprintf ("%s/jobs", ps_cfg.state_dir);
  solver_jobs_set_records_dir (jobs_dir);
  struct cache_gc_policy gc = { ps_cfg.gc_keep_bytes, ps_cfg.gc_keep_duration_ns };
  if (cache_gc_start (ps_cfg.state_dir, &gc, &err) < 0)
    {
      ps_error_log ("%s", err->msg);
      return 1;
    }
  size_t interrupted = solver_jobs_restore_records ();
  if (interrupted)
    ps_info ("%zu job(s) were interrupted by an earlier stop; they are listed as \"interrupted\"", interrupted);

  /* Started early: Podman's start-up overlaps the isolation probe. */
  if (ps_cfg.spawn_upstream && upstream_spawn_start (&err) < 0)
    {
      ps_error_log ("%s", err->msg);
      return 1;
    }

  /* A registries.conf that every buildah child reads: the system's, plus
     the loopback registries Docker Engine trusts over plain HTTP by default
     (127.0.0.0/8, ::1; c/image matches a host prefix whatever the port, and
     refs podsolve sees itself get host:port entries per build), plus
     --insecure-registry. */
  {
    ps_strv insecure = { 0 };
    ps_strv_push (&insecure, "localhost");
    ps_strv_push (&insecure, "127.0.0.1");
    ps_strv_push (&insecure, "[::1]");
    for (size_t i = 0; i < ps_cfg.insecure_registries.n; i++)
      ps_strv_push (&insecure, ps_cfg.insecure_registries.v[i]);
    cleanup_free char *conf = xasprintf ("%s/registries.conf", ps_cfg.state_dir);
    int wrote = cache_registry_write_conf (conf, &insecure, &err);
    ps_strv_free (&insecure);
    if (wrote < 0)
      {
        ps_error_log ("registries.conf: %s", err->msg);
        return 1;
      }
    setenv ("CONTAINERS_REGISTRIES_CONF", conf, 1);
    if (ps_cfg.insecure_registries.n > 0)
      ps_info ("insecure registries (no TLS checks): loopback and %zu more, in %s", ps_cfg.insecure_registries.n,
               conf);
  }

  /* buildah takes $DOCKER_CONFIG/config.json as its credentials file and
     refuses to pull at all when DOCKER_CONFIG names a directory without
     one ("checking authfile"); the docker CLI reads a missing file as no
     credentials, which is what a daemon started from a shell that set
     DOCKER_CONFIG for CLI plugins means too.  Builds get their
     credentials from the request (X-Registry-Config, sessions) anyway. */
  {
    const char *dc = getenv ("DOCKER_CONFIG");
    cleanup_free char *cfgjson = dc && *dc ? xasprintf ("%s/config.json", dc) : NULL;
    if (cfgjson && access (cfgjson, F_OK) != 0)
      {
        ps_info ("DOCKER_CONFIG=%s has no config.json: not passed to buildah (no credentials from it)", dc);
        unsetenv ("DOCKER_CONFIG");
      }
  }

  struct buildah_config bc = {
    .buildah = ps_cfg.buildah,
    .root = ps_cfg.root,
    .runroot = ps_cfg.runroot,
    .storage_driver = ps_cfg.storage_driver,
  };
  buildah_configure (&bc);
  if (buildah_probe_isolation (ps_cfg.isolation, ps_cfg.runtime, &err) < 0)
    {
      ps_error_log ("%s", err->msg);
      return 1;
    }
  /* What a killed earlier run left in storage, before any build starts:
     its LLB execs' runc containers first (they may still run in working
     containers the sweep below removes). */
  llb_runc_sweep (ps_cfg.state_dir);
  orphans_recover (ps_cfg.state_dir);
  llb_snapshots_recover (ps_cfg.state_dir);
  detect_libpod_version ();
  solver_jobs_set_max_parallel (ps_cfg.max_parallel);
  /* Gateway frontends: run from images by the solver, served LLBBridge
     over their stdio by the gRPC handlers. */
  gateway_image_init ();
  gateway_set_bridge_server (handlers_grpc_serve_frontend);
  frontend_image_set_dockerfile_default (ps_cfg.dockerfile_frontend);
  if (frontend_image_dockerfile_default ())
    ps_info ("Dockerfiles without a syntax line are built by the frontend %s", frontend_image_dockerfile_default ());
  session_set_idle_timeout ((int) ps_cfg.session_idle_timeout_s * 1000);
  diffcopy_set_idle_timeout ((int) ps_cfg.session_transfer_timeout_s * 1000);
  llb_exec_set_sandbox_network_host (ps_cfg.sandbox_network_host);
  solver_jobs_set_max_queued (ps_cfg.max_queued);

  upstream_spawn_wait_ready ();

  struct ps_listener *listeners = NULL;
  size_t nlisteners = 0;
  if (listeners_open (&ps_cfg.listen, ps_cfg.socket_group, &listeners, &nlisteners, &err) < 0)
    {
      ps_error_log ("%s", err->msg);
      return 1;
    }
  /* TLS material for tcp:// listeners, read once. */
  struct ps_tls tls = { .verify = ps_cfg.tls_verify };
  if (ps_cfg.tls_cert
      && (ps_read_file (ps_cfg.tls_cert, PS_MAX_TLS_FILE_BYTES, &tls.cert, NULL, &err) < 0
          || ps_read_file (ps_cfg.tls_key, PS_MAX_TLS_FILE_BYTES, &tls.key, NULL, &err) < 0
          || (ps_cfg.tls_ca && ps_read_file (ps_cfg.tls_ca, PS_MAX_TLS_FILE_BYTES, &tls.ca, NULL, &err) < 0)))
    {
      ps_error_log ("TLS: %s", err->msg);
      return 1;
    }
  struct MHD_Daemon **daemons = xcalloc (nlisteners, sizeof *daemons);
  for (size_t i = 0; i < nlisteners; i++)
    {
      const struct http_limits lim = { ps_cfg.max_connections, ps_cfg.max_connections_per_peer,
                                       ps_cfg.header_timeout_s };
      daemons[i] = http_start (listeners[i].fd, &lim, listeners[i].tcp && tls.cert ? &tls : NULL, &err);
      if (daemons[i] == NULL)
        {
          ps_error_log ("%s: %s", listeners[i].uri, err->msg);
          return 1;
        }
      ps_info ("listening on %s", listeners[i].uri);
    }
  struct buildkit_listen_config bk = {
    .uris = &ps_cfg.buildkit_listen,
    .group = ps_cfg.socket_group,
    .max_connections = ps_cfg.max_connections,
    .tls_cert = ps_cfg.buildkit_tls_cert,
    .tls_key = ps_cfg.buildkit_tls_key,
    .tls_ca = ps_cfg.buildkit_tls_ca,
  };
  if (buildkit_listen_start (&bk, &err) < 0)
    {
      ps_error_log ("%s", err->msg);
      for (size_t i = 0; i < nlisteners; i++)
        http_stop (daemons[i]);
      free (daemons);
      free (tls.cert);
      free (tls.key);
      free (tls.ca);
      listeners_close (listeners, nlisteners);
      upstream_spawn_stop ();
      return 1;
    }
  if (ps_cfg.upstream)
    ps_info ("passing non-build requests to the Podman API service at unix://%s%s", ps_cfg.upstream,
             ps_cfg.upstream_explicit ? "" : " (the default; --upstream to change)");
  else
    ps_info ("no upstream (--upstream none): only the build API is served");
  ps_info ("podsolved %s ready (buildah %s, state %s)", PODSOLVE_VERSION, buildah_version (), ps_cfg.state_dir);

  /* Wait for a stop signal; meanwhile, forget expired /solve jobs and
     their kept outputs even when no request comes to trigger it. */
  int sig = 0;
  for (;;)
    {
      struct timespec tick = { 30, 0 };
      sig = sigtimedwait (&stop_signals, NULL, &tick);
      if (sig == SIGTERM || sig == SIGINT)
        break;
      solver_jobs_expire ((int64_t) ps_cfg.job_ttl_s * 1000);
    }
  ps_info ("received %s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");

  for (size_t i = 0; i < nlisteners; i++)
    MHD_quiesce_daemon (daemons[i]);
  solver_jobs_cancel_all ("podsolved is shutting down");
  cache_gc_stop ();
  /* Upgraded /session connections hold their MHD threads until the client
     hangs up: say GOAWAY so MHD_stop_daemon does not wait on them. */
  session_registry_shutdown (PS_SESSION_SHUTDOWN_GRACE_MS);
  /* The same for gRPC connections (/grpc and --buildkit-listen). */
  buildkit_listen_stop ();
  handlers_grpc_shutdown (PS_SESSION_SHUTDOWN_GRACE_MS);
  /* Proxied streams (logs -f, events) and attach relays end on their own
     within a poll interval once told. */
  proxy_shutdown ();
  for (size_t i = 0; i < nlisteners; i++)
    http_stop (daemons[i]);
  free (daemons);
  free (tls.cert);
  if (tls.key)
    explicit_bzero (tls.key, strlen (tls.key));
  free (tls.key);
  free (tls.ca);
  listeners_close (listeners, nlisteners);
  upstream_spawn_stop ();
  ps_info ("stopped");
  return 0;
}
