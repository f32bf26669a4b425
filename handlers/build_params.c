/* build_params.c — /build query parameters to build options.
 *
 * Where Podman has known gaps this parser follows what Docker's clients
 * mean: `extrahosts` repeated plain values as well as a JSON array,
 * `ulimits` as Docker's JSON objects, `networkmode=host|none` honoured,
 * `remote=` on compat too. */
#define _GNU_SOURCE
#include "handlers/build_params.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/limits.h"
#include "schema/apivalue.h"
#include "schema/imageref.h"

void
build_request_init (struct build_request *r)
{
  memset (r, 0, sizeof *r);
  build_options_init (&r->opts);
  r->version = 1;
}

void
build_request_free (struct build_request *r)
{
  build_options_free (&r->opts);
  ps_strv_free (&r->dockerfile_param);
  ps_strv_free (&r->secrets_param);
  ps_strv_free (&r->excludes);
  free (r->session);
  free (r->buildid);
  free (r->output_type);
  memset (r, 0, sizeof *r);
}

static int
param_error (ps_error **err, const char *key, const char *value, const char *why)
{
  return ps_error_set (err, 400, "failed to parse query parameter '%s': \"%s\": %s", key, value, why);
}

static int
parse_int64 (const char *key, const char *value, int64_t *out, ps_error **err)
{
  if (*value == '\0')
    {
      *out = 0;
      return 0;
    }
  char *end = NULL;
  errno = 0;
  long long v = strtoll (value, &end, 10);
  if (errno != 0 || end == value || *end != '\0')
    return param_error (err, key, value, "not an integer");
  *out = v;
  return 0;
}

static cJSON *
parse_json (const char *key, const char *value, ps_error **err)
{
  if (strlen (value) > PS_MAX_PARAM_JSON)
    {
      param_error (err, key, "...", "value too large");
      return NULL;
    }
  cJSON *j = cJSON_Parse (value);
  if (j == NULL)
    param_error (err, key, value, "not valid JSON");
  return j;
}

/* A JSON array of strings (null and "" mean empty). */
static int
parse_string_array (const char *key, const char *value, ps_strv *out, ps_error **err)
{
  if (*value == '\0' || strcmp (value, "null") == 0)
    return 0;
  cJSON *j = parse_json (key, value, err);
  if (j == NULL)
    return -1;
  if (!cJSON_IsArray (j))
    {
      cJSON_Delete (j);
      return param_error (err, key, value, "expected a JSON array of strings");
    }
  const cJSON *it;
  cJSON_ArrayForEach (it, j)
    {
      if (!cJSON_IsString (it))
        {
          cJSON_Delete (j);
          return param_error (err, key, value, "expected a JSON array of strings");
        }
      if (*it->valuestring)
        ps_strv_push (out, it->valuestring);
    }
  cJSON_Delete (j);
  return 0;
}

/* buildargs: {"K":"V", "K2":null}.  Docker sends "{}" when empty. */
static int
parse_buildargs (const char *key, const char *value, ps_strv *out, ps_error **err)
{
  if (*value == '\0' || strcmp (value, "null") == 0)
    return 0;
  cJSON *j = parse_json (key, value, err);
  if (j == NULL)
    return -1;
  if (!cJSON_IsObject (j))
    {
      cJSON_Delete (j);
      return param_error (err, key, value, "expected a JSON object");
    }
  const cJSON *it;
  cJSON_ArrayForEach (it, j)
    {
      if (cJSON_IsString (it))
        ps_strv_pushf (out, "%s=%s", it->string, it->valuestring);
      else if (cJSON_IsNull (it))
        ps_strv_pushf (out, "%s=", it->string);
      else
        {
          cJSON_Delete (j);
          return param_error (err, key, value, "values must be strings");
        }
    }
  cJSON_Delete (j);
  return 0;
}

/* labels: a JSON object, or (libpod) a JSON array of "k=v". */
static int
parse_labels (const char *key, const char *value, ps_strv *out, ps_error **err)
{
  if (*value == '\0' || strcmp (value, "null") == 0)
    return 0;
  cJSON *j = parse_json (key, value, err);
  if (j == NULL)
    return -1;
  int ret = 0;
  const cJSON *it;
  if (cJSON_IsObject (j))
    {
      cJSON_ArrayForEach (it, j)
        {
          if (!cJSON_IsString (it))
            {
              ret = param_error (err, key, value, "label values must be strings");
              break;
            }
          ps_strv_pushf (out, "%s=%s", it->string, it->valuestring);
        }
    }
  else if (cJSON_IsArray (j))
    {
      cJSON_ArrayForEach (it, j)
        {
          if (!cJSON_IsString (it))
            {
              ret = param_error (err, key, value, "expected \"key=value\" strings");
              break;
            }
          ps_strv_push (out, it->valuestring);
        }
    }
  else
    ret = param_error (err, key, value, "expected a JSON object");
  cJSON_Delete (j);
  return ret;
}

static bool
valid_host_entry (const char *v)
{
  const char *colon = strchr (v, ':');
  return colon != NULL && colon != v && colon[1] != '\0' && strchr (v, ' ') == NULL;
}

/* extrahosts: Docker repeats plain "host:ip" values; Podman wants one JSON
   array.  Both are accepted. */
static int
parse_extrahosts (const char *key, const char *value, ps_strv *out, ps_error **err)
{
  if (*value == '\0')
    return 0;
  if (value[0] == '[')
    {
      ps_strv list = { 0 };
      if (parse_string_array (key, value, &list, err) < 0)
        {
          ps_strv_free (&list); /* what was pushed before the bad element */
          return -1;
        }
      for (size_t i = 0; i < list.n; i++)
        {
          if (!valid_host_entry (list.v[i]))
            {
              ps_strv_free (&list);
              return param_error (err, key, value, "expected \"host:ip\" entries");
            }
          ps_strv_push (out, list.v[i]);
        }
      ps_strv_free (&list);
      return 0;
    }
  if (!valid_host_entry (value))
    return param_error (err, key, value, "expected \"host:ip\"");
  ps_strv_push (out, value);
  return 0;
}

static bool
valid_ulimit_name (const char *n)
{
  static const char *const names[] = { "core",    "cpu",    "data",   "fsize",      "locks",
                                       "memlock", "msgqueue", "nice", "nofile",     "nproc",
                                       "rss",     "rtprio", "rttime", "sigpending", "stack" };
  for (size_t i = 0; i < ARRAY_SIZE (names); i++)
    if (strcmp (n, names[i]) == 0)
      return true;
  return false;
}

/* ulimits: Docker sends [{"Name":"nofile","Hard":2048,"Soft":1024}] (or
   null); Podman's clients send ["nofile=1024:2048"]. */
static int
parse_ulimits (const char *key, const char *value, ps_strv *out, ps_error **err)
{
  if (*value == '\0' || strcmp (value, "null") == 0)
    return 0;
  cJSON *j = parse_json (key, value, err);
  if (j == NULL)
    return -1;
  int ret = 0;
  if (!cJSON_IsArray (j))
    ret = param_error (err, key, value, "expected a JSON array");
  const cJSON *it;
  if (ret == 0)
    cJSON_ArrayForEach (it, j)
      {
        if (cJSON_IsString (it))
          {
            cleanup_free char *name = xstrndup (it->valuestring, strcspn (it->valuestring, "="));
            if (!valid_ulimit_name (name) || strchr (it->valuestring, '=') == NULL)
              {
                ret = param_error (err, key, value, "expected \"name=soft[:hard]\" with a known ulimit name");
                break;
              }
            ps_strv_push (out, it->valuestring);
            continue;
          }
        const cJSON *name = cJSON_GetObjectItemCaseSensitive (it, "Name");
        const cJSON *soft = cJSON_GetObjectItemCaseSensitive (it, "Soft");
        const cJSON *hard = cJSON_GetObjectItemCaseSensitive (it, "Hard");
        if (!cJSON_IsString (name) || !valid_ulimit_name (name->valuestring) || !cJSON_IsNumber (soft)
            || !cJSON_IsNumber (hard))
          {
            ret = param_error (err, key, value, "expected {\"Name\",\"Soft\",\"Hard\"} objects with a known ulimit name");
            break;
          }
        /* Whole numbers from -1 (unlimited) up to 2^53 (exact in a JSON
           double); anything else would be undefined to convert. */
        const double max_exact = 9007199254740992.0;
        bool soft_ok = soft->valuedouble >= -1 && soft->valuedouble <= max_exact
                       && soft->valuedouble == (double) (int64_t) soft->valuedouble;
        bool hard_ok = hard->valuedouble >= -1 && hard->valuedouble <= max_exact
                       && hard->valuedouble == (double) (int64_t) hard->valuedouble;
        if (!soft_ok || !hard_ok)
          {
            ret = param_error (err, key, value, "ulimit values must be whole numbers from -1 (unlimited) to 2^53");
            break;
          }
        if (soft->valuedouble > hard->valuedouble && hard->valuedouble >= 0)
          {
            ret = param_error (err, key, value, "soft limit exceeds hard limit");
            break;
          }
        ps_strv_pushf (out, "%s=%" PRId64 ":%" PRId64, name->valuestring, (int64_t) soft->valuedouble,
                       (int64_t) hard->valuedouble);
      }
  cJSON_Delete (j);
  return ret;
}

static int
parse_platforms (const char *key, const char *value, ps_strv *out, ps_error **err)
{
  /* podman-remote sends "/" for "host platform". */
  if (*value == '\0' || strcmp (value, "/") == 0)
    return 0;
  cleanup_free char *copy = xstrdup (value);
  char *save = NULL;
  for (char *p = strtok_r (copy, ",", &save); p; p = strtok_r (NULL, ",", &save))
    {
      int slashes = 0;
      bool ok = *p != '\0' && p[0] != '/';
      for (const char *c = p; *c && ok; c++)
        {
          if (*c == '/')
            {
              slashes++;
              ok = c[1] != '\0' && c[1] != '/';
            }
          else if (!(isalnum ((unsigned char) *c) || *c == '_' || *c == '-' || *c == '.'))
            ok = false;
        }
      if (!ok || slashes > 2)
        return param_error (err, key, value, "expected os[/arch[/variant]]");
      ps_strv_push (out, p);
    }
  return 0;
}

/* Docker: default|bridge|host|none|container:<id>|<network>; libpod: 0..2 or
   NetworkDefault/NetworkDisabled/NetworkEnabled.  "default" is the daemon's
   default (RUN in the host's network namespace, as Podman's builds do);
   "bridge" asks for a private namespace with its own network (netavark). */
static int
parse_networkmode (const char *key, const char *value, char **out, ps_error **err)
{
  const char *mode = NULL;
  if (*value == '\0' || strcmp (value, "default") == 0 || strcmp (value, "0") == 0
      || strcmp (value, "NetworkDefault") == 0 || strcmp (value, "2") == 0
      || strcmp (value, "NetworkEnabled") == 0)
    mode = NULL;
  else if (strcmp (value, "bridge") == 0)
    mode = "private";
  else if (strcmp (value, "host") == 0)
    mode = "host";
  else if (strcmp (value, "none") == 0 || strcmp (value, "1") == 0 || strcmp (value, "NetworkDisabled") == 0)
    mode = "none";
  else
    return param_error (err, key, value, "supported network modes are default, bridge, host and none");
  free (*out);
  *out = mode ? xstrdup (mode) : NULL;
  return 0;
}

/* isolation: Docker sends "default" (or "process"/"hyperv" for Windows);
   podman-remote sends 0..3 or oci/chroot/rootless.  "oci" means "isolated
   the daemon's way", so it keeps the probed choice (which may be chroot on
   a host where OCI containers cannot run). */
static int
parse_isolation (const char *key, const char *value, char **out, ps_error **err)
{
  free (*out);
  *out = NULL;
  if (*value == '\0' || strcmp (value, "default") == 0 || strcmp (value, "0") == 0
      || strcmp (value, "oci") == 0 || strcmp (value, "1") == 0 || strcmp (value, "rootless") == 0
      || strcmp (value, "3") == 0)
    return 0;
  if (strcmp (value, "chroot") == 0 || strcmp (value, "2") == 0)
    {
      *out = xstrdup ("chroot");
      return 0;
    }
  return param_error (err, key, value, "supported isolation modes are default, oci and chroot");
}

static int
parse_pullpolicy (const char *key, const char *value, enum build_pull_policy *out, ps_error **err)
{
  if (strcasecmp (value, "missing") == 0 || strcasecmp (value, "ifmissing") == 0 || *value == '\0'
      || strcasecmp (value, "false") == 0)
    *out = BUILD_PULL_MISSING;
  else if (strcasecmp (value, "always") == 0 || strcasecmp (value, "true") == 0)
    *out = BUILD_PULL_ALWAYS;
  else if (strcasecmp (value, "never") == 0)
    *out = BUILD_PULL_NEVER;
  else if (strcasecmp (value, "newer") == 0 || strcasecmp (value, "ifnewer") == 0)
    *out = BUILD_PULL_NEWER;
  else
    return param_error (err, key, value, "supported pull policies are missing, always, never and newer");
  return 0;
}

static int
parse_outputformat (const char *key, const char *value, char **out, ps_error **err)
{
  free (*out);
  if (strstr (value, "oci") != NULL)
    *out = xstrdup ("oci");
  else if (strstr (value, "docker") != NULL)
    *out = xstrdup ("docker");
  else
    {
      *out = NULL;
      return param_error (err, key, value, "expected an OCI or Docker v2s2 manifest type");
    }
  return 0;
}

/* outputs (BuildKit mode): [{"Type":"local","Attrs":{}}]; at most one.
   "moby"/"image" and "cacheonly" keep the image in storage; local and tar
   go to the client over its session (FileSend). */
static int
parse_outputs (const char *key, const char *value, char **out, ps_error **err)
{
  if (*value == '\0' || strcmp (value, "null") == 0 || strcmp (value, "[]") == 0)
    return 0;
  cJSON *j = parse_json (key, value, err);
  if (j == NULL)
    return -1;
  int ret = 0;
  if (!cJSON_IsArray (j) || cJSON_GetArraySize (j) > 1)
    ret = param_error (err, key, value, "expected a JSON array with at most one {\"Type\",\"Attrs\"} output");
  else if (cJSON_GetArraySize (j) == 1)
    {
      const cJSON *t = cJSON_GetObjectItemCaseSensitive (cJSON_GetArrayItem (j, 0), "Type");
      if (!cJSON_IsString (t))
        ret = param_error (err, key, value, "missing output Type");
      else if (strcmp (t->valuestring, "local") == 0 || strcmp (t->valuestring, "tar") == 0)
        {
          free (*out); /* a repeated outputs= replaces the earlier one */
          *out = xstrdup (t->valuestring);
        }
      else if (strcmp (t->valuestring, "moby") != 0 && strcmp (t->valuestring, "image") != 0
               && strcmp (t->valuestring, "cacheonly") != 0)
        ret = param_error (err, key, value, "supported output types are moby, image, cacheonly, local and tar");
    }
  cJSON_Delete (j);
  return ret;
}

/* ---- the parameter table ---------------------------------------------------- */

static int
set_bool (const char *key, const char *value, bool *out, ps_error **err)
{
  if (schema_api_bool (value, out) < 0)
    return param_error (err, key, value, "expected a boolean (1, 0, true or false)");
  return 0;
}

int
build_params_parse (const struct ps_kv *kv, size_t n, bool libpod, struct build_request *r,
                    ps_error **err)
{
  r->libpod = libpod;
  /* Compat defaults to layers=true and Docker's image format; libpod only
     keeps layers when asked (podman-remote always sends layers). */
  r->opts.layers = !libpod;
  free (r->opts.format);
  r->opts.format = xstrdup (libpod ? "oci" : "docker");

  for (size_t i = 0; i < n; i++)
    {
      const char *k = kv[i].key;
      const char *v = kv[i].value ? kv[i].value : "";
      int ret = 0;
      bool b;

      if (strcmp (k, "t") == 0)
        {
          if (*v == '\0')
            continue;
          if (r->opts.tags.n >= PS_MAX_TAGS)
            return param_error (err, k, v, "too many tags");
          if (schema_imageref_check_tag (v, err) < 0)
            return -1;
          if (libpod)
            ps_strv_push (&r->opts.tags, v);
          else
            {
              cleanup_free char *norm = schema_imageref_normalize_compat (v);
              ps_strv_push (&r->opts.tags, norm);
            }
          ps_strv_push (&r->opts.client_tags, v);
        }
      else if (strcmp (k, "dockerfile") == 0)
        {
          if (v[0] == '[')
            ret = parse_string_array (k, v, &r->dockerfile_param, err);
          else if (*v)
            ps_strv_push (&r->dockerfile_param, v);
        }
      else if (strcmp (k, "q") == 0)
        ret = set_bool (k, v, &r->opts.quiet, err);
      else if (strcmp (k, "nocache") == 0)
        ret = set_bool (k, v, &r->opts.nocache, err);
      else if (strcmp (k, "rm") == 0)
        ret = set_bool (k, v, &r->opts.rm, err);
      else if (strcmp (k, "forcerm") == 0)
        ret = set_bool (k, v, &r->opts.forcerm, err);
      else if (strcmp (k, "layers") == 0)
        ret = set_bool (k, v, &r->opts.layers, err);
      else if (strcmp (k, "squash") == 0)
        ret = set_bool (k, v, &r->opts.squash, err);
      else if (strcmp (k, "pull") == 0)
        {
          /* compat: true = always pull; Docker's swagger calls it a string,
             so a policy name is accepted too. */
          if (schema_api_bool (v, &b) == 0)
            r->opts.pull = b ? BUILD_PULL_ALWAYS : BUILD_PULL_MISSING;
          else
            ret = parse_pullpolicy (k, v, &r->opts.pull, err);
        }
      else if (strcmp (k, "pullpolicy") == 0)
        ret = parse_pullpolicy (k, v, &r->opts.pull, err);
      else if (strcmp (k, "buildargs") == 0)
        ret = parse_buildargs (k, v, &r->opts.build_args, err);
      else if (strcmp (k, "labels") == 0)
        ret = parse_labels (k, v, &r->opts.labels, err);
      else if (strcmp (k, "target") == 0)
        {
          free (r->opts.target);
          r->opts.target = *v ? xstrdup (v) : NULL;
        }
      else if (strcmp (k, "platform") == 0)
        ret = parse_platforms (k, v, &r->opts.platforms, err);
      else if (strcmp (k, "cachefrom") == 0)
        ret = parse_string_array (k, v, &r->opts.cache_from, err);
      else if (strcmp (k, "cacheto") == 0)
        ret = parse_string_array (k, v, &r->opts.cache_to, err);
      else if (strcmp (k, "networkmode") == 0)
        ret = parse_networkmode (k, v, &r->opts.network, err);
      else if (strcmp (k, "extrahosts") == 0)
        ret = parse_extrahosts (k, v, &r->opts.add_hosts, err);
      else if (strcmp (k, "ulimits") == 0)
        ret = parse_ulimits (k, v, &r->opts.ulimits, err);
      else if (strcmp (k, "shmsize") == 0)
        ret = parse_int64 (k, v, &r->opts.shm_size, err);
      else if (strcmp (k, "memory") == 0)
        ret = parse_int64 (k, v, &r->opts.memory, err);
      else if (strcmp (k, "memswap") == 0)
        ret = parse_int64 (k, v, &r->opts.memswap, err);
      else if (strcmp (k, "cpushares") == 0)
        ret = parse_int64 (k, v, &r->opts.cpu_shares, err);
      else if (strcmp (k, "cpuperiod") == 0)
        ret = parse_int64 (k, v, &r->opts.cpu_period, err);
      else if (strcmp (k, "cpuquota") == 0)
        ret = parse_int64 (k, v, &r->opts.cpu_quota, err);
      else if (strcmp (k, "cpusetcpus") == 0)
        {
          free (r->opts.cpuset_cpus);
          r->opts.cpuset_cpus = xstrdup (v);
        }
      else if (strcmp (k, "cpusetmems") == 0)
        {
          free (r->opts.cpuset_mems);
          r->opts.cpuset_mems = xstrdup (v);
        }
      else if (strcmp (k, "cgroupparent") == 0)
        {
          free (r->opts.cgroup_parent);
          r->opts.cgroup_parent = xstrdup (v);
        }
      else if (strcmp (k, "outputformat") == 0)
        {
          /* Compat always produces Docker images, as Podman's compat does. */
          if (libpod)
            ret = parse_outputformat (k, v, &r->opts.format, err);
        }
      else if (strcmp (k, "isolation") == 0)
        ret = parse_isolation (k, v, &r->opts.isolation, err);
      else if (strcmp (k, "secrets") == 0)
        ret = parse_string_array (k, v, &r->secrets_param, err);
      else if (strcmp (k, "excludes") == 0)
        ret = parse_string_array (k, v, &r->excludes, err);
      else if (strcmp (k, "remote") == 0)
        {
          free (r->opts.remote);
          r->opts.remote = NULL;
          r->use_session_context = false;
          if (strcmp (v, "client-session") == 0)
            r->use_session_context = true;
          else if (*v)
            {
              if (!(ps_str_has_prefix (v, "http://") || ps_str_has_prefix (v, "https://")
                    || ps_str_has_prefix (v, "git://") || ps_str_has_prefix (v, "git@")
                    || ps_str_has_prefix (v, "github.com/")))
                return param_error (err, k, v, "expected a git URL or an http(s) URL of a tar archive or Dockerfile");
              r->opts.remote = xstrdup (v);
            }
        }
      else if (strcmp (k, "outputs") == 0)
        ret = parse_outputs (k, v, &r->output_type, err);
      else if (strcmp (k, "version") == 0)
        {
          if (strcmp (v, "1") == 0 || *v == '\0')
            r->version = 1;
          else if (strcmp (v, "2") == 0)
            r->version = 2;
          else
            ret = param_error (err, k, v, "supported builder versions are 1 and 2");
        }
      else if (strcmp (k, "session") == 0)
        {
          free (r->session);
          r->session = xstrdup (v);
        }
      else if (strcmp (k, "buildid") == 0)
        {
          free (r->buildid);
          r->buildid = xstrdup (v);
        }
      /* Everything else (identitylabel, idmappingoptions, jobs, omithistory,
         nsoptions, output, registry, …) is ignored, as Docker and Podman
         ignore keys they do not use. */
      if (ret < 0)
        return -1;
    }
  return 0;
}
