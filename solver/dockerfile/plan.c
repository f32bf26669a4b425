/* plan.c — preparing a /build request (context intake, Dockerfile
 * resolution, secrets, credentials). */
#define _GNU_SOURCE
#include "solver/dockerfile/plan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/limits.h"
#include "solver/cache_registry.h"
#include "solver/context.h"
#include "solver/dockerfile/build.h"
#include "solver/dockerfile/scan.h"
#include "solver/registry_auth.h"
#include "solver/session_io.h"

/* ---- preparing a /build -------------------------------------------------------------- */

static bool
is_url (const char *s)
{
  return ps_str_has_prefix (s, "http://") || ps_str_has_prefix (s, "https://");
}

/* dockerfile=: compat defaults to Dockerfile and, as users expect, falls
   back to Containerfile; libpod looks for Containerfile, then Dockerfile. */
static int
resolve_dockerfiles (const struct build_request *b, struct build_options *o, const char *ctx, ps_error **err)
{
  const char *found = NULL;
  if (b->dockerfile_param.n == 0)
    {
      static const char *const order_compat[] = { "Dockerfile", "Containerfile" };
      static const char *const order_libpod[] = { "Containerfile", "Dockerfile" };
      int r = dockerfile_find (ctx, b->libpod ? order_libpod : order_compat, 2, &found, err);
      if (r < 0)
        return -1;
      if (r == 1)
        {
          ps_strv_push (&o->dockerfiles, found);
          return 0;
        }
      return ps_error_set (err, 400,
                           b->libpod ? "no Containerfile or Dockerfile specified or found in context directory"
                                     : "Cannot locate specified Dockerfile: Dockerfile");
    }
  for (size_t i = 0; i < b->dockerfile_param.n; i++)
    {
      const char *f = b->dockerfile_param.v[i];
      if (is_url (f))
        {
          ps_strv_push (&o->dockerfiles, f);
          continue;
        }
      int r = dockerfile_find (ctx, &f, 1, &found, err);
      if (r < 0)
        return -1;
      if (r == 0)
        return ps_error_set (err, 400, "Cannot locate specified Dockerfile: %s", f);
      while (ps_str_has_prefix (f, "./"))
        f += 2;
      ps_strv_push (&o->dockerfiles, f);
    }
  return 0;
}

/* libpod secrets=["id=X,src=<file in context>"]: podman-remote ships the
   secret inside the context; move it out so no COPY can put it in a layer. */
static int
move_secrets (const struct build_request *b, struct build_options *o, const char *job_dir, const char *ctx,
              ps_error **err)
{
  if (b->secrets_param.n == 0)
    return 0;
  cleanup_free char *sdir = xasprintf ("%s/secrets", job_dir);
  if (ps_mkdir_p (sdir, 0700, err) < 0)
    return -1;
  for (size_t i = 0; i < b->secrets_param.n; i++)
    {
      const char *spec = b->secrets_param.v[i];
      cleanup_free char *id = NULL, *src = NULL;
      cleanup_free char *copy = xstrdup (spec);
      char *save = NULL;
      for (char *f = strtok_r (copy, ",", &save); f; f = strtok_r (NULL, ",", &save))
        {
          if (ps_str_has_prefix (f, "id="))
            id = xstrdup (f + 3);
          else if (ps_str_has_prefix (f, "src="))
            src = xstrdup (f + 4);
        }
      if (id == NULL || src == NULL || *id == '\0' || strchr (id, '/') != NULL)
        return ps_error_set (err, 400, "failed to parse query parameter 'secrets': \"%s\": expected id=ID,src=FILE", spec);
      if (context_file (ctx, src, err) != 1)
        return ps_error_set (err, 400, "secret %s: file %s is not in the build context", id, src);
      cleanup_free char *from = xasprintf ("%s/%s", ctx, src);
      cleanup_free char *to = xasprintf ("%s/%s", sdir, id);
      if (rename (from, to) < 0)
        return ps_error_set_errno (err, 500, errno, "secret %s", id);
      ps_strv_pushf (&o->secrets, "id=%s,src=%s", id, to);
    }
  return 0;
}

/* The request body is the context: unpack it, find the Dockerfile, apply
   the ignore rules, take the secrets out. */
static int
unpack_context (const struct build_request *b, struct build_options *o, const struct dockerfile_env *env,
                const char *ctx, uint64_t *context_bytes, ps_error **err)
{
  struct ps_context_limits lim = { env->max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
  struct ps_context_stats stats = { 0 };
  if (context_extract_file (env->body_path, ctx, &lim, &stats, err) < 0)
    return -1; /* its messages name the build context already */
  *context_bytes = stats.bytes;
  if (resolve_dockerfiles (b, o, ctx, err) < 0)
    return -1;
  const char *df = o->dockerfiles.n > 0 && !is_url (o->dockerfiles.v[0]) ? o->dockerfiles.v[0] : NULL;
  if (context_apply_ignore (ctx, df, &b->excludes, err) < 0 || move_secrets (b, o, env->job_dir, ctx, err) < 0)
    return -1;
  free (o->context_dir);
  o->context_dir = xstrdup (ctx);
  return 0;
}

/* Key the build from the body before unpacking it (dockerfile_build_key_tar):
   1 when the unpack waits for the build to miss.  Not for what the key
   leaves out: libpod's secrets inside the context (moved out before the
   build), an excludes list, a Dockerfile by URL or several of them. */
static int
key_context_tar (const struct build_request *b, struct dockerfile_build *p, const struct dockerfile_env *env,
                 const char *ctx)
{
  if (b->secrets_param.n > 0 || b->excludes.n > 0 || b->dockerfile_param.n > 1
      || (b->dockerfile_param.n == 1 && is_url (b->dockerfile_param.v[0])))
    return 0;
  static const char *const order_compat[] = { "Dockerfile", "Containerfile" };
  static const char *const order_libpod[] = { "Containerfile", "Dockerfile" };
  const char *const *names = b->libpod ? order_libpod : order_compat;
  size_t n = 2;
  if (b->dockerfile_param.n == 1)
    {
      names = (const char *const *) b->dockerfile_param.v;
      n = 1;
    }
  p->opts.context_dir = xstrdup (ctx);
  int r = dockerfile_build_key_tar (p, env->body_path, names, n, env->max_context_bytes);
  if (r == 1)
    {
      struct stat st;
      p->context_bytes = stat (env->body_path, &st) == 0 ? (uint64_t) st.st_size : 0;
    }
  return r;
}

/* The cache imports of /build (`cachefrom`, a JSON list) in every form the
   docker CLI passes on: a plain image ref (`localhost/app:latest`), or
   BuildKit's CSV (`type=registry,ref=R`, as `docker build --cache-from`
   in BuildKit mode sends it).  Registry imports become buildah's
   --cache-from (the repository) plus the ref as named (the ARG-step
   index is found by it); what buildah cannot import (type=local on the
   client, inline, gha, s3) is a warning, and the build goes on without
   it, as BuildKit treats a cache import that fails. */
static void
normalize_cache_from (struct build_options *o, ps_strv *warnings)
{
  ps_strv raw = o->cache_from;
  o->cache_from = (ps_strv){ 0 };
  ps_strv_free (&o->cache_from_refs);
  for (size_t i = 0; i < raw.n; i++)
    {
      const char *v = raw.v[i];
      ps_strv pairs = { 0 };
      if (strchr (v, '=') != NULL)
        ps_csv_pairs (v, &pairs); /* BuildKit's CSV */
      else
        {
          ps_strv_push (&pairs, "ref");
          ps_strv_push (&pairs, v);
        }
      const char *type = ps_pairs_get (&pairs, "type");
      const char *ref = ps_pairs_get (&pairs, "ref");
      if (type == NULL)
        type = "registry";
      if (strcmp (type, "registry") != 0)
        {
          ps_strv_pushf (warnings, "--cache-from %s: cache type \"%s\" cannot be imported by podsolve's Dockerfile "
                                   "builder (registry caches can); building without it", v, type);
          ps_strv_free (&pairs);
          continue;
        }
      if (ref == NULL || *ref == '\0')
        {
          ps_strv_pushf (warnings, "--cache-from %s: no ref=; building without it", v);
          ps_strv_free (&pairs);
          continue;
        }
      cleanup_free char *repo = cache_registry_repository (ref);
      ps_strv_push (&o->cache_from, repo);
      ps_strv_push (&o->cache_from_refs, ref);
      ps_strv_free (&pairs);
    }
  ps_strv_free (&raw);
}

int
dockerfile_plan_new (struct build_request *b, const struct dockerfile_env *env, struct dockerfile_build **out,
                     ps_error **err)
{
  cleanup_free char *ctx = xasprintf ("%s/context", env->job_dir);
  if (ps_mkdir_p (ctx, 0700, err) < 0)
    return -1;
  struct dockerfile_build *p = xcalloc (1, sizeof *p);
  p->legacy = b->version != 2;
  p->state_dir = env->state_dir ? xstrdup (env->state_dir) : NULL;
  p->opts = b->opts;
  build_options_init (&b->opts); /* moved into the plan */
  struct build_options *o = &p->opts;
  normalize_cache_from (o, &p->warnings);
  if (b->use_session_context)
    {
      /* The sources come over the session, inside the job (their transfers
         are the first vertices of the build). */
      p->session = session_sources_new (b->session, env->state_dir, env->job_dir,
                                        b->dockerfile_param.n ? b->dockerfile_param.v[0] : NULL);
      p->session->output_type = b->output_type ? xstrdup (b->output_type) : NULL;
      p->session->max_context_bytes = env->max_context_bytes;
    }
  else if (o->remote == NULL)
    {
      if (key_context_tar (b, p, env, ctx) == 0
          && unpack_context (b, o, env, ctx, &p->context_bytes, err) < 0)
        {
          dockerfile_build_free (p);
          return -1;
        }
    }
  else
    {
      for (size_t i = 0; i < b->dockerfile_param.n; i++)
        ps_strv_push (&o->dockerfiles, b->dockerfile_param.v[i]);
    }
  if (p->context_tar == NULL)
    unlink (env->body_path);

  cleanup_free char *authfile = xasprintf ("%s/auth.json", env->job_dir);
  int have_auth = registry_auth_write (env->registry_config, env->registry_auth, authfile, err);
  if (have_auth < 0)
    {
      dockerfile_build_free (p);
      return -1;
    }
  if (have_auth > 0)
    o->authfile = xstrdup (authfile);

  if (p->context_tar == NULL)
    {
      const char *df = o->dockerfiles.n > 0 ? o->dockerfiles.v[0] : "Dockerfile";
      p->dockerfile_name = xstrdup (df);
      /* The digest of a Dockerfile not at hand (a URL, one coming over the
         session) is its name's until the bytes arrive. */
      char hex[65];
      cleanup_free char *dfpath = o->context_dir ? xasprintf ("%s/%s", o->context_dir, df) : NULL;
      if (dfpath == NULL || dockerfile_read (dfpath, NULL, NULL, hex, NULL) < 0)
        ps_sha256_hex (df, strlen (df), hex);
      p->definition_digest = xstrdup (hex);
    }
  /* What buildah cannot build is a 400 now, before anything runs (a
     Dockerfile coming over the session is checked once it is here). */
  if (p->session == NULL && dockerfile_build_check_dialect (p, err) < 0)
    {
      dockerfile_build_free (p);
      return -1;
    }
  *out = p;
  return 0;
}
