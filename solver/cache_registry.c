/* cache_registry.c — a loopback registry over a local cache directory, the
 * registries.conf builds read, and the ARG-step index of registry caches
 * (see cache_registry.h). */
#define _GNU_SOURCE
#include "solver/cache_registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cjson.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/process.h"
#include "solver/buildah.h"

/* How long a fresh registry may take to answer. */
#define CACHE_REGISTRY_START_MS 10000

static int
free_loopback_port (ps_error **err)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "socket");
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  if (bind (fd, (struct sockaddr *) &a, sizeof a) < 0 || getsockname (fd, (struct sockaddr *) &a, &len) < 0)
    {
      int e = errno;
      close (fd);
      return ps_error_set_errno (err, 500, e, "find a free port");
    }
  close (fd);
  return ntohs (a.sin_port);
}

/* GET /v2/ answers 200 once the registry serves. */
static bool
registry_answers (int port)
{
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port),
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  bool ok = false;
  if (connect (fd, (struct sockaddr *) &a, sizeof a) == 0)
    {
      const char req[] = "GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
      char buf[64] = "";
      if (write (fd, req, sizeof req - 1) == (ssize_t) (sizeof req - 1) && read (fd, buf, sizeof buf - 1) > 12)
        ok = strncmp (buf + 9, "200", 3) == 0;
    }
  close (fd);
  return ok;
}

int
cache_registry_start (const char *storage_dir, const char *work_dir, struct cache_registry *r, ps_error **err)
{
  memset (r, 0, sizeof *r);
  if (ps_mkdir_p (storage_dir, 0755, err) < 0)
    return -1;
  int port = free_loopback_port (err);
  if (port < 0)
    return -1;
  cleanup_free char *conf = xasprintf ("%s/cache-registry-%d.yml", work_dir, port);
  cleanup_free char *yaml = xasprintf ("version: 0.1\n"
                                       "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                                       "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n"
                                       "http:\n  addr: 127.0.0.1:%d\n",
                                       storage_dir, port);
  if (ps_write_file (conf, yaml, strlen (yaml), 0600, err) < 0)
    return -1;
  char *argv[] = { (char *) "docker-registry", (char *) "serve", conf, NULL };
  struct ps_child c;
  if (ps_child_spawn (argv, &c, err) < 0)
    return ps_error_wrap (err, "local cache needs Debian's docker-registry");
  /* Its output is not needed; closing the pipes would SIGPIPE it. */
  r->pid = c.pid;
  r->port = port;
  for (int waited = 0; waited < CACHE_REGISTRY_START_MS; waited += 50)
    {
      if (registry_answers (port))
        {
          r->out_fd = c.out_fd;
          r->err_fd = c.err_fd;
          r->repo = xasprintf ("127.0.0.1:%d/podsolve-cache", port);
          return 0;
        }
      if (waitpid (c.pid, NULL, WNOHANG) == c.pid)
        {
          r->pid = 0;
          break;
        }
      struct timespec ts = { 0, 50 * 1000000L };
      nanosleep (&ts, NULL);
    }
  close (c.out_fd);
  close (c.err_fd);
  cache_registry_stop (r);
  return ps_error_set (err, 500, "the local cache registry for %s did not start", storage_dir);
}

void
cache_registry_stop (struct cache_registry *r)
{
  if (r->pid > 0)
    {
      kill (r->pid, SIGTERM);
      waitpid (r->pid, NULL, 0);
    }
  r->pid = 0;
  if (r->out_fd > 0)
    close (r->out_fd);
  if (r->err_fd > 0)
    close (r->err_fd);
  r->out_fd = r->err_fd = -1;
  free (r->repo);
  r->repo = NULL;
}

int
cache_registry_write_conf (const char *path, const ps_strv *insecure, ps_error **err)
{
  ps_buf b = { 0 };
  cleanup_free char *sys = NULL;
  size_t len = 0;
  /* The daemon's own (--insecure-registry) when it has one, else the system's. */
  const char *base = getenv ("CONTAINERS_REGISTRIES_CONF");
  if (base == NULL || *base == '\0')
    base = "/etc/containers/registries.conf";
  if (ps_read_file (base, PS_MAX_REGISTRIES_CONF_BYTES, &sys, &len, NULL) == 0)
    {
      ps_buf_append (&b, sys, len);
      ps_buf_puts (&b, "\n");
    }
  for (size_t i = 0; i < insecure->n; i++)
    ps_buf_printf (&b, "[[registry]]\nlocation = \"%s\"\ninsecure = true\n", insecure->v[i]);
  int r = ps_write_file (path, b.data, b.len, 0644, err);
  ps_buf_free (&b);
  return r;
}

/* ---- registry caches ---------------------------------------------------- */

char *
cache_registry_repository (const char *ref)
{
  char *repo = xstrdup (ref);
  char *last_slash = strrchr (repo, '/');
  char *colon = strrchr (last_slash ? last_slash : repo, ':');
  if (colon)
    *colon = '\0';
  return repo;
}

/* BuildKit names the cache REF, "latest" when REF has no tag. */
static char *
tagged_ref (const char *ref)
{
  const char *last_slash = strrchr (ref, '/');
  if (strchr (last_slash ? last_slash : ref, ':') || strchr (ref, '@'))
    return xstrdup (ref);
  return xasprintf ("%s:latest", ref);
}

void
cache_registry_access_argv (ps_strv *argv, const struct cache_registry_access *a)
{
  if (a->registries_conf)
    ps_strv_pushf (argv, "--registries-conf=%s", a->registries_conf);
  if (a->authfile)
    ps_strv_pushf (argv, "--authfile=%s", a->authfile);
}

/* `skopeo inspect [--raw] docker://REF` -> its stdout (the manifest as
   served, or skopeo's JSON summary); NULL when it fails (absent tag,
   unreachable registry, no skopeo). */
void
cache_registry_skopeo_argv (ps_strv *argv, const char *command, const struct cache_registry_access *a)
{
  ps_strv_push (argv, "skopeo");
  ps_strv_pushf (argv, "--command-timeout=%ds", PS_CACHE_INSPECT_TIMEOUT_S);
  if (a->registries_conf)
    ps_strv_pushf (argv, "--registries-conf=%s", a->registries_conf);
  ps_strv_push (argv, command);
}

static char *
skopeo_inspect (const char *ref, bool raw, const struct cache_registry_access *a)
{
  ps_strv argv = { 0 };
  cache_registry_skopeo_argv (&argv, "inspect", a);
  if (raw)
    ps_strv_push (&argv, "--raw");
  if (a->authfile)
    ps_strv_pushf (&argv, "--authfile=%s", a->authfile);
  ps_strv_pushf (&argv, "docker://%s", ref);
  char *out = NULL;
  cleanup_free char *errout = NULL;
  int status = -1;
  ps_error *err = NULL;
  if (ps_run_capture (argv.v, &out, &errout, &status, &err) < 0 || status != 0)
    {
      /* Not being able to run skopeo at all (127: exec failed) is worth
         saying: imports then miss after every ARG step. */
      if (err || status == 127)
        ps_warn ("registry cache import: cannot run skopeo: %s", err ? err->msg : "not found");
      else
        ps_debug ("skopeo inspect %s: %s", ref, errout ? errout : "failed");
      ps_error_free (err);
      free (out);
      out = NULL;
    }
  ps_strv_free (&argv);
  return out;
}

static bool
is_cache_key (const char *s, size_t n)
{
  if (n != 64)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  return true;
}

void
cache_registry_import (solver_job *job, const char *ref, const struct cache_registry_access *a)
{
  cleanup_free char *tagged = tagged_ref (ref);
  cleanup_free char *manifest = skopeo_inspect (tagged, true, a);
  if (manifest && strstr (manifest, "application/vnd.buildkit.cacheconfig.v0"))
    {
      cleanup_free char *msg = xasprintf ("cache import %s: a BuildKit-format cache "
                                          "(application/vnd.buildkit.cacheconfig.v0), which podsolve cannot read; "
                                          "building without it",
                                          ref);
      const char *details[] = { "podsolve's registry cache is buildah's: one image per step, tagged with the "
                                "step's cache key; export one with --cache-to type=registry through podsolve",
                                NULL };
      solver_job_emit_warning (job, NULL, 1, msg, details, NULL);
      return;
    }

  cleanup_free char *repo = cache_registry_repository (ref);
  cleanup_free char *index_ref = xasprintf ("%s:%s", repo, CACHE_REGISTRY_ARG_INDEX_TAG);
  cleanup_free char *summary = skopeo_inspect (index_ref, false, a);
  cleanup_cjson cJSON *root = summary ? cJSON_Parse (summary) : NULL;
  const cJSON *labels = cJSON_GetObjectItemCaseSensitive (root, "Labels");
  const char *keys = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (labels, CACHE_REGISTRY_ARG_INDEX_LABEL));
  if (keys == NULL)
    return;
  size_t pulled = 0, listed = 0;
  for (const char *k = keys; *k && listed < PS_MAX_CACHE_ARG_STEPS; listed++)
    {
      size_t n = strcspn (k, ",");
      if (is_cache_key (k, n))
        {
          ps_strv argv = { 0 };
          ps_strv_push (&argv, "pull");
          ps_strv_push (&argv, "--quiet");
          cache_registry_access_argv (&argv, a);
          ps_strv_pushf (&argv, "docker://%s:%.*s", repo, (int) n, k);
          ps_error *err = NULL;
          if (buildah_call ((const char *const *) argv.v, NULL, &err) == 0)
            pulled++;
          else
            {
              ps_debug ("cache import %s: ARG step %.*s: %s", ref, (int) n, k, err->msg);
              ps_error_free (err);
            }
          ps_strv_free (&argv);
        }
      k += n;
      if (*k == ',')
        k++;
    }
  ps_debug ("cache import %s: %zu of %zu ARG steps pulled", ref, pulled, listed);
}

int
cache_registry_export_arg_steps (const char *ref, const ps_strv *keys, const struct cache_registry_access *a,
                                 ps_error **err)
{
  if (keys->n == 0)
    return 0;
  ps_buf label = { 0 };
  ps_buf_printf (&label, "%s=", CACHE_REGISTRY_ARG_INDEX_LABEL);
  for (size_t i = 0; i < keys->n && i < PS_MAX_CACHE_ARG_STEPS; i++)
    ps_buf_printf (&label, "%s%s", i ? "," : "", keys->v[i]);
  cleanup_free char *repo = cache_registry_repository (ref);
  cleanup_free char *dest = xasprintf ("docker://%s:%s", repo, CACHE_REGISTRY_ARG_INDEX_TAG);
  struct buildah_wc wc = { 0 };
  cleanup_free char *image = NULL;
  int r = buildah_wc_from (NULL, NULL, false, &wc, err);
  if (r == 0)
    r = buildah_callv (NULL, err, "config", "--label", label.data, wc.ctr, NULL);
  if (r == 0)
    r = buildah_wc_commit (&wc, NULL, true, &image, err);
  buildah_wc_remove (&wc);
  if (r == 0)
    {
      ps_strv argv = { 0 };
      ps_strv_push (&argv, "push");
      ps_strv_push (&argv, "--quiet");
      cache_registry_access_argv (&argv, a);
      ps_strv_push (&argv, image);
      ps_strv_push (&argv, dest);
      r = buildah_call ((const char *const *) argv.v, NULL, err);
      ps_strv_free (&argv);
      ps_error *ignored = NULL;
      if (buildah_callv (NULL, &ignored, "rmi", image, NULL) < 0)
        ps_error_free (ignored);
    }
  ps_buf_free (&label);
  return r < 0 ? ps_error_wrap (err, "cache export %s: the ARG steps' index", ref) : 0;
}
