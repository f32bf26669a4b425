/* solve.c — /solve jobs: the dockerfile.v0 frontend's attrs, exporters and
 * the final exporter response. */
#define _GNU_SOURCE
#include "solver/solve.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "schema/apivalue.h"
#include "schema/imageref.h"
#include "session/filesend.h"
#include "session/session.h"
#include "solver/buildah.h"
#include "solver/cache_registry.h"
#include "solver/context.h"
#include "solver/frontend_image.h"
#include "solver/dockerfile/build.h"
#include "solver/dockerfile/scan.h"
#include "solver/export_layout.h"
#include "solver/image_config.h"
#include "solver/llb/llb.h"
#include "solver/llb/exec.h"
#include "solver/rootfs_export.h"
#include "solver/session_io.h"
#include "solver/store_client.h"
#include "solver/store_registry.h"

struct plan_exporter
{
  char *type;
  char *dest;     /* server-side destination, NULL = keep for download */
  char *name;     /* oci/docker archive image name */
  bool push;
  bool push_by_digest; /* push under PS_PUSH_BY_DIGEST_TAG, not the name's tag (buildx's multi-node builds) */
  bool insecure;
  bool to_client; /* Control.Solve: sent over the session's FileSend */
  struct image_config *config; /* containerimage.config (a definition's result only), or NULL */
  char *image;    /* the image this exporter exports, once the solve ran (config applied) */
  ps_strv store_refs; /* type=store and s3: name, tag, name, tag ... */
  const struct solve_attrs *attrs; /* the request's (endpoint, token, tls.* of type=store) */
  struct s3_config *s3;            /* type=s3: the bucket (an OCI layout under its prefix) */
};

struct plan_store_cache
{
  const struct solve_attrs *attrs; /* the request's: endpoint, token, tls.* */
  char *name;                      /* the cache's name in the store */
  bool export;
  store_registry *served;          /* while the build runs */
  struct s3_config *s3;            /* type=s3: the bucket instead of a store endpoint */
};

/* "store ENDPOINT" or "s3://BUCKET/PREFIX", for titles and messages. */
static char *
store_label (const struct solve_attrs *attrs, const struct s3_config *s3)
{
  return s3 ? s3_config_label (s3) : xasprintf ("store %s", solve_attrs_get (attrs, "endpoint"));
}

static struct s3_config *
s3_config_free_ptr (struct s3_config *c)
{
  if (c)
    s3_config_free (c);
  free (c);
  return NULL;
}

struct solve_plan
{
  struct solve_request req;
  struct dockerfile_build build;
  char *job_dir;
  struct plan_exporter *exporters;
  size_t n_exporters;
  ps_strv image_names;
  char *pushed_digest; /* manifest digest as pushed, for containerimage.digest */
  char *pushed_descriptor; /* its OCI descriptor, base64 JSON, for containerimage.descriptor */
  ps_strv insecure_registries; /* cache registries reached without TLS checks */
  char *local_cache_import; /* cache dirs served by a loopback registry */
  char *local_cache_export;
  struct plan_store_cache *store_caches; /* type=store caches, served to buildah as loopback registries */
  size_t n_store_caches;
  struct llb_exec *llb; /* a definition's graph, run instead of a frontend */
  struct solve_gateway gateway; /* the client-side gateway, run instead of a frontend */
  bool image_frontend;          /* frontend "gateway.v0": the image in attr "source" */
  struct solve_source *sources; /* its local sources (copies) */
  size_t n_sources;
  char *claimed_session; /* the session this solve names, claimed until the plan is freed */
  char *claimed_source_session; /* the session of its local sources, when another one */
  ps_strv session_contexts; /* "NAME=DIR": context:NAME=local:DIR to sync over the session */
  char *state_dir;      /* for a definition: where configured images are recorded */
};

static int copy_platforms (struct solve_plan *p, const char *dest, ps_error **err);

/* `image_id` is a multi-platform build's manifest list. */
static bool
is_list (const struct solve_plan *p, const char *image_id)
{
  return p->build.list_id && strcmp (image_id, p->build.list_id) == 0;
}
static int tar_platforms (struct solve_plan *p, const char *path, uint64_t *bytes, ps_error **err);
static int plan_platform_exporters (const struct solve_plan *p, ps_error **err);

void
solve_plan_free (struct solve_plan *p)
{
  if (p == NULL)
    return;
  if (p->claimed_session)
    session_unclaim (p->claimed_session);
  free (p->claimed_session);
  if (p->claimed_source_session)
    session_unclaim (p->claimed_source_session);
  free (p->claimed_source_session);
  ps_strv_free (&p->session_contexts);
  schema_solve_request_free (&p->req);
  dockerfile_build_clear (&p->build);
  for (size_t i = 0; i < p->n_sources; i++)
    {
      free (p->sources[i].name);
      free (p->sources[i].dir);
    }
  free (p->sources);
  for (size_t i = 0; i < p->n_exporters; i++)
    {
      free (p->exporters[i].type);
      free (p->exporters[i].dest);
      free (p->exporters[i].name);
      image_config_free (p->exporters[i].config);
      free (p->exporters[i].image);
      ps_strv_free (&p->exporters[i].store_refs);
      s3_config_free_ptr (p->exporters[i].s3);
    }
  free (p->exporters);
  ps_strv_free (&p->image_names);
  free (p->pushed_digest);
  free (p->pushed_descriptor);
  ps_strv_free (&p->insecure_registries);
  free (p->local_cache_import);
  free (p->local_cache_export);
  for (size_t i = 0; i < p->n_store_caches; i++)
    {
      store_registry_stop (p->store_caches[i].served);
      free (p->store_caches[i].name);
      s3_config_free_ptr (p->store_caches[i].s3);
    }
  free (p->store_caches);
  free (p->job_dir);
  free (p->state_dir);
  llb_exec_free (p->llb);
  if (p->gateway.ud_free)
    p->gateway.ud_free (p->gateway.ud);
  free (p);
}

static const struct solve_source *
find_source (const struct solve_env *env, const char *name)
{
  for (size_t i = 0; i < env->n_sources; i++)
    if (strcmp (env->sources[i].name, name) == 0)
      return &env->sources[i];
  return NULL;
}

static bool
attr_true (const char *v)
{
  bool b = false;
  return v && schema_api_bool (v, &b) == 0 && b;
}

static bool
is_remote_url (const char *v)
{
  return ps_str_has_prefix (v, "https://") || ps_str_has_prefix (v, "http://") || ps_str_has_prefix (v, "git://")
         || ps_str_has_prefix (v, "git@");
}

/* A server-side destination must stay under an --allow-output-root. */
static int
check_output_dest (const char *dest, const ps_strv *roots, const char *field, ps_error **err)
{
  if (dest[0] != '/')
    return ps_error_set (err, 400, "%s: dest \"%s\" must be an absolute path on the server", field, dest);
  if (roots == NULL || roots->n == 0)
    return ps_error_set (err, 400, "%s: server-side dest is disabled (start podsolved with --allow-output-root); "
                                   "omit dest to download the output from /solve/{ref}/outputs/{n}", field);
  /* The parent must exist; resolve it to see through symlinks. */
  cleanup_free char *copy = xstrdup (dest);
  char *slash = strrchr (copy, '/');
  const char *parent = slash == copy ? "/" : copy;
  if (slash != copy)
    *slash = '\0';
  char real[PATH_MAX];
  if (realpath (parent, real) == NULL)
    return ps_error_set (err, 400, "%s: the parent of dest \"%s\" does not exist", field, dest);
  for (size_t i = 0; i < roots->n; i++)
    {
      char rroot[PATH_MAX];
      if (realpath (roots->v[i], rroot) == NULL)
        continue;
      size_t n = strlen (rroot);
      if (strncmp (real, rroot, n) == 0 && (real[n] == '/' || real[n] == '\0'))
        {
          if (strstr (dest, "/../") || ps_str_has_suffix (dest, "/.."))
            break;
          return 0;
        }
    }
  return ps_error_set (err, 400, "%s: dest \"%s\" is not under an --allow-output-root directory", field, dest);
}

/* "a=1.2.3.4,b:1.2.3.5" (BuildKit writes host=ip; docker host:ip). */
static int
parse_add_hosts (const char *v, ps_strv *out, ps_error **err)
{
  cleanup_free char *copy = xstrdup (v);
  char *save = NULL;
  for (char *h = strtok_r (copy, ",", &save); h; h = strtok_r (NULL, ",", &save))
    {
      char *sep = strchr (h, '=');
      if (sep == NULL)
        sep = strchr (h, ':');
      if (sep == NULL || sep == h || sep[1] == '\0')
        return ps_error_set (err, 400, "frontendAttrs.add-hosts: \"%s\" is not host=ip", h);
      *sep = '\0';
      ps_strv_pushf (out, "%s:%s", h, sep + 1);
    }
  return 0;
}

static int
parse_int_attr (const char *key, const char *v, int64_t *out, ps_error **err)
{
  char *end = NULL;
  errno = 0;
  long long n = strtoll (v, &end, 10);
  if (errno || end == v || *end || n < 0)
    return ps_error_set (err, 400, "frontendAttrs.%s: \"%s\" is not a byte count", key, v);
  *out = n;
  return 0;
}

/* dockerfile.v0 attrs to build options.  Every attr is either honoured or
   a 400: nothing the client asked for is silently dropped. */
static int
apply_frontend_attrs (struct solve_plan *p, const struct solve_env *env, const char **context_key,
                      const char **dockerfile_key, const char **filename, ps_error **err)
{
  struct build_options *o = &p->build.opts;
  const struct solve_attrs *a = &p->req.frontend_attrs;
  for (size_t i = 0; i < a->n; i++)
    {
      const char *k = a->kv[2 * i], *v = a->kv[2 * i + 1];
      if (strcmp (k, "filename") == 0)
        *filename = v;
      else if (strcmp (k, "contextkey") == 0)
        *context_key = v;
      else if (strcmp (k, "dockerfilekey") == 0)
        *dockerfile_key = v;
      else if (strcmp (k, "context") == 0)
        {
          if (!is_remote_url (v))
            return ps_error_set (err, 400, "frontendAttrs.context: \"%s\" is not a git or http(s) URL", v);
          o->remote = xstrdup (v);
        }
      else if (strcmp (k, "target") == 0)
        o->target = *v ? xstrdup (v) : NULL;
      else if (ps_str_has_prefix (k, "build-arg:") && k[10])
        ps_strv_pushf (&o->build_args, "%s=%s", k + 10, v);
      else if (ps_str_has_prefix (k, "label:") && k[6])
        ps_strv_pushf (&o->labels, "%s=%s", k + 6, v);
      else if (strcmp (k, "platform") == 0)
        {
          cleanup_free char *copy = xstrdup (v);
          char *save = NULL;
          for (char *pl = strtok_r (copy, ",", &save); pl; pl = strtok_r (NULL, ",", &save))
            ps_strv_push (&o->platforms, pl);
        }
      else if (strcmp (k, "no-cache") == 0)
        {
          /* BuildKit: "" = every stage; a list names stages, which buildah
             cannot do selectively. */
          bool b;
          if (*v == '\0' || (schema_api_bool (v, &b) == 0))
            o->nocache = *v == '\0' ? true : b;
          else
            return ps_error_set (err, 400, "frontendAttrs.no-cache: per-stage no-cache (\"%s\") is not supported; "
                                           "use \"\" or \"true\" for the whole build", v);
        }
      else if (strcmp (k, "image-resolve-mode") == 0)
        {
          /* "local" is BuildKit's prefer-local (what buildx's docker
             driver always sends): the image in storage, pulled when it is
             missing, so a fresh machine still builds FROM a registry. */
          if (strcmp (v, "default") == 0 || strcmp (v, "local") == 0 || *v == '\0')
            o->pull = BUILD_PULL_MISSING;
          else if (strcmp (v, "pull") == 0)
            o->pull = BUILD_PULL_ALWAYS;
          else
            return ps_error_set (err, 400, "frontendAttrs.image-resolve-mode: \"%s\" (supported: default, pull, local)", v);
        }
      else if (strcmp (k, "add-hosts") == 0)
        {
          if (parse_add_hosts (v, &o->add_hosts, err) < 0)
            return -1;
        }
      else if (strcmp (k, "shm-size") == 0)
        {
          if (parse_int_attr (k, v, &o->shm_size, err) < 0)
            return -1;
        }
      else if (strcmp (k, "ulimit") == 0)
        {
          cleanup_free char *copy = xstrdup (v);
          char *save = NULL;
          for (char *u = strtok_r (copy, ",", &save); u; u = strtok_r (NULL, ",", &save))
            {
              if (strchr (u, '=') == NULL)
                return ps_error_set (err, 400, "frontendAttrs.ulimit: \"%s\" is not name=soft[:hard]", u);
              ps_strv_push (&o->ulimits, u);
            }
        }
      else if (strcmp (k, "force-network-mode") == 0)
        {
          if (strcmp (v, "host") == 0)
            {
              bool allowed = false;
              for (size_t e = 0; e < p->req.entitlements.n; e++)
                allowed |= strcmp (p->req.entitlements.v[e], "network.host") == 0;
              if (!allowed)
                return ps_error_set (err, 400, "frontendAttrs.force-network-mode=host needs the \"network.host\" entitlement");
              o->network = xstrdup ("host");
            }
          else if (strcmp (v, "none") == 0)
            o->network = xstrdup ("none");
          else if (strcmp (v, "sandbox") == 0)
            o->network = xstrdup ("private");
          else if (*v)
            return ps_error_set (err, 400, "frontendAttrs.force-network-mode: \"%s\" (supported: sandbox, host, none)", v);
        }
      else if (ps_str_has_prefix (k, "context:") && k[8])
        {
          const char *name = k + 8;
          if (ps_str_has_prefix (v, "local:"))
            {
              const struct solve_source *src = find_source (env, v + 6);
              if (src == NULL && (p->req.source_session || p->req.session))
                {
                  /* The client's directory, over its session (buildx --build-context NAME=DIR). */
                  ps_strv_pushf (&p->session_contexts, "%s=%s", name, v + 6);
                  continue;
                }
              if (src == NULL)
                return ps_error_set (err, 400, "frontendAttrs.%s: no local source \"%s\" was sent (add a multipart "
                                               "part named \"%s\")", k, v + 6, v + 6);
              ps_strv_pushf (&o->build_contexts, "%s=%s", name, src->dir);
            }
          else if (ps_str_has_prefix (v, "docker-image://") || is_remote_url (v))
            ps_strv_pushf (&o->build_contexts, "%s=%s", name, v);
          else
            return ps_error_set (err, 400, "frontendAttrs.%s: \"%s\" (supported: local:NAME, docker-image://REF, "
                                           "git or http(s) URLs)", k, v);
        }
      else if (strcmp (k, "multi-platform") == 0)
        {
          /* buildx sends it to every node of a multi-node builder: BuildKit
             then wraps even one platform's image in an index.  buildx merges
             the nodes' results by descriptor, a manifest or an index alike,
             so one platform stays one image here. */
          bool ignored;
          if (schema_api_bool (v, &ignored) < 0)
            return ps_error_set (err, 400, "frontendAttrs.multi-platform: \"%s\" is not a boolean", v);
        }
      else
        return ps_error_set (err, 400, "frontendAttrs: unknown attr \"%s\" (supported: filename, target, "
                                       "build-arg:*, label:*, platform, no-cache, image-resolve-mode, add-hosts, "
                                       "shm-size, ulimit, force-network-mode, multi-platform, context:*, context, "
                                       "contextkey, dockerfilekey)", k);
    }
  return 0;
}

/* containerimage.config: an image config for a definition's result (a
   Dockerfile sets its own); which exporters take it, the request parser
   checked. */
static int
plan_image_config (struct plan_exporter *pe, const struct solve_exporter *e, bool definition, const char *field,
                   ps_error **err)
{
  const char *cfg = solve_attrs_get (&e->attrs, "containerimage.config");
  if (cfg == NULL)
    return 0;
  if (!definition)
    return ps_error_set (err, 400, "%s.attrs.containerimage.config: only a definition's result takes an image "
                                   "config (a Dockerfile sets its own)", field);
  if (image_config_parse (cfg, &pe->config, err) < 0)
    return ps_error_wrap (err, "%s.attrs.containerimage.config", field);
  return 0;
}

static int
plan_exporters (struct solve_plan *p, const struct solve_env *env, bool definition, ps_error **err)
{
  p->exporters = xcalloc (p->req.n_exporters + 1, sizeof *p->exporters);
  for (size_t i = 0; i < p->req.n_exporters; i++)
    {
      const struct solve_exporter *e = &p->req.exporters[i];
      struct plan_exporter *pe = &p->exporters[i];
      p->n_exporters = i + 1;
      pe->type = xstrdup (e->type);
      pe->to_client = e->to_client;
      pe->attrs = &e->attrs;
      cleanup_free char *field = xasprintf ("exporters[%zu]", i);
      if (plan_image_config (pe, e, definition, field, err) < 0)
        return -1;
      if (strcmp (e->type, "image") == 0)
        {
          const char *names = solve_attrs_get (&e->attrs, "name");
          if (names)
            {
              cleanup_free char *copy = xstrdup (names);
              char *save = NULL;
              for (char *n = strtok_r (copy, ",", &save); n; n = strtok_r (NULL, ",", &save))
                {
                  while (*n == ' ')
                    n++;
                  if (schema_imageref_check_tag (n, err) < 0)
                    return ps_error_wrap (err, "%s.attrs.name", field);
                  cleanup_free char *norm = schema_imageref_normalize_compat (n);
                  /* buildx's --push sends the names twice (image with
                     push=true, then moby): one tag each. */
                  bool seen = false;
                  for (size_t k = 0; k < p->image_names.n && !seen; k++)
                    seen = strcmp (p->image_names.v[k], norm) == 0;
                  if (seen)
                    continue;
                  ps_strv_push (&p->build.opts.tags, norm);
                  ps_strv_push (&p->image_names, norm);
                }
            }
          const char *const bool_attrs[] = { "push", "registry.insecure", "push-by-digest" };
          for (size_t b = 0; b < 3; b++)
            {
              const char *v = solve_attrs_get (&e->attrs, bool_attrs[b]);
              bool ignored;
              if (v && schema_api_bool (v, &ignored) < 0)
                return ps_error_set (err, 400, "%s.attrs.%s: \"%s\" is not a boolean (true or false)", field,
                                     bool_attrs[b], v);
            }
          pe->push = attr_true (solve_attrs_get (&e->attrs, "push"));
          pe->insecure = attr_true (solve_attrs_get (&e->attrs, "registry.insecure"));
          pe->push_by_digest = attr_true (solve_attrs_get (&e->attrs, "push-by-digest"));
          if (pe->push && p->image_names.n == 0)
            return ps_error_set (err, 400, "%s: push=true needs attrs.name", field);
          continue;
        }
      if (strcmp (e->type, "store") == 0 || strcmp (e->type, "s3") == 0)
        {
          const char *endpoint = solve_attrs_get (&e->attrs, "endpoint");
          if (strcmp (e->type, "s3") == 0)
            {
              pe->s3 = xcalloc (1, sizeof *pe->s3);
              if (s3_config_parse (pe->s3, &e->attrs, S3_LAYOUT_OCI, field, err) < 0)
                return -1;
            }
          else if (endpoint == NULL || *endpoint == '\0')
            return ps_error_set (err, 400, "%s.attrs.endpoint: missing (unix:///PATH or https://HOST of a store)",
                                 field);
          cleanup_free char *names = xstrdup (solve_attrs_get (&e->attrs, "name") ? solve_attrs_get (&e->attrs, "name")
                                                                                   : "");
          cleanup_free char *where = xasprintf ("%s.attrs.name", field);
          char *save = NULL;
          for (char *n = strtok_r (names, ",", &save); n; n = strtok_r (NULL, ",", &save))
            {
              while (*n == ' ')
                n++;
              char *sname = NULL, *tag = NULL;
              if (store_split_name (n, &sname, &tag, where, err) < 0)
                return -1;
              ps_strv_push (&pe->store_refs, sname);
              ps_strv_push (&pe->store_refs, tag);
              free (sname);
              free (tag);
            }
          if (pe->store_refs.n == 0)
            return store_split_name (NULL, NULL, NULL, where, err);
          continue;
        }
      const char *dest = solve_attrs_get (&e->attrs, "dest");
      if (dest && *dest)
        {
          if (check_output_dest (dest, env->output_roots, field, err) < 0)
            return -1;
          pe->dest = xstrdup (dest);
        }
      const char *name = solve_attrs_get (&e->attrs, "name");
      if (name && *name)
        {
          if (schema_imageref_check_tag (name, err) < 0)
            return ps_error_wrap (err, "%s.attrs.name", field);
          pe->name = schema_imageref_normalize_compat (name);
        }
    }
  return 0;
}

static int
plan_cache (struct solve_plan *p, const struct solve_env *env, ps_error **err)
{
  struct build_options *o = &p->build.opts;
  for (int pass = 0; pass < 2; pass++)
    {
      const struct solve_cache_entry *list = pass ? p->req.cache_exports : p->req.cache_imports;
      size_t n = pass ? p->req.n_cache_exports : p->req.n_cache_imports;
      const char *field = pass ? "cache.exports" : "cache.imports";
      for (size_t i = 0; i < n; i++)
        {
          if (strcmp (list[i].type, "local") == 0)
            {
              const char *key = pass ? "dest" : "src";
              const char *dir = solve_attrs_get (&list[i].attrs, key);
              char **slot = pass ? &p->local_cache_export : &p->local_cache_import;
              cleanup_free char *where = xasprintf ("%s[%zu].attrs.%s", field, i, key);
              if (dir == NULL || *dir == '\0')
                return ps_error_set (err, 400, "%s: missing (a directory on the server)", where);
              if (*slot)
                return ps_error_set (err, 400, "%s: only one local cache per direction", where);
              const char *mode = solve_attrs_get (&list[i].attrs, "mode");
              if (mode && strcmp (mode, "max") != 0)
                return ps_error_set (err, 400, "%s[%zu].attrs.mode: \"%s\" is not supported: buildah exports "
                                               "the layers of every step (mode=max)", field, i, mode);
              if (check_output_dest (dir, env->output_roots, where, err) < 0)
                return -1;
              *slot = xstrdup (dir);
              continue;
            }
          if (strcmp (list[i].type, "store") == 0 || strcmp (list[i].type, "s3") == 0)
            {
              cleanup_free char *where = xasprintf ("%s[%zu].attrs", field, i);
              const char *endpoint = solve_attrs_get (&list[i].attrs, "endpoint");
              const char *name = solve_attrs_get (&list[i].attrs, "name");
              const char *mode = solve_attrs_get (&list[i].attrs, "mode");
              struct s3_config *s3 = NULL;
              if (strcmp (list[i].type, "s3") == 0)
                {
                  cleanup_free char *entry = xasprintf ("%s[%zu]", field, i);
                  s3 = xcalloc (1, sizeof *s3);
                  if (s3_config_parse (s3, &list[i].attrs, S3_LAYOUT_CACHE, entry, err) < 0)
                    {
                      s3_config_free_ptr (s3);
                      return -1;
                    }
                  /* BuildKit's default manifest name; one name per entry
                     here (BuildKit takes a ';'-separated list). */
                  if (name == NULL || *name == '\0')
                    name = S3_DEFAULT_CACHE_NAME;
                  if (strchr (name, ';'))
                    {
                      s3_config_free_ptr (s3);
                      return ps_error_set (err, 400, "%s.name: \"%s\": one name per cache entry (give one entry "
                                                     "per name)", where, name);
                    }
                }
              else if (endpoint == NULL || *endpoint == '\0')
                return ps_error_set (err, 400, "%s.endpoint: missing (unix:///PATH or https://HOST of a store)",
                                     where);
              cleanup_free char *sname = NULL, *tag = NULL;
              cleanup_free char *name_field = xasprintf ("%s.name", where);
              int bad = store_split_name (name, &sname, &tag, name_field, err);
              if (bad == 0 && strchr (name, ':'))
                bad = ps_error_set (err, 400, "%s: \"%s\": a cache is a name in the store, without a tag",
                                    name_field, name);
              if (bad == 0 && mode && strcmp (mode, "max") != 0)
                bad = ps_error_set (err, 400, "%s.mode: \"%s\" is not supported: buildah exports the layers of "
                                              "every step (mode=max)", where, mode);
              if (bad < 0)
                {
                  s3_config_free_ptr (s3);
                  return -1;
                }
              p->store_caches = xrealloc (p->store_caches, (p->n_store_caches + 1) * sizeof *p->store_caches);
              p->store_caches[p->n_store_caches++]
                  = (struct plan_store_cache) { &list[i].attrs, steal_pointer (&sname), pass == 1, NULL, s3 };
              continue;
            }
          const char *ref = solve_attrs_get (&list[i].attrs, "ref");
          if (ref == NULL || *ref == '\0')
            return ps_error_set (err, 400, "%s[%zu].attrs.ref: missing (a registry repository)", field, i);
          const char *mode = solve_attrs_get (&list[i].attrs, "mode");
          if (mode && strcmp (mode, "max") != 0)
            return ps_error_set (err, 400, "%s[%zu].attrs.mode: \"%s\" is not supported: buildah exports the "
                                           "layers of every step (mode=max)", field, i, mode);
          const char *insecure = solve_attrs_get (&list[i].attrs, "registry.insecure");
          bool insecure_b = false;
          if (insecure && schema_api_bool (insecure, &insecure_b) < 0)
            return ps_error_set (err, 400, "%s[%zu].attrs.registry.insecure: \"%s\" is not a boolean", field, i,
                                 insecure);
          /* Loopback registries are plain HTTP without being told, as
             Docker Engine treats them. */
          if (insecure_b || schema_imageref_loopback_registry (ref))
            {
              /* Plain HTTP (or unverified TLS) for this registry only. */
              cleanup_free char *host = xstrndup (ref, strcspn (ref, "/"));
              ps_strv_push (&p->insecure_registries, host);
            }
          /* buildah keys its cache by repository; a tag names nothing more. */
          cleanup_free char *repo = cache_registry_repository (ref);
          ps_strv_push (pass ? &o->cache_to : &o->cache_from, repo);
          if (!pass)
            ps_strv_push (&o->cache_from_refs, ref);
        }
    }
  if (o->cache_to.n > 0)
    o->layers = true;
  return 0;
}

/* A definition is run by the LLB executor: only the attrs that mean
   something for a graph are taken (no-cache); the exporters are the same. */
static int
plan_llb (struct solve_plan *p, const struct solve_env *env, struct llb_graph *g, ps_error **err)
{
  struct llb_exec_env xe = { .sources = env->sources,
                             .n_sources = env->n_sources,
                             .state_dir = env->state_dir,
                             .authfile = env->authfile,
                             .session_id = p->req.source_session ? p->req.source_session : p->req.session,
                             .work_dir = env->job_dir,
                             .max_parallel = solver_jobs_max_parallel () };
  const struct solve_attrs *a = &p->req.frontend_attrs;
  for (size_t i = 0; i < a->n; i++)
    {
      const char *k = a->kv[2 * i], *v = a->kv[2 * i + 1];
      bool b = false;
      if (strcmp (k, "no-cache") == 0)
        {
          if (*v && schema_api_bool (v, &b) < 0)
            {
              llb_graph_free (g);
              return ps_error_set (err, 400, "frontendAttrs.no-cache: \"%s\" (a definition takes \"\", true "
                                             "or false)", v);
            }
          xe.no_cache = *v == '\0' || b;
        }
      else
        {
          llb_graph_free (g);
          return ps_error_set (err, 400, "frontendAttrs: \"%s\" means nothing with a definition (supported: "
                                         "no-cache)", k);
        }
    }
  if (p->req.n_cache_imports || p->req.n_cache_exports)
    {
      llb_graph_free (g);
      return ps_error_set (err, 501, "cache imports/exports with a definition are not supported by podsolve's "
                                     "LLB executor yet");
    }
  for (size_t e = 0; e < p->req.entitlements.n; e++)
    {
      xe.network_host |= strcmp (p->req.entitlements.v[e], "network.host") == 0;
      xe.insecure |= strcmp (p->req.entitlements.v[e], "security.insecure") == 0;
    }
  if (plan_exporters (p, env, true, err) < 0)
    {
      llb_graph_free (g);
      return -1;
    }
  if (env->authfile)
    p->build.opts.authfile = xstrdup (env->authfile);
  p->state_dir = xstrdup (env->state_dir);
  return llb_exec_new (g, &xe, &p->llb, err);
}

/* The request's stored sources unpacked, all but `except`: -1 with the
   plan freed when one cannot be. */
static int
plan_unpack_sources (struct solve_plan *p, const struct solve_env *env, const struct solve_source *except,
                     ps_error **err)
{
  if (context_unpack_sources (env->sources, env->n_sources, except, env->max_context_bytes, err) == 0)
    return 0;
  solve_plan_free (p);
  return -1;
}

int
solve_plan_new (struct solve_request *req, const struct solve_env *env, struct solve_plan **out, ps_error **err)
{
  struct solve_plan *p = xcalloc (1, sizeof *p);
  p->req = *req;
  memset (req, 0, sizeof *req);
  p->job_dir = xstrdup (env->job_dir);
  if (p->req.session)
    {
      /* Whatever runs (frontend or definition), the session it names is in
         use until this solve ends: its idle timeout does not apply. */
      p->claimed_session = xstrdup (p->req.session);
      session_claim (p->claimed_session);
    }
  if (p->req.source_session)
    {
      p->claimed_source_session = xstrdup (p->req.source_session);
      session_claim (p->claimed_source_session);
    }
  const char *source_session = p->req.source_session ? p->req.source_session : p->req.session;
  build_options_init (&p->build.opts);
  p->build.state_dir = env->state_dir ? xstrdup (env->state_dir) : NULL;
  for (size_t i = 0; i < p->req.entitlements.n; i++)
    ps_strv_push (&p->build.entitlements, p->req.entitlements.v[i]);
  struct build_options *o = &p->build.opts;
  o->format = xstrdup ("oci");
  o->layers = true;

  /* Only a Dockerfile build's context may stay in its tar (below). */
  bool dockerfile_frontend = !env->gateway.run && !p->req.has_definition
                             && !(p->req.frontend && strcmp (p->req.frontend, "gateway.v0") == 0);
  if (!dockerfile_frontend && plan_unpack_sources (p, env, NULL, err) < 0)
    return -1;
  if (env->gateway.run)
    {
      /* The client's frontend runs on its side (LLBBridge); its attrs are
         its own business.  The exporters are checked as for any solve;
         the cache options go with the gateway to each Dockerfile ref
         (gateway_build_opts), where they are checked as for /solve. */
      p->gateway = env->gateway;
      if (plan_exporters (p, env, false, err) < 0)
        {
          solve_plan_free (p);
          return -1;
        }
      if (env->authfile)
        p->build.opts.authfile = xstrdup (env->authfile);
      *out = p;
      return 0;
    }
  if (p->req.has_definition)
    {
      /* Everything about the graph is checked first (400/413 naming the op
         and the problem); only a valid graph reaches the executor. */
      struct llb_graph *g = NULL;
      int r = env->definition ? llb_graph_from_protobuf (env->definition, env->definition_len, &g, err)
                              : llb_graph_from_json (p->req.definition_json, &g, err);
      if (r < 0)
        {
          ps_error_wrap (err, "definition");
          solve_plan_free (p);
          return -1;
        }
      if (plan_llb (p, env, g, err) < 0)
        {
          solve_plan_free (p);
          return -1;
        }
      *out = p;
      return 0;
    }

  if (p->req.frontend && strcmp (p->req.frontend, "gateway.v0") == 0)
    {
      /* A frontend image: its attrs are its own (all passed to it), the
         request's local sources are its local sources. */
      const char *src = solve_attrs_get (&p->req.frontend_attrs, "source");
      if (src == NULL || *src == '\0')
        {
          ps_error_set (err, 400, "frontendAttrs.source: gateway.v0 needs the frontend image (e.g. "
                                  "docker.io/docker/dockerfile:1)");
          solve_plan_free (p);
          return -1;
        }
      if (plan_exporters (p, env, false, err) < 0)
        {
          solve_plan_free (p);
          return -1;
        }
      p->image_frontend = true;
      p->sources = xcalloc (env->n_sources + 1, sizeof *p->sources);
      for (size_t i = 0; i < env->n_sources; i++)
        p->sources[i] = (struct solve_source) { xstrdup (env->sources[i].name), xstrdup (env->sources[i].dir),
                                                env->sources[i].bytes, NULL };
      p->n_sources = env->n_sources;
      if (env->authfile)
        p->build.opts.authfile = xstrdup (env->authfile);
      *out = p;
      return 0;
    }

  const char *context_key = "context", *dockerfile_key = "dockerfile", *filename = NULL;
  if (apply_frontend_attrs (p, env, &context_key, &dockerfile_key, &filename, err) < 0
      || plan_exporters (p, env, false, err) < 0 || plan_cache (p, env, err) < 0
      || plan_platform_exporters (p, err) < 0)
    {
      solve_plan_free (p);
      return -1;
    }

  /* The context: a local source sent with the request, the client's
     session, or a URL in the "context" attr. */
  const struct solve_source *ctx = find_source (env, context_key);
  const struct solve_source *dfsrc = find_source (env, dockerfile_key);
  if (p->req.session && (ctx || o->remote))
    p->build.client_session = xstrdup (p->req.session);
  /* A context tar keyed before it is unpacked (dockerfile_build_key_tar):
     kept in its tar while a whole result may be reused. */
  const struct solve_source *deferred = NULL;
  if (ctx && ctx->tar && dfsrc == NULL && o->remote == NULL && p->session_contexts.n == 0)
    {
      const char *candidates[2] = { filename ? filename : "Dockerfile", "Containerfile" };
      o->context_dir = xstrdup (ctx->dir);
      if (dockerfile_build_key_tar (&p->build, ctx->tar, candidates, filename ? 1 : 2, env->max_context_bytes) == 1)
        deferred = ctx;
      free (o->context_dir);
      o->context_dir = NULL;
    }
  if (plan_unpack_sources (p, env, deferred, err) < 0)
    return -1;
  if (ctx == NULL && o->remote == NULL && source_session)
    {
      /* Dockerfile and context come over the session, inside the job. */
      p->build.session = session_sources_new (source_session, env->state_dir, p->job_dir, filename);
      p->build.session->max_context_bytes = env->max_context_bytes;
      if (p->req.source_session && p->req.session)
        p->build.session->secrets_session_id = xstrdup (p->req.session);
      free (p->build.session->context_name);
      p->build.session->context_name = xstrdup (context_key);
      free (p->build.session->dockerfile_name);
      p->build.session->dockerfile_name = xstrdup (dockerfile_key);
      p->build.session->named_locals = p->session_contexts; /* moved */
      p->session_contexts = (ps_strv){ 0 };
      if (env->authfile)
        o->authfile = xstrdup (env->authfile);
      *out = p;
      return 0;
    }
  if (ctx == NULL && o->remote == NULL)
    {
      ps_error_set (err, 400, "missing context: send a multipart part named \"%s\" (a tar of the build context), "
                              "a \"session\" from POST /session, or a git/http(s) URL in frontendAttrs.context",
                    context_key);
      solve_plan_free (p);
      return -1;
    }
  if (p->session_contexts.n > 0)
    {
      const char *nv = p->session_contexts.v[0];
      const char *eq = strchr (nv, '=');
      ps_error_set (err, 400, "frontendAttrs.context:%.*s: no local source \"%s\" was sent (add a multipart part named "
                              "\"%s\")", (int) (eq - nv), nv, eq + 1, eq + 1);
      solve_plan_free (p);
      return -1;
    }
  if (ctx)
    {
      o->context_dir = xstrdup (ctx->dir);
      p->build.context_bytes = ctx->bytes;
    }
  if (deferred)
    {
      /* The Dockerfile came from the tar; the ignore rules apply when the
         context is unpacked. */
      if (env->authfile)
        o->authfile = xstrdup (env->authfile);
      *out = p;
      return 0;
    }

  /* The Dockerfile: in its own source when sent, else in the context. */
  const char *search_dir = dfsrc ? dfsrc->dir : (ctx ? ctx->dir : NULL);
  cleanup_free char *df_path = NULL;
  if (search_dir)
    {
      const char *candidates[2] = { filename ? filename : "Dockerfile", "Containerfile" };
      const char *found = NULL;
      int r = dockerfile_find (search_dir, candidates, filename ? 1 : 2, &found, err);
      if (r < 0)
        {
          ps_error_wrap (err, "frontendAttrs.filename");
          solve_plan_free (p);
          return -1;
        }
      if (r == 0)
        {
          ps_error_set (err, 400, "Cannot locate specified Dockerfile: %s (looked in the \"%s\" source)",
                        filename ? filename : "Dockerfile", dfsrc ? dockerfile_key : context_key);
          solve_plan_free (p);
          return -1;
        }
      df_path = xstrdup (found);
      if (dfsrc)
        ps_strv_pushf (&o->dockerfiles, "%s/%s", dfsrc->dir, df_path);
      else
        ps_strv_push (&o->dockerfiles, df_path);
      cleanup_free char *full = xasprintf ("%s/%s", search_dir, df_path);
      char hex[65];
      if (dockerfile_read (full, NULL, NULL, hex, err) < 0)
        {
          solve_plan_free (p);
          return -1;
        }
      p->build.definition_digest = xstrdup (hex);
    }
  else if (filename)
    ps_strv_push (&o->dockerfiles, filename);
  p->build.dockerfile_name = xstrdup (df_path ? df_path : (filename ? filename : "Dockerfile"));
  if (p->build.definition_digest == NULL)
    {
      char hex[65];
      ps_sha256_hex (o->remote ? o->remote : "", o->remote ? strlen (o->remote) : 0, hex);
      p->build.definition_digest = xstrdup (hex);
    }

  if (ctx && context_apply_ignore (ctx->dir, dfsrc ? NULL : df_path, NULL, err) < 0)
    {
      solve_plan_free (p);
      return -1;
    }
  if (env->authfile)
    o->authfile = xstrdup (env->authfile);
  *out = p;
  return 0;
}

/* ---- running ------------------------------------------------------------------ */

struct export_vertex
{
  solver_job *job;
  char *digest;
  char *name;
  int64_t started;
  bool cached; /* the work was found done (reported when the vertex ends) */
};

static void
vertex_begin (struct export_vertex *v, solver_job *job, const char *image_id, const char *name)
{
  v->job = job;
  v->name = xstrdup (name);
  cleanup_free char *material = xasprintf ("%s\nexport\n%s", image_id, name);
  char hex[65];
  ps_sha256_hex (material, strlen (material), hex);
  v->digest = xasprintf ("sha256:%s", hex);
  v->started = ps_now_ns ();
  v->cached = false;
  solver_job_emit_vertex (job, v->digest, name, NULL, v->started, 0, false, NULL, NULL);
}

static void
vertex_status (struct export_vertex *v, const char *id, int64_t current, int64_t total)
{
  struct solver_event ev = { .kind = SOLVER_EV_STATUS };
  ev.vertex = xstrdup (v->digest);
  ev.status_id = xstrdup (id);
  ev.current = current;
  ev.total = total;
  ev.started_ns = v->started;
  ev.completed_ns = ps_now_ns ();
  solver_job_emit (v->job, &ev);
}

static void
vertex_end (struct export_vertex *v, const char *error)
{
  solver_job_emit_vertex (v->job, v->digest, v->name, NULL, v->started, ps_now_ns (), v->cached && error == NULL,
                          error, NULL);
  free (v->digest);
  free (v->name);
}

/* push-by-digest=true: buildx's multi-node --push has every node push its
   image to the repository (name without a tag) and merges the list from
   the digests the nodes answer.  BuildKit then pushes no tag; buildah
   cannot push a manifest without one, so the image goes up under the tag
   PS_PUSH_BY_DIGEST_TAG of the repository, never the name's own tag (the
   user's :latest stays as it was). */
#define PS_PUSH_BY_DIGEST_TAG "podsolve-by-digest"

/* The length of `name`'s repository: without its :tag or @digest. */
static size_t
repository_len (const char *name)
{
  const char *slash = strrchr (name, '/');
  const char *tail = slash ? slash : name;
  return (size_t) (tail - name) + strcspn (tail, ":@");
}

static char *
by_digest_ref (const char *name)
{
  size_t n = repository_len (name);
  return xasprintf ("docker://%.*s:%s", (int) n, name, PS_PUSH_BY_DIGEST_TAG);
}

/* The descriptor of the manifest `digest` just pushed to `dest_ref`
   ("docker://host/repo:tag"), as BuildKit's exporter response carries it
   (containerimage.descriptor: base64 of {mediaType, digest, size}): buildx
   merges the images of a multi-node build into one list from these
   descriptors, reading each manifest from the registry by digest.  The
   manifest is read back as the registry serves it (`skopeo inspect
   --raw`); NULL when that fails (buildx then falls back to the digest). */
static char *
pushed_manifest_descriptor (const struct solve_plan *p, const char *dest_ref, const char *digest, bool insecure)
{
  const char *name = ps_str_has_prefix (dest_ref, "docker://") ? dest_ref + 9 : dest_ref;
  size_t n = repository_len (name);
  ps_strv argv = { 0 };
  ps_strv_push (&argv, "skopeo");
  ps_strv_push (&argv, "inspect");
  ps_strv_push (&argv, "--raw");
  if (insecure || schema_imageref_loopback_registry (name))
    ps_strv_push (&argv, "--tls-verify=false");
  if (p->build.opts.authfile)
    ps_strv_pushf (&argv, "--authfile=%s", p->build.opts.authfile);
  ps_strv_pushf (&argv, "docker://%.*s@%s", (int) n, name, digest);
  cleanup_free char *raw = NULL;
  cleanup_free char *errout = NULL;
  int status = -1;
  ps_error *err = NULL;
  int r = ps_run_capture (argv.v, &raw, &errout, &status, &err);
  ps_strv_free (&argv);
  if (r < 0 || status != 0 || raw == NULL)
    {
      ps_debug ("reading back the pushed manifest %.*s@%s: %s", (int) n, name, digest,
                err ? err->msg : (errout ? errout : "failed"));
      ps_error_free (err);
      return NULL;
    }
  cJSON *doc = cJSON_Parse (raw);
  const cJSON *mt = doc ? cJSON_GetObjectItemCaseSensitive (doc, "mediaType") : NULL;
  cJSON *desc = cJSON_CreateObject ();
  cJSON_AddStringToObject (desc, "mediaType", cJSON_IsString (mt) ? mt->valuestring
                                                                  : "application/vnd.oci.image.manifest.v1+json");
  cJSON_AddStringToObject (desc, "digest", digest);
  cJSON_AddNumberToObject (desc, "size", (double) strlen (raw));
  cJSON_Delete (doc);
  cleanup_free char *json = cJSON_PrintUnformatted (desc);
  cJSON_Delete (desc);
  return ps_base64_encode (json, strlen (json));
}

/* Push `image_id` to `dest_ref`; with `digest_out`, the digest of the
   manifest as pushed (buildah recompresses layers, so it differs from the
   local manifest's). */
static int
push_image (const struct solve_plan *p, const char *image_id, const char *dest_ref, bool insecure,
            char **digest_out, ps_error **err)
{
  ps_strv argv = { 0 };
  /* A multi-platform result: the list and every image in it. */
  bool list = is_list (p, image_id);
  if (list)
    {
      ps_strv_push (&argv, "manifest");
      ps_strv_push (&argv, "push");
      ps_strv_push (&argv, "--all");
    }
  else
    ps_strv_push (&argv, "push");
  ps_strv_push (&argv, "--quiet");
  if (insecure || schema_imageref_loopback_registry (dest_ref))
    ps_strv_push (&argv, "--tls-verify=false");
  if (p->build.opts.authfile)
    ps_strv_pushf (&argv, "--authfile=%s", p->build.opts.authfile);
  cleanup_free char *digest_file = digest_out ? xasprintf ("%s/push-digest", p->job_dir) : NULL;
  if (digest_file)
    ps_strv_pushf (&argv, "--digestfile=%s", digest_file);
  ps_strv_push (&argv, image_id);
  ps_strv_push (&argv, dest_ref);
  int r = buildah_call ((const char *const *) argv.v, NULL, err);
  ps_strv_free (&argv);
  if (r == 0 && digest_file)
    {
      cleanup_free char *d = NULL;
      if (ps_read_file (digest_file, 256, &d, NULL, NULL) == 0 && ps_str_has_prefix (d, "sha256:"))
        {
          free (*digest_out);
          *digest_out = xstrndup (d, strcspn (d, "\n"));
        }
      unlink (digest_file);
    }
  return r;
}

struct tar_job
{
  const char *path;
  uint64_t bytes;
  const char *dir;
};

static int
write_rootfs_tar (const char *root, void *ud, ps_error **err)
{
  struct tar_job *t = ud;
  return rootfs_write_tar (root, t->path, &t->bytes, err);
}

static int
copy_rootfs (const char *root, void *ud, ps_error **err)
{
  struct tar_job *t = ud;
  return rootfs_copy_dir (root, t->dir, err);
}

static uint64_t
file_size (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? (uint64_t) st.st_size : 0;
}

struct client_send
{
  ps_session *sess;
  uint64_t bytes;
};

static void
client_send_progress (void *ud, uint64_t bytes)
{
  ((struct client_send *) ud)->bytes = bytes;
}

static int
send_rootfs_dir (const char *root, void *ud, ps_error **err)
{
  struct client_send *c = ud;
  return session_filesend_dir (c->sess, root, client_send_progress, c, err);
}

/* Control.Solve's local, tar, oci and docker outputs: to the client over
   the FileSend its session serves (it keeps the destination to itself). */

/* Exporter oci or docker: the image as an OCI or docker archive at `path`
   (named e->name, else the first image name), under its own vertex `v`,
   which the caller ends. */
static int
write_image_archive (struct solve_plan *p, solver_job *job, const struct plan_exporter *e, const char *image_id,
                     const char *path, struct export_vertex *v, ps_error **err)
{
  bool oci = e->type[0] == 'o';
  vertex_begin (v, job, image_id, oci ? "exporting to oci image format" : "exporting to docker image format");
  const char *name = e->name ? e->name : (p->image_names.n ? p->image_names.v[0] : NULL);
  cleanup_free char *ref = name ? xasprintf ("%s:%s:%s", oci ? "oci-archive" : "docker-archive", path, name)
                                : xasprintf ("%s:%s", oci ? "oci-archive" : "docker-archive", path);
  unlink (path);
  return push_image (p, image_id, ref, false, NULL, err);
}

static int
export_to_client (solver_job *job, struct solve_plan *p, size_t idx, const char *image_id, ps_error **err)
{
  struct plan_exporter *e = &p->exporters[idx];
  ps_session *sess = session_wait (p->req.session, 0, err);
  if (sess == NULL)
    return ps_error_wrap (err, "send the output to the client");
  struct client_send c = { .sess = sess };
  struct export_vertex v;
  int ret;
  if (strcmp (e->type, "local") == 0)
    {
      vertex_begin (&v, job, image_id, "exporting to client directory");
      if (is_list (p, image_id))
        {
          /* One directory per platform, assembled here, then sent. */
          cleanup_free char *tree = xasprintf ("%s/outputs/%zu.d", p->job_dir, idx);
          ret = copy_platforms (p, tree, err);
          if (ret == 0)
            ret = send_rootfs_dir (tree, &c, err);
          ps_rm_rf (tree, NULL);
        }
      else
        ret = rootfs_with_mount (image_id, send_rootfs_dir, &c, err);
      if (ret == 0)
        vertex_status (&v, "copying files", (int64_t) c.bytes, (int64_t) c.bytes);
      vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
      session_unref (sess);
      return ret;
    }
  cleanup_free char *outdir = xasprintf ("%s/outputs", p->job_dir);
  cleanup_free char *path = xasprintf ("%s/%zu.tar", outdir, idx);
  if (ps_mkdir_p (outdir, 0700, err) < 0)
    {
      session_unref (sess);
      return -1;
    }
  if (strcmp (e->type, "tar") == 0)
    {
      vertex_begin (&v, job, image_id, "exporting to client tarball");
      struct tar_job t = { .path = path };
      ret = is_list (p, image_id) ? tar_platforms (p, path, &t.bytes, err)
                                  : rootfs_with_mount (image_id, write_rootfs_tar, &t, err);
    }
  else
    {
      ret = write_image_archive (p, job, e, image_id, path, &v, err);
    }
  if (ret == 0)
    ret = session_filesend_file (sess, path, client_send_progress, &c, err);
  if (ret == 0)
    vertex_status (&v, "sending tarball", (int64_t) c.bytes, (int64_t) c.bytes);
  vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
  unlink (path);
  session_unref (sess);
  return ret;
}

/* type=store: the image (or the list of a multi-platform build) as an OCI
   layout in the job's directory, then into the store: blobs, manifests,
   tags last (solver/store_client.h). */
static int
export_to_store (solver_job *job, struct solve_plan *p, size_t idx, const char *image_id, ps_error **err)
{
  struct plan_exporter *e = &p->exporters[idx];
  struct store_config cfg = {
    .endpoint = solve_attrs_get (e->attrs, "endpoint"),
    .token = solve_attrs_get (e->attrs, "token"),
    .tls_ca = solve_attrs_get (e->attrs, "tls.ca"),
    .tls_cert = solve_attrs_get (e->attrs, "tls.cert"),
    .tls_key = solve_attrs_get (e->attrs, "tls.key"),
    .s3 = e->s3,
  };
  struct export_vertex v;
  cleanup_free char *label = store_label (e->attrs, e->s3);
  cleanup_free char *title = xasprintf ("exporting to %s", label);
  vertex_begin (&v, job, image_id, title);
  cleanup_free char *built = xasprintf ("%s/outputs/%zu.oci", p->job_dir, idx);
  /* The layout an earlier export of this image left (export_layout.h);
     a list is not kept: its ID stays when an image is added to it. */
  const char *state_dir = p->state_dir ? p->state_dir : p->build.state_dir;
  cleanup_free char *kept = is_list (p, image_id) ? NULL : export_layout_path (state_dir, image_id);
  const char *layout = built;
  int ret = 0;
  if (kept && export_layout_ready (kept))
    {
      layout = kept;
      vertex_status (&v, "reusing the layout of an earlier export", 0, 0);
    }
  else
    {
      cleanup_free char *dest = xasprintf ("oci:%s", built);
      ret = ps_mkdir_p (built, 0700, err);
      if (ret == 0)
        ret = push_image (p, image_id, dest, false, NULL, err);
      if (ret == 0 && kept && export_layout_keep (built, kept))
        layout = kept;
    }
  store_client *c = ret == 0 ? store_client_new (&cfg, err) : NULL;
  if (ret == 0 && c == NULL)
    ret = -1;
  uint64_t total = 0;
  for (size_t i = 0; ret == 0 && i + 1 < e->store_refs.n; i += 2)
    {
      ps_strv tags = { 0 };
      ps_strv_push (&tags, e->store_refs.v[i + 1]);
      cleanup_free char *digest = NULL;
      uint64_t bytes = 0;
      ret = store_push_layout (c, layout, e->store_refs.v[i], &tags, &digest, &bytes, err);
      ps_strv_free (&tags);
      total += bytes;
      if (ret == 0 && p->pushed_digest == NULL && digest)
        p->pushed_digest = xstrdup (digest);
    }
  if (ret == 0)
    vertex_status (&v, "pushing blobs", (int64_t) total, (int64_t) total);
  store_client_free (c);
  ps_rm_rf (built, NULL);
  vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
  return ret;
}

static int
run_exporter (solver_job *job, struct solve_plan *p, size_t idx, const char *image_id, ps_error **err)
{
  struct plan_exporter *e = &p->exporters[idx];
  struct export_vertex v;
  int ret = 0;
  if (e->image)
    image_id = e->image;

  if (strcmp (e->type, "cacheonly") == 0)
    return 0;
  if (strcmp (e->type, "image") == 0)
    {
      if (!e->push)
        return 0;
      for (size_t i = 0; i < p->image_names.n && ret == 0; i++)
        {
          cleanup_free char *title = xasprintf ("pushing %s", p->image_names.v[i]);
          vertex_begin (&v, job, image_id, title);
          cleanup_free char *ref = e->push_by_digest ? by_digest_ref (p->image_names.v[i])
                                                     : xasprintf ("docker://%s", p->image_names.v[i]);
          ret = push_image (p, image_id, ref, e->insecure, &p->pushed_digest, err);
          if (ret == 0 && p->pushed_digest && p->pushed_descriptor == NULL)
            p->pushed_descriptor = pushed_manifest_descriptor (p, ref, p->pushed_digest, e->insecure);
          vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
        }
      return ret;
    }

  if (strcmp (e->type, "store") == 0 || strcmp (e->type, "s3") == 0)
    return export_to_store (job, p, idx, image_id, err);
  if (e->to_client)
    return export_to_client (job, p, idx, image_id, err);

  /* Everything else writes a file or a directory. */
  cleanup_free char *kept = NULL;
  const char *path = e->dest;
  if (path == NULL)
    {
      cleanup_free char *outdir = xasprintf ("%s/outputs", p->job_dir);
      if (ps_mkdir_p (outdir, 0700, err) < 0)
        return -1;
      path = kept = xasprintf ("%s/%zu.tar", outdir, idx);
    }

  if (strcmp (e->type, "oci") == 0 || strcmp (e->type, "docker") == 0)
    {
      ret = write_image_archive (p, job, e, image_id, path, &v, err);
      if (ret == 0)
        vertex_status (&v, "sending tarball", (int64_t) file_size (path), (int64_t) file_size (path));
      vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
    }
  else if (strcmp (e->type, "tar") == 0 || (strcmp (e->type, "local") == 0 && e->dest == NULL))
    {
      vertex_begin (&v, job, image_id, "exporting to client tarball");
      struct tar_job t = { .path = path };
      if (is_list (p, image_id))
        ret = tar_platforms (p, path, &t.bytes, err);
      else
        ret = rootfs_with_mount (image_id, write_rootfs_tar, &t, err);
      if (ret == 0)
        vertex_status (&v, "sending tarball", (int64_t) t.bytes, (int64_t) t.bytes);
      vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
    }
  else if (is_list (p, image_id))
    {
      vertex_begin (&v, job, image_id, "exporting to client directory");
      ret = copy_platforms (p, e->dest, err);
      vertex_status (&v, "copying files", 0, 0);
      vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
      return ret;
    }
  else
    {
      vertex_begin (&v, job, image_id, "exporting to client directory");
      struct tar_job t = { .dir = e->dest };
      ret = rootfs_with_mount (image_id, copy_rootfs, &t, err);
      vertex_status (&v, "copying files", 0, 0);
      vertex_end (&v, ret < 0 ? (*err)->msg : NULL);
      return ret;
    }
  if (ret == 0 && kept)
    {
      solver_job_add_output (job, idx, e->type, kept, file_size (kept));
      solver_job_keep_dir (job, true);
    }
  return ret;
}

static char *
manifest_digest (const struct solve_plan *p, const char *image_id)
{
  /* A manifest list in storage has no digest of its own until it is
     pushed (buildah keeps the digest of the empty list it created, and
     each push serialises it anew): none is reported. */
  return is_list (p, image_id) ? NULL : buildah_image_digest (image_id);
}

/* A Dockerfile build for several platforms makes a manifest list, which
   a docker archive cannot carry: say so before the build starts.  (The
   tar and local exporters write a directory per platform.) */
static int
plan_platform_exporters (const struct solve_plan *p, ps_error **err)
{
  if (p->build.opts.platforms.n < 2)
    return 0;
  for (size_t i = 0; i < p->n_exporters; i++)
    {
      const struct plan_exporter *e = &p->exporters[i];
      if (strcmp (e->type, "docker") == 0)
        return ps_error_set (err, 400,
                             "exporters[%zu]: type=docker cannot hold the %zu platforms asked for (a manifest list); "
                             "use type=oci, or one --platform",
                             i, p->build.opts.platforms.n);
    }
  return 0;
}

/* Each exporter's image: the definition's result, or the result with the
   exporter's containerimage.config applied (one image per distinct
   config; a tar of the files needs none).  The image exporter's image
   becomes the solve's image (its tags, the exporter response); without
   one, the first configured image does. */
static int
apply_image_configs (solver_job *job, struct solve_plan *p, char **image_id, ps_error **err)
{
  for (size_t i = 0; i < p->n_exporters; i++)
    {
      struct plan_exporter *e = &p->exporters[i];
      if (e->config == NULL || strcmp (e->type, "tar") == 0)
        {
          e->image = xstrdup (*image_id);
          continue;
        }
      const char *text = image_config_text (e->config);
      for (size_t j = 0; j < i && e->image == NULL; j++)
        {
          const struct plan_exporter *o = &p->exporters[j];
          if (o->config && strcmp (o->type, "tar") && strcmp (image_config_text (o->config), text) == 0)
            e->image = xstrdup (o->image);
        }
      if (e->image == NULL)
        {
          char hex[65];
          ps_sha256_hex (text, strlen (text), hex);
          cleanup_free char *material = xasprintf ("%s\nimage config %s", *image_id, hex);
          struct export_vertex v;
          vertex_begin (&v, job, material, "applying containerimage.config");
          int r = image_config_apply (e->config, *image_id, p->state_dir, &e->image, &v.cached, err);
          vertex_end (&v, r < 0 ? (*err)->msg : NULL);
          if (r < 0)
            {
              struct solver_event ev = { .kind = SOLVER_EV_ERROR };
              ev.error = xasprintf ("exporters[%zu].attrs.containerimage.config: %s", i, (*err)->msg);
              solver_job_emit (job, &ev);
              return -1;
            }
        }
    }
  const char *primary = NULL;
  for (size_t i = 0; i < p->n_exporters && primary == NULL; i++)
    if (strcmp (p->exporters[i].type, "image") == 0)
      primary = p->exporters[i].image;
  for (size_t i = 0; i < p->n_exporters && primary == NULL; i++)
    if (p->exporters[i].config && strcmp (p->exporters[i].type, "tar"))
      primary = p->exporters[i].image;
  if (primary && strcmp (primary, *image_id))
    {
      char *id = xstrdup (primary);
      free (*image_id);
      *image_id = id;
    }
  return 0;
}

struct platform_tar
{
  rootfs_tar *t;
  const char *prefix;
};

static int
add_platform_tree (const char *root, void *ud, ps_error **err)
{
  struct platform_tar *pt = ud;
  return rootfs_tar_add (pt->t, root, pt->prefix, err);
}

/* A multi-platform tar export: each platform's files under linux_amd64/... */
static int
tar_platforms (struct solve_plan *p, const char *path, uint64_t *bytes, ps_error **err)
{
  rootfs_tar *t = rootfs_tar_new (path, err);
  if (t == NULL)
    return -1;
  const ps_strv *imgs = &p->build.platform_images;
  int ret = 0;
  for (size_t i = 0; ret == 0 && i + 1 < imgs->n; i += 2)
    {
      cleanup_free char *sub = xstrdup (imgs->v[i]);
      for (char *c = sub; *c; c++)
        if (*c == '/')
          *c = '_';
      struct platform_tar pt = { t, sub };
      ret = rootfs_with_mount (imgs->v[i + 1], add_platform_tree, &pt, err);
    }
  return rootfs_tar_finish (t, ret, bytes, err);
}

/* Per-platform directories of a multi-platform local export, as
   BuildKit's local exporter writes them: DEST/linux_amd64/... */
static int
copy_platforms (struct solve_plan *p, const char *dest, ps_error **err)
{
  const ps_strv *imgs = &p->build.platform_images;
  for (size_t i = 0; i + 1 < imgs->n; i += 2)
    {
      cleanup_free char *sub = xstrdup (imgs->v[i]);
      for (char *c = sub; *c; c++)
        if (*c == '/')
          *c = '_';
      cleanup_free char *dir = xasprintf ("%s/%s", dest, sub);
      if (ps_mkdir_p (dir, 0755, err) < 0)
        return -1;
      struct tar_job t = { .dir = dir };
      if (rootfs_with_mount (imgs->v[i + 1], copy_rootfs, &t, err) < 0)
        return ps_error_wrap (err, "%s", imgs->v[i]);
    }
  return 0;
}

/* Serve the local cache dirs as loopback registries for this build and
   point buildah at them. */
static int
start_local_caches (solver_job *job, struct solve_plan *p, struct cache_registry regs[2], size_t *n, ps_error **err)
{
  struct build_options *o = &p->build.opts;
  *n = 0;
  ps_strv served = { 0 }; /* "127.0.0.1:PORT" of the stores served */
  for (size_t i = 0; i < p->n_store_caches; i++)
    {
      struct plan_store_cache *sc = &p->store_caches[i];
      struct store_config cfg = {
        .endpoint = solve_attrs_get (sc->attrs, "endpoint"),
        .token = solve_attrs_get (sc->attrs, "token"),
        .tls_ca = solve_attrs_get (sc->attrs, "tls.ca"),
        .tls_cert = solve_attrs_get (sc->attrs, "tls.cert"),
        .tls_key = solve_attrs_get (sc->attrs, "tls.key"),
        .s3 = sc->s3,
      };
      cleanup_free char *label = store_label (sc->attrs, sc->s3);
      cleanup_free char *repo = NULL;
      ps_error *serr = NULL;
      sc->served = store_registry_start (&cfg, sc->name, p->job_dir, &repo, &serr);
      if (sc->served == NULL)
        {
          if (sc->export)
            {
              *err = serr;
              ps_strv_free (&served);
              return ps_error_wrap (err, "cache export to %s", label);
            }
          /* As BuildKit: a cache that cannot be imported is a warning. */
          cleanup_free char *msg = xasprintf ("cache import from %s: %s; building without it", label, serr->msg);
          solver_job_emit_warning (job, NULL, 1, msg, NULL, NULL);
          ps_error_free (serr);
          continue;
        }
      ps_strv_push (sc->export ? &o->cache_to : &o->cache_from, repo);
      if (!sc->export)
        ps_strv_push (&o->cache_from_refs, repo);
      ps_strv_pushf (&served, "%.*s", (int) strcspn (repo, "/"), repo);
    }
  const char *dirs[2] = { p->local_cache_import, p->local_cache_export };
  for (int i = 0; i < 2; i++)
    {
      if (dirs[i] == NULL)
        continue;
      size_t use = *n;
      if (i == 1 && dirs[0] && strcmp (dirs[0], dirs[1]) == 0)
        use = 0; /* import and export share one directory */
      else
        {
          if (cache_registry_start (dirs[i], p->job_dir, &regs[*n], err) < 0)
            {
              ps_strv_free (&served);
              return ps_error_wrap (err, "local cache %s", dirs[i]);
            }
          (*n)++;
        }
      ps_strv_push (i == 0 ? &o->cache_from : &o->cache_to, regs[use].repo);
      if (i == 0)
        ps_strv_push (&o->cache_from_refs, regs[use].repo);
    }
  if (*n == 0 && p->insecure_registries.n == 0 && served.n == 0)
    return 0;
  o->layers = true;
  ps_strv insecure = served; /* moved */
  for (size_t i = 0; i < *n; i++)
    ps_strv_pushf (&insecure, "127.0.0.1:%d", regs[i].port);
  for (size_t i = 0; i < p->insecure_registries.n; i++)
    ps_strv_push (&insecure, p->insecure_registries.v[i]);
  cleanup_free char *conf = xasprintf ("%s/registries.conf", p->job_dir);
  int r = cache_registry_write_conf (conf, &insecure, err);
  ps_strv_free (&insecure);
  if (r < 0)
    return -1;
  ps_strv_pushf (&o->env, "CONTAINERS_REGISTRIES_CONF=%s", conf);
  return 0;
}

/* The image exporters' names on the built image: one `buildah tag` for
   those that do not name it already (a process each cost 20 ms or more; a
   rebuild that changed nothing needs none); a failure is the build's
   ERROR event. */
static int
tag_image_names (solver_job *job, const struct solve_plan *p, const char *image_id, ps_error **err)
{
  ps_strv args = { 0 };
  ps_strv_push (&args, "tag");
  ps_strv_push (&args, image_id);
  for (size_t i = 0; i < p->image_names.n; i++)
    if (!buildah_image_named (p->image_names.v[i], image_id))
      ps_strv_push (&args, p->image_names.v[i]);
  int r = args.n > 2 ? buildah_call ((const char *const *) args.v, NULL, err) : 0;
  ps_strv_free (&args);
  if (r < 0)
    {
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      ev.error = xasprintf ("tag %s: %s", p->image_names.v[0], (*err)->msg);
      solver_job_emit (job, &ev);
    }
  return r;
}

int
solve_plan_build (solver_job *job, struct solve_plan *p, char **image_id, ps_error **err)
{
  struct cache_registry regs[2];
  size_t nregs = 0;
  int r = start_local_caches (job, p, regs, &nregs, err);
  if (r == 0 && p->gateway.run)
    {
      r = p->gateway.run (job, p->gateway.ud, image_id, err);
      if (r < 0)
        {
          struct solver_event ev = { .kind = SOLVER_EV_ERROR };
          ev.error = xstrdup ((*err)->msg);
          solver_job_emit (job, &ev);
        }
      if (r == 0 && *image_id)
        r = tag_image_names (job, p, *image_id, err);
    }
  else if (r == 0 && p->image_frontend)
    {
      struct frontend_image_req fr = {
        .image = solve_attrs_get (&p->req.frontend_attrs, "source"),
        .resolve_mode = solve_attrs_get (&p->req.frontend_attrs, "image-resolve-mode"),
        .opts = &p->req.frontend_attrs,
        .sources = p->sources,
        .n_sources = p->n_sources,
        .session = p->req.source_session ? p->req.source_session : p->req.session,
        .entitlements = &p->req.entitlements,
        .job_dir = p->job_dir,
        .authfile = p->build.opts.authfile,
        .state_dir = p->build.state_dir,
        .cache_imports = p->req.cache_imports,
        .n_cache_imports = p->req.n_cache_imports,
        .cache_exports = p->req.cache_exports,
        .n_cache_exports = p->req.n_cache_exports,
      };
      r = solver_job_take_slot (job, err) < 0 ? -1 : frontend_image_run (job, &fr, image_id, err);
      if (r < 0)
        {
          struct solver_event ev = { .kind = SOLVER_EV_ERROR };
          ev.error = xstrdup ((*err)->msg);
          solver_job_emit (job, &ev);
        }
      if (r == 0)
        r = tag_image_names (job, p, *image_id, err);
    }
  else if (r == 0 && p->llb)
    {
      r = solver_job_take_slot (job, err) < 0 ? -1 : llb_exec_run (p->llb, job, image_id, err);
      if (r == 0)
        r = apply_image_configs (job, p, image_id, err);
      if (r == 0)
        r = tag_image_names (job, p, *image_id, err);
    }
  else if (r == 0)
    r = dockerfile_frontend_run (job, &p->build, image_id, err);
  else
    {
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      ev.error = xstrdup ((*err)->msg);
      solver_job_emit (job, &ev);
    }
  for (size_t i = 0; i < nregs; i++)
    cache_registry_stop (&regs[i]);
  for (size_t i = 0; i < p->n_store_caches; i++)
    {
      struct plan_store_cache *sc = &p->store_caches[i];
      size_t failed = store_registry_failures (sc->served);
      if (failed && !sc->export)
        {
          cleanup_free char *label = store_label (sc->attrs, sc->s3);
          cleanup_free char *msg = xasprintf ("cache import from %s: %zu requests to the store failed; the "
                                              "steps they were for were built again (the daemon's log has each "
                                              "error)", label, failed);
          solver_job_emit_warning (job, NULL, 1, msg, NULL, NULL);
        }
      store_registry_stop (sc->served);
      sc->served = NULL;
    }
  return r < 0 ? -1 : 0;
}

static int solve_run_exports (solver_job *job, struct solve_plan *p, char **image_idp, ps_error **err);

int
solve_run (solver_job *job, void *userdata, ps_error **err)
{
  struct solve_plan *p = userdata;
  cleanup_free char *image_id = NULL;
  int r = solve_run_exports (job, p, &image_id, err);
  dockerfile_build_release_list (&p->build);
  return r;
}

static int
solve_run_exports (solver_job *job, struct solve_plan *p, char **image_idp, ps_error **err)
{
  if (solve_plan_build (job, p, image_idp, err) < 0)
    return -1;
  const char *image_id = *image_idp;
  if (image_id == NULL)
    {
      /* A client-side gateway build that returned no result (buildx's
         probe): nothing to export. */
      struct solver_event ev = { .kind = SOLVER_EV_RESULT };
      ev.response = xcalloc (1, sizeof (char *));
      solver_job_emit (job, &ev);
      return 0;
    }

  for (size_t i = 0; i < p->n_exporters; i++)
    if (run_exporter (job, p, i, image_id, err) < 0)
      {
        struct solver_event ev = { .kind = SOLVER_EV_ERROR };
        ev.error = xasprintf ("export %s: %s", p->exporters[i].type, (*err)->msg);
        solver_job_emit (job, &ev);
        return -1;
      }

  ps_strv resp = { 0 };
  /* BuildKit reports the digest of the manifest it pushed; without a push,
     that of the image's manifest in storage. */
  cleanup_free char *mdigest = p->pushed_digest ? xstrdup (p->pushed_digest) : manifest_digest (p, image_id);
  if (mdigest && *mdigest)
    {
      ps_strv_push (&resp, "containerimage.digest");
      ps_strv_push (&resp, mdigest);
    }
  if (p->pushed_descriptor)
    {
      ps_strv_push (&resp, "containerimage.descriptor");
      ps_strv_push (&resp, p->pushed_descriptor);
    }
  ps_strv_push (&resp, "containerimage.config.digest");
  ps_strv_pushf (&resp, "sha256:%s", image_id);
  if (p->image_names.n > 0)
    {
      ps_buf names = { 0 };
      for (size_t i = 0; i < p->image_names.n; i++)
        {
          if (i)
            ps_buf_puts (&names, ",");
          ps_buf_puts (&names, p->image_names.v[i]);
        }
      ps_strv_push (&resp, "image.name");
      ps_strv_push (&resp, names.data);
      ps_buf_free (&names);
    }
  struct solver_event ev = { .kind = SOLVER_EV_RESULT };
  ev.image_id = xstrdup (image_id);
  ev.response = resp.v; /* moved */
  solver_job_emit (job, &ev);
  return 0;
}
