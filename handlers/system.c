/* system.c — /_ping, /version, /info, /system/df.
 *
 * With an upstream (the Podman API service every other request goes to),
 * each answer is the upstream's, merged with podsolve's build side: ping
 * headers (Builder-Version), a podsolve component in /version, a Podsolve
 * object in /info, the build cache in /system/df.  Clients see one daemon: Podman's containers and images,
 * podsolve's builder.  Without an upstream, or when it does not answer,
 * podsolve answers alone so builds keep working. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "handlers/handlers.h"
#include "common/log.h"
#include "server/config.h"
#include "server/proxy.h"
#include "server/upstream.h"
#include "solver/buildah.h"
#include "solver/cache_prune.h"
#include "solver/worker.h"

/* Builder-Version: "2" = BuildKit.  The docker 20.10 CLI then builds in
   BuildKit mode by default (POST /session + /build?version=2), which
   podsolved serves; DOCKER_BUILDKIT=0 still selects the classic path. */
#define PS_BUILDER_VERSION "2"

/* The upstream's /version bodies, by request path (/version,
   /v1.41/version, /v4.3.1/libpod/version...): PS_UPSTREAM_VERSION_TTL_S. */
#define VERSION_CACHE_SLOTS 8
static struct
{
  char *url;
  char *body;
  int64_t until_ns;
} version_cache[VERSION_CACHE_SLOTS];
static pthread_mutex_t version_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void
version_cache_forget (void)
{
  pthread_mutex_lock (&version_cache_lock);
  for (size_t i = 0; i < VERSION_CACHE_SLOTS; i++)
    {
      free (version_cache[i].url);
      free (version_cache[i].body);
      version_cache[i].url = version_cache[i].body = NULL;
    }
  pthread_mutex_unlock (&version_cache_lock);
}

/* A copy of the kept body for `url`, or NULL. */
static char *
version_cache_get (const char *url)
{
  char *body = NULL;
  int64_t now = ps_monotonic_ns ();
  pthread_mutex_lock (&version_cache_lock);
  for (size_t i = 0; i < VERSION_CACHE_SLOTS && body == NULL; i++)
    if (version_cache[i].url && strcmp (version_cache[i].url, url) == 0 && now < version_cache[i].until_ns)
      body = xstrdup (version_cache[i].body);
  pthread_mutex_unlock (&version_cache_lock);
  return body;
}

/* Keep `body` for `url`, in its old slot, a free or expired one, or the
   one that expires first. */
static void
version_cache_put (const char *url, const char *body)
{
  int64_t now = ps_monotonic_ns ();
  pthread_mutex_lock (&version_cache_lock);
  size_t slot = 0;
  for (size_t i = 0; i < VERSION_CACHE_SLOTS; i++)
    {
      if (version_cache[i].url && strcmp (version_cache[i].url, url) == 0)
        {
          slot = i;
          break;
        }
      if (version_cache[i].url == NULL || version_cache[i].until_ns < version_cache[slot].until_ns)
        slot = i;
    }
  free (version_cache[slot].url);
  free (version_cache[slot].body);
  version_cache[slot].url = xstrdup (url);
  version_cache[slot].body = xstrdup (body);
  version_cache[slot].until_ns = now + (int64_t) PS_UPSTREAM_VERSION_TTL_S * 1000000000;
  pthread_mutex_unlock (&version_cache_lock);
}

/* The upstream's 200 answer to the same request, or false (no upstream,
   down, or not 200: podsolve then answers alone). */
static bool
ask_upstream (struct ps_request *req, long timeout_ms, struct ps_upstream_reply *reply)
{
  if (!proxy_enabled ())
    return false;
  cleanup_error ps_error *err = NULL;
  if (upstream_fetch (req->method, req->url, timeout_ms, reply, &err) < 0)
    {
      ps_debug ("%s %s: answering for the build side only: %s", req->method, req->url, err->msg);
      version_cache_forget ();
      return false;
    }
  if (reply->status != 200)
    {
      ps_debug ("%s %s: the upstream answered %ld; answering for the build side only", req->method, req->url,
                reply->status);
      upstream_reply_free (reply);
      return false;
    }
  return true;
}

/* The upstream's object answer, or NULL.  With `keep`, an answer is kept
   for PS_UPSTREAM_VERSION_TTL_S and given again meanwhile. */
static cJSON *
ask_upstream_json (struct ps_request *req, bool keep)
{
  cleanup_free char *kept = keep && proxy_enabled () ? version_cache_get (req->url) : NULL;
  if (kept)
    return cJSON_Parse (kept);
  struct ps_upstream_reply reply;
  if (!ask_upstream (req, PS_PROXY_MERGE_TIMEOUT_MS, &reply))
    return NULL;
  cJSON *j = cJSON_ParseWithLength (reply.body.data ? reply.body.data : "", reply.body.len);
  if (keep && cJSON_IsObject (j))
    {
      cleanup_free char *body = xstrndup (reply.body.data, reply.body.len);
      version_cache_put (req->url, body);
    }
  upstream_reply_free (&reply);
  if (!cJSON_IsObject (j))
    {
      ps_debug ("%s %s: the upstream's answer is not a JSON object; answering alone", req->method, req->url);
      cJSON_Delete (j);
      return NULL;
    }
  return j;
}

/* Headers of a ping answer that are not the upstream's to pass on: the
   framing, and what podsolve states itself (http_respond adds the API ones). */
static bool
ping_header_is_ours (const char *name, const char *const *ours)
{
  static const char *const skip[] = {
    "Api-Version", "Libpod-Api-Version", "Server", "Content-Length", "Content-Type", "Date",
    "Connection", "Keep-Alive", "Transfer-Encoding",
  };
  for (size_t i = 0; i < ARRAY_SIZE (skip); i++)
    if (strcasecmp (name, skip[i]) == 0)
      return true;
  for (const char *const *o = ours; *o; o += 2)
    if (strcasecmp (name, *o) == 0)
      return true;
  return false;
}

static int
ping_complete (struct ps_request *req, ps_error **err)
{
  const char *const ours[] = {
    "Builder-Version", PS_BUILDER_VERSION,
    "Buildkit-Version", "",
    "Cache-Control", "no-cache",
    "Docker-Experimental", "true",
    "Libpod-Buildah-Version", buildah_version (),
    "Ostype", "linux",
    "Pragma", "no-cache",
    NULL,
  };
  ps_strv headers = { 0 };
  for (const char *const *o = ours; *o; o++)
    ps_strv_push (&headers, *o);
  struct ps_upstream_reply reply;
  if (ask_upstream (req, PS_PROXY_PING_TIMEOUT_MS, &reply))
    {
      for (size_t i = 0; i + 1 < reply.headers.n; i += 2)
        if (!ping_header_is_ours (reply.headers.v[i], ours))
          {
            ps_strv_push (&headers, reply.headers.v[i]);
            ps_strv_push (&headers, reply.headers.v[i + 1]);
          }
      upstream_reply_free (&reply);
    }
  bool head = strcmp (req->method, "HEAD") == 0;
  int r = http_respond (req, 200, "text/plain; charset=utf-8", head ? "" : "OK", head ? 0 : 2,
                      (const char *const *) headers.v);
  ps_strv_free (&headers);
  return r;
}

const struct ps_handler handler_ping = { .on_complete = ping_complete };

/* A value from /etc/os-release ("ID", "VERSION_ID", "PRETTY_NAME"). */
static char *
os_release (const char *key)
{
  cleanup_free char *text = NULL;
  if (ps_read_file ("/etc/os-release", 65536, &text, NULL, NULL) < 0)
    return xstrdup ("");
  size_t klen = strlen (key);
  for (char *line = text; line && *line;)
    {
      char *nl = strchr (line, '\n');
      if (nl)
        *nl = '\0';
      if (strncmp (line, key, klen) == 0 && line[klen] == '=')
        {
          char *v = line + klen + 1;
          size_t n = strlen (v);
          if (n >= 2 && (v[0] == '"' || v[0] == '\''))
            return xstrndup (v + 1, n - 2);
          return xstrdup (v);
        }
      line = nl ? nl + 1 : NULL;
    }
  return xstrdup ("");
}

/* podsolve's own entries in /version's Components. */
static void
add_build_components (cJSON *components, const char *arch, const char *kernel)
{
  cJSON *c = cJSON_CreateObject ();
  cJSON_AddStringToObject (c, "Name", "podsolve");
  cJSON_AddStringToObject (c, "Version", PODSOLVE_VERSION);
  cJSON *d = cJSON_AddObjectToObject (c, "Details");
  cJSON_AddStringToObject (d, "APIVersion", config_libpod_api_version ());
  cJSON_AddStringToObject (d, "Arch", arch);
  cJSON_AddStringToObject (d, "BuilderVersion", PS_BUILDER_VERSION);
  cJSON_AddStringToObject (d, "Isolation", buildah_isolation ());
  cJSON_AddStringToObject (d, "KernelVersion", kernel);
  cJSON_AddStringToObject (d, "MinAPIVersion", PS_COMPAT_MIN_API_VERSION);
  cJSON_AddStringToObject (d, "Os", "linux");
  cJSON_AddItemToArray (components, c);

  c = cJSON_CreateObject ();
  cJSON_AddStringToObject (c, "Name", "buildah");
  cJSON_AddStringToObject (c, "Version", buildah_version ());
  d = cJSON_AddObjectToObject (c, "Details");
  cJSON_AddStringToObject (d, "Isolation", buildah_isolation ());
  cJSON_AddStringToObject (d, "Runtime", buildah_runtime () ? buildah_runtime () : "default");
  cJSON_AddItemToArray (components, c);
}

static int
respond_json_object (struct ps_request *req, cJSON *v)
{
  char *s = cJSON_PrintUnformatted (v);
  cJSON_Delete (v);
  int r = http_respond_json (req, 200, s);
  cJSON_free (s);
  return r;
}

static int
version_complete (struct ps_request *req, ps_error **err)
{
  struct utsname u;
  uname (&u);
  const char *arch = worker_go_arch (u.machine);

  /* The engine is the upstream's (docker version shows Podman); the
     builder components are added to its list. */
  cJSON *up = ask_upstream_json (req, true);
  if (up)
    {
      cJSON *components = cJSON_GetObjectItemCaseSensitive (up, "Components");
      if (!cJSON_IsArray (components))
        {
          cJSON_DeleteItemFromObjectCaseSensitive (up, "Components");
          components = cJSON_AddArrayToObject (up, "Components");
        }
      add_build_components (components, arch, u.release);
      return respond_json_object (req, up);
    }

  cleanup_free char *os_id = os_release ("ID");
  cleanup_free char *os_ver = os_release ("VERSION_ID");
  cJSON *v = cJSON_CreateObject ();
  cJSON *platform = cJSON_AddObjectToObject (v, "Platform");
  cleanup_free char *pname = xasprintf ("linux/%s/%s-%s", arch, os_id, os_ver);
  cJSON_AddStringToObject (platform, "Name", pname);
  add_build_components (cJSON_AddArrayToObject (v, "Components"), arch, u.release);

  cJSON_AddStringToObject (v, "Version", PODSOLVE_VERSION);
  cJSON_AddStringToObject (v, "ApiVersion", PS_COMPAT_API_VERSION);
  cJSON_AddStringToObject (v, "MinAPIVersion", PS_COMPAT_MIN_API_VERSION);
  cJSON_AddStringToObject (v, "GitCommit", "");
  cJSON_AddStringToObject (v, "GoVersion", "n/a (C)");
  cJSON_AddStringToObject (v, "Os", "linux");
  cJSON_AddStringToObject (v, "Arch", arch);
  cJSON_AddStringToObject (v, "KernelVersion", u.release);
  cJSON_AddBoolToObject (v, "Experimental", false);
  cJSON_AddStringToObject (v, "BuildTime", "");
  return respond_json_object (req, v);
}

const struct ps_handler handler_version = { .on_complete = version_complete };

static const cJSON *
path_get (const cJSON *o, const char *a, const char *b)
{
  const cJSON *x = cJSON_GetObjectItemCaseSensitive (o, a);
  return b ? cJSON_GetObjectItemCaseSensitive (x, b) : x;
}

static const char *
str_or (const cJSON *j, const char *dflt)
{
  return cJSON_IsString (j) ? j->valuestring : dflt;
}

/* The build side of /info, as one object. */
static cJSON *
podsolve_info (void)
{
  cJSON *o = cJSON_CreateObject ();
  cJSON_AddStringToObject (o, "Version", PODSOLVE_VERSION);
  cJSON_AddStringToObject (o, "BuilderVersion", PS_BUILDER_VERSION);
  cJSON_AddStringToObject (o, "BuildahVersion", buildah_version ());
  cJSON_AddStringToObject (o, "Isolation", buildah_isolation ());
  cJSON_AddStringToObject (o, "Runtime", buildah_runtime () ? buildah_runtime () : "default");
  if (ps_cfg.upstream)
    cJSON_AddStringToObject (o, "Upstream", ps_cfg.upstream);
  return o;
}

/* Docker's system.Info with real values: the upstream's (containers,
   images, storage as Podman sees them) plus a Podsolve object; alone,
   host facts from the kernel and storage facts from `buildah info`. */
static int
info_complete (struct ps_request *req, ps_error **err)
{
  cJSON *up = ask_upstream_json (req, false);
  if (up)
    {
      cJSON_DeleteItemFromObjectCaseSensitive (up, "Podsolve");
      cJSON_AddItemToObject (up, "Podsolve", podsolve_info ());
      return respond_json_object (req, up);
    }

  const char *args[] = { "info", NULL };
  cleanup_free char *out = NULL;
  if (buildah_call (args, &out, err) < 0)
    return -1;
  cJSON *bi = cJSON_Parse (out);
  if (bi == NULL)
    return ps_error_set (err, 500, "buildah info: output is not JSON");

  struct utsname u;
  uname (&u);
  struct sysinfo si;
  sysinfo (&si);
  char host[256] = "";
  gethostname (host, sizeof host - 1);
  cleanup_free char *pretty = os_release ("PRETTY_NAME");
  cleanup_free char *os_ver = os_release ("VERSION_ID");
  char id[33];
  ps_random_hex (id, 16);

  const cJSON *store = cJSON_GetObjectItemCaseSensitive (bi, "store");
  const cJSON *hostj = cJSON_GetObjectItemCaseSensitive (bi, "host");
  const cJSON *nctr = path_get (store, "ContainerStore", "number");
  const cJSON *nimg = path_get (store, "ImageStore", "number");

  cJSON *v = cJSON_CreateObject ();
  cJSON_AddStringToObject (v, "ID", id);
  cJSON_AddNumberToObject (v, "Containers", cJSON_IsNumber (nctr) ? nctr->valuedouble : 0);
  cJSON_AddNumberToObject (v, "ContainersRunning", 0);
  cJSON_AddNumberToObject (v, "ContainersPaused", 0);
  cJSON_AddNumberToObject (v, "ContainersStopped", 0);
  cJSON_AddNumberToObject (v, "Images", cJSON_IsNumber (nimg) ? nimg->valuedouble : 0);
  cJSON_AddStringToObject (v, "Driver", str_or (cJSON_GetObjectItemCaseSensitive (store, "GraphDriverName"), ""));
  cJSON *ds = cJSON_AddArrayToObject (v, "DriverStatus");
  const cJSON *gs = cJSON_GetObjectItemCaseSensitive (store, "GraphStatus");
  const cJSON *it;
  cJSON_ArrayForEach (it, gs)
    {
      cJSON *pair = cJSON_CreateArray ();
      cJSON_AddItemToArray (pair, cJSON_CreateString (it->string));
      cJSON_AddItemToArray (pair, cJSON_CreateString (str_or (it, "")));
      cJSON_AddItemToArray (ds, pair);
    }
  cJSON_AddStringToObject (v, "DockerRootDir", str_or (cJSON_GetObjectItemCaseSensitive (store, "GraphRoot"), ""));
  cJSON_AddStringToObject (v, "CgroupDriver", "cgroupfs");
  const char *cgv = str_or (cJSON_GetObjectItemCaseSensitive (hostj, "CgroupVersion"), "v1");
  cJSON_AddStringToObject (v, "CgroupVersion", cgv[0] == 'v' ? cgv + 1 : cgv);
  cJSON_AddNumberToObject (v, "NCPU", (double) sysconf (_SC_NPROCESSORS_ONLN));
  cJSON_AddNumberToObject (v, "MemTotal", (double) si.totalram * si.mem_unit);
  cJSON_AddStringToObject (v, "KernelVersion", u.release);
  cJSON_AddStringToObject (v, "OperatingSystem", pretty);
  cJSON_AddStringToObject (v, "OSVersion", os_ver);
  cJSON_AddStringToObject (v, "OSType", "linux");
  cJSON_AddStringToObject (v, "Architecture", u.machine);
  cJSON_AddStringToObject (v, "Name", host);
  cJSON_AddStringToObject (v, "ServerVersion", PODSOLVE_VERSION);
  cJSON_AddStringToObject (v, "BuildahVersion", buildah_version ());
  cJSON_AddStringToObject (v, "Isolation", buildah_isolation ());
  cJSON_AddBoolToObject (v, "ExperimentalBuild", true);
  cJSON_AddBoolToObject (v, "Rootless", geteuid () != 0);
  cJSON_AddStringToObject (v, "HTTPProxy", getenv ("HTTP_PROXY") ? getenv ("HTTP_PROXY") : "");
  cJSON_AddStringToObject (v, "HTTPSProxy", getenv ("HTTPS_PROXY") ? getenv ("HTTPS_PROXY") : "");
  cJSON_AddStringToObject (v, "NoProxy", getenv ("NO_PROXY") ? getenv ("NO_PROXY") : "");
  cJSON_AddStringToObject (v, "DefaultRuntime", buildah_runtime () ? buildah_runtime () : "runc");
  cJSON *swarm = cJSON_AddObjectToObject (v, "Swarm");
  cJSON_AddStringToObject (swarm, "LocalNodeState", "inactive");
  cJSON *sec = cJSON_AddArrayToObject (v, "SecurityOptions");
  cJSON_AddItemToArray (sec, cJSON_CreateString ("name=seccomp,profile=default"));
  char now[48];
  ps_format_rfc3339 (ps_now_ns (), now, sizeof now);
  cJSON_AddStringToObject (v, "SystemTime", now);
  cJSON_AddItemToObject (v, "Podsolve", podsolve_info ());

  cJSON_Delete (bi);
  return respond_json_object (req, v);
}

const struct ps_handler handler_info = { .on_complete = info_complete };

/* GET /system/df (`docker system df`): the upstream's images, containers
   and volumes, with podsolve's build cache as BuildCache — every entry
   POST /build/prune can remove (cache_prune.h), sized as it counts them —
   and its total as BuilderSize (what API versions before 1.42 show).
   Without an upstream the rest is empty. */
static int
df_complete (struct ps_request *req, ps_error **err)
{
  struct cache_prune_opts o = { .all = true };
  struct cache_prune_report rep = { 0 };
  int r = cache_usage (ps_cfg.state_dir, &o, &rep, err);
  cache_prune_opts_free (&o);
  if (r < 0)
    return ps_error_wrap (err, "build cache");
  cJSON *v = ask_upstream_json (req, false);
  if (v == NULL)
    {
      v = cJSON_CreateObject ();
      cJSON_AddNumberToObject (v, "LayersSize", 0);
      cJSON_AddArrayToObject (v, "Images");
      cJSON_AddArrayToObject (v, "Containers");
      cJSON_AddArrayToObject (v, "Volumes");
    }
  cJSON *cache = cJSON_CreateArray ();
  for (size_t i = 0; i < rep.n_deleted; i++)
    {
      const struct cache_prune_entry *e = &rep.deleted[i];
      cJSON *x = cJSON_CreateObject ();
      char created[48], used[48];
      ps_format_rfc3339 (e->created_ns ? e->created_ns : e->last_used_ns, created, sizeof created);
      ps_format_rfc3339 (e->last_used_ns, used, sizeof used);
      cJSON_AddStringToObject (x, "ID", e->id);
      cJSON_AddStringToObject (x, "Parent", "");
      cJSON_AddItemToObject (x, "Parents", cJSON_CreateArray ());
      cJSON_AddStringToObject (x, "Type", e->type);
      cJSON_AddStringToObject (x, "Description", cache_type_description (e->type));
      cJSON_AddBoolToObject (x, "InUse", false);
      cJSON_AddBoolToObject (x, "Shared", false);
      cJSON_AddNumberToObject (x, "Size", (double) e->size);
      cJSON_AddStringToObject (x, "CreatedAt", created);
      cJSON_AddStringToObject (x, "LastUsedAt", used);
      cJSON_AddNumberToObject (x, "UsageCount", 1);
      cJSON_AddItemToArray (cache, x);
    }
  cJSON_DeleteItemFromObjectCaseSensitive (v, "BuildCache");
  cJSON_AddItemToObject (v, "BuildCache", cache);
  cJSON_DeleteItemFromObjectCaseSensitive (v, "BuilderSize");
  cJSON_AddNumberToObject (v, "BuilderSize", (double) rep.reclaimed);
  cache_prune_report_free (&rep);
  return respond_json_object (req, v);
}

const struct ps_handler handler_system_df = { .on_complete = df_complete };
