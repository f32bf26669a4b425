/* result_cache.c — reuse of finished session builds (see result_cache.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/result_cache.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/limits.h"
#include "common/process.h"
#include "common/log.h"
#include "solver/buildah.h"
#include "solver/cache_prune.h"
#include "solver/dockerfile/scan.h"

/* Bump when the key's material changes meaning. */
#define RESULT_CACHE_VERSION "podsolve-result-v1"
#define RESULT_CACHE_SHARED_VERSION "podsolve-shared-result-v1"

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

/* The digest of the regular file `name` in `dir` into hex[65]. */
static int
hash_file_content (int dir, const char *name, char hex[65])
{
  int fd = openat (dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -1;
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
  static __thread unsigned char buf[1 << 16];
  ssize_t n;
  while ((n = read (fd, buf, sizeof buf)) > 0)
    EVP_DigestUpdate (md, buf, (size_t) n);
  close (fd);
  unsigned char raw[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex (md, raw, &len);
  EVP_MD_CTX_free (md);
  for (unsigned i = 0; i < 32; i++)
    sprintf (hex + 2 * i, "%02x", raw[i]);
  return n < 0 ? -1 : 0;
}

/* Hash the tree under `dir` (entries sorted by name, symlinks not
   followed) into `md`: each entry's path, mode, owner, size and link
   target, and either its mtime (`by_content` false: what the DiffCopy sync
   trusts) or, for a regular file, the digest of its bytes (BuildKit's
   content checksums leave mtimes out too). */
static int
hash_tree (EVP_MD_CTX *md, int dirfd_, const char *rel, bool by_content)
{
  DIR *d = fdopendir (dirfd_);
  if (d == NULL)
    {
      close (dirfd_);
      return -1;
    }
  ps_strv names = { 0 };
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, ".."))
      ps_strv_push (&names, de->d_name);
  if (names.n)
    qsort (names.v, names.n, sizeof (char *), cmp_str);
  int ret = 0;
  for (size_t i = 0; i < names.n && ret == 0; i++)
    {
      struct stat st;
      if (fstatat (dirfd (d), names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          ret = -1;
          break;
        }
      char link[4096] = "";
      if (S_ISLNK (st.st_mode))
        {
          ssize_t n = readlinkat (dirfd (d), names.v[i], link, sizeof link - 1);
          link[n > 0 ? n : 0] = '\0';
        }
      char line[8192];
      int n;
      if (!by_content)
        n = snprintf (line, sizeof line, "%s/%s\n%o %u %u %lld %lld.%09ld %s\n", rel, names.v[i],
                      (unsigned) st.st_mode, (unsigned) st.st_uid, (unsigned) st.st_gid, (long long) st.st_size,
                      (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec, link);
      else
        {
          char content[65] = "";
          if (S_ISREG (st.st_mode) && hash_file_content (dirfd (d), names.v[i], content) < 0)
            {
              ret = -1;
              break;
            }
          n = snprintf (line, sizeof line, "%s/%s\n%o %u %u %lld %llu %s%s\n", rel, names.v[i],
                        (unsigned) st.st_mode, (unsigned) st.st_uid, (unsigned) st.st_gid, (long long) st.st_size,
                        (unsigned long long) st.st_rdev, link, content);
        }
      EVP_DigestUpdate (md, line, (size_t) n);
      if (S_ISDIR (st.st_mode))
        {
          int fd = openat (dirfd (d), names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          cleanup_free char *sub = xasprintf ("%s/%s", rel, names.v[i]);
          ret = fd < 0 ? -1 : hash_tree (md, fd, sub, by_content);
        }
    }
  ps_strv_free (&names);
  closedir (d);
  return ret;
}

/* The ID of image `name` as storage has it now, or NULL. */
static char *
image_id_of (const char *name)
{
  char *id = NULL;
  if (buildah_image_resolve (name, &id, NULL) < 0 || *id == '\0')
    {
      free (id);
      return NULL;
    }
  return id;
}

/* The FROM images as storage has them now; false when the key cannot be
   computed (an ARG in a FROM, or an image that is not in storage). */
static bool
hash_from_images (EVP_MD_CTX *md, const char *dockerfile)
{
  ps_strv images = { 0 };
  bool ok = dockerfile_from_images (dockerfile, &images);
  for (size_t i = 0; ok && i < images.n; i++)
    {
      cleanup_free char *id = image_id_of (images.v[i]);
      if (id == NULL)
        ok = false;
      else
        {
          EVP_DigestUpdate (md, "from\n", 5);
          EVP_DigestUpdate (md, id, strlen (id));
        }
    }
  ps_strv_free (&images);
  return ok;
}

static void
hash_strv (EVP_MD_CTX *md, const char *label, const ps_strv *v)
{
  EVP_DigestUpdate (md, label, strlen (label));
  for (size_t i = 0; i < v->n; i++)
    {
      EVP_DigestUpdate (md, "\n", 1);
      EVP_DigestUpdate (md, v->v[i], strlen (v->v[i]));
    }
  EVP_DigestUpdate (md, "\n\n", 2);
}

/* What decides a build's result besides its context, its FROM images and
   where its cache goes: the options that shape the image and the
   Dockerfile's bytes. */
static void
hash_build_options (EVP_MD_CTX *md, const struct build_options *o, const char *dockerfile_text)
{
  EVP_DigestUpdate (md, dockerfile_text, strlen (dockerfile_text));
  hash_strv (md, "build-args", &o->build_args);
  hash_strv (md, "labels", &o->labels);
  hash_strv (md, "platforms", &o->platforms);
  hash_strv (md, "add-hosts", &o->add_hosts);
  hash_strv (md, "ulimits", &o->ulimits);
  cleanup_free char *scalars = xasprintf ("target=%s network=%s format=%s squash=%d layers=%d shm=%lld "
                                          "mem=%lld swap=%lld cpu=%lld/%lld/%lld sets=%s/%s cg=%s iso=%s",
                                          o->target ? o->target : "", o->network ? o->network : "",
                                          o->format ? o->format : "", o->squash, o->layers, (long long) o->shm_size,
                                          (long long) o->memory, (long long) o->memswap, (long long) o->cpu_shares,
                                          (long long) o->cpu_period, (long long) o->cpu_quota,
                                          o->cpuset_cpus ? o->cpuset_cpus : "", o->cpuset_mems ? o->cpuset_mems : "",
                                          o->cgroup_parent ? o->cgroup_parent : "",
                                          o->isolation ? o->isolation : buildah_isolation ());
  EVP_DigestUpdate (md, scalars, strlen (scalars));
}

/* Builds whose result is not a function of what the key covers. */
static bool
reusable (const struct build_options *o)
{
  return !(o->nocache || o->pull == BUILD_PULL_ALWAYS || o->pull == BUILD_PULL_NEWER || o->context_dir == NULL
           || o->remote || o->secrets.n > 0 || o->ssh.n > 0 || o->build_contexts.n > 0);
}

static char *
finish_key (EVP_MD_CTX *md, bool ok)
{
  unsigned char raw[32];
  unsigned int n = 0;
  EVP_DigestFinal_ex (md, raw, &n);
  EVP_MD_CTX_free (md);
  if (!ok)
    return NULL;
  char *hex = xmalloc (65);
  for (unsigned i = 0; i < 32; i++)
    sprintf (hex + 2 * i, "%02x", raw[i]);
  return hex;
}

char *
result_cache_key (const struct dockerfile_build *b, const char *dockerfile_text)
{
  const struct build_options *o = &b->opts;
  if (!reusable (o))
    return NULL;
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
  EVP_DigestUpdate (md, RESULT_CACHE_VERSION "\n", strlen (RESULT_CACHE_VERSION) + 1);
  /* The context directory is the client's own cache (per session shared
     key and dir name), so a result is only reused for the same client
     context: two clients whose trees have equal names, sizes and mtimes
     but different bytes never share a result.  Within one client, equal
     size and mtime is exactly what the DiffCopy sync trusts too. */
  EVP_DigestUpdate (md, o->context_dir, strlen (o->context_dir) + 1);
  hash_build_options (md, o, dockerfile_text);
  hash_strv (md, "cache-from", &o->cache_from);
  bool ok = hash_from_images (md, dockerfile_text);
  int fd = open (o->context_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (ok && (fd < 0 || hash_tree (md, fd, ".", false) < 0))
    ok = false;
  else if (!ok && fd >= 0)
    close (fd);
  return finish_key (md, ok);
}

char *
result_cache_shared_key (const struct dockerfile_build *b, const char *dockerfile_text)
{
  const struct build_options *o = &b->opts;
  if (!reusable (o) || o->platforms.n > 1)
    return NULL;
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
  EVP_DigestUpdate (md, RESULT_CACHE_SHARED_VERSION "\n", strlen (RESULT_CACHE_SHARED_VERSION) + 1);
  hash_build_options (md, o, dockerfile_text);
  bool ok = hash_from_images (md, dockerfile_text);
  int fd = open (o->context_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (ok && (fd < 0 || hash_tree (md, fd, ".", true) < 0))
    ok = false;
  else if (!ok && fd >= 0)
    close (fd);
  return finish_key (md, ok);
}

static char *
record_path (const char *state_dir, const char *key)
{
  return xasprintf ("%s/results/%s.json", state_dir, key);
}

static bool
tag_image (const char *image_id, const ps_strv *tags)
{
  if (tags->n == 0)
    {
      cleanup_free char *id = NULL;
      return buildah_image_id (image_id, &id, NULL) == 0;
    }
  ps_strv argv = { 0 };
  ps_strv_push (&argv, "tag");
  ps_strv_push (&argv, image_id);
  for (size_t i = 0; i < tags->n; i++)
    ps_strv_push (&argv, tags->v[i]);
  int r = buildah_call ((const char *const *) argv.v, NULL, NULL);
  ps_strv_free (&argv);
  return r == 0;
}

int
result_cache_lookup (solver_job *job, const char *state_dir, const char *key, const struct dockerfile_build *b,
                     char **image_id)
{
  cleanup_free char *path = record_path (state_dir, key);
  cleanup_free char *text = NULL;
  if (ps_read_file (path, PS_MAX_RESULT_RECORD_BYTES, &text, NULL, NULL) < 0)
    return 0;
  cJSON *rec = cJSON_Parse (text);
  const cJSON *img = cJSON_GetObjectItemCaseSensitive (rec, "image");
  const cJSON *vertices = cJSON_GetObjectItemCaseSensitive (rec, "vertices");
  if (!cJSON_IsString (img) || !cJSON_IsArray (vertices) || !tag_image (img->valuestring, &b->opts.tags))
    {
      cJSON_Delete (rec);
      unlink (path); /* stale: the image is gone */
      return 0;
    }
  cache_record_touch (path); /* its last use, for POST /build/prune */
  int64_t now = ps_now_ns ();
  const cJSON *v;
  cJSON_ArrayForEach (v, vertices)
    {
      const cJSON *d = cJSON_GetObjectItemCaseSensitive (v, "digest");
      const cJSON *n = cJSON_GetObjectItemCaseSensitive (v, "name");
      const cJSON *in = cJSON_GetObjectItemCaseSensitive (v, "inputs");
      if (!cJSON_IsString (d) || !cJSON_IsString (n))
        continue;
      ps_strv inputs = { 0 };
      const cJSON *x;
      cJSON_ArrayForEach (x, in)
        if (cJSON_IsString (x))
          ps_strv_push (&inputs, x->valuestring);
      solver_job_emit_vertex (job, d->valuestring, n->valuestring, (const char *const *) inputs.v, now, now, true,
                              NULL, NULL);
      ps_strv_free (&inputs);
    }
  *image_id = xstrdup (img->valuestring);
  cJSON_Delete (rec);
  ps_info ("job %s: inputs unchanged since a previous build: reusing image %.12s", solver_job_id (job), *image_id);
  return 1;
}

void
result_cache_store (solver_job *job, const char *state_dir, const char *key, size_t first_event, const char *image_id)
{
  cJSON *rec = cJSON_CreateObject ();
  cJSON_AddStringToObject (rec, "image", image_id);
  cJSON *vertices = cJSON_AddArrayToObject (rec, "vertices");
  /* The last state of each vertex, in first-seen order. */
  bool done;
  const struct solver_event *ev;
  for (size_t i = first_event; (ev = solver_job_next (job, i, 0, &done)) != NULL; i++)
    {
      if (ev->kind != SOLVER_EV_VERTEX || ev->vertex == NULL)
        continue;
      bool seen = false;
      const cJSON *x;
      cJSON_ArrayForEach (x, vertices)
        seen |= strcmp (cJSON_GetObjectItemCaseSensitive (x, "digest")->valuestring, ev->vertex) == 0;
      if (seen)
        continue;
      cJSON *v = cJSON_CreateObject ();
      cJSON_AddStringToObject (v, "digest", ev->vertex);
      cJSON_AddStringToObject (v, "name", ev->name ? ev->name : "");
      cJSON *in = cJSON_AddArrayToObject (v, "inputs");
      for (char **p = ev->inputs; p && *p; p++)
        cJSON_AddItemToArray (in, cJSON_CreateString (*p));
      cJSON_AddItemToArray (vertices, v);
    }
  char *text = cJSON_PrintUnformatted (rec);
  cJSON_Delete (rec);
  cleanup_free char *dir = xasprintf ("%s/results", state_dir);
  cleanup_free char *path = record_path (state_dir, key);
  cleanup_free char *tmp = xasprintf ("%s.tmp%d", path, (int) getpid ());
  ps_error *err = NULL;
  if (ps_mkdir_p (dir, 0700, &err) == 0 && ps_write_file (tmp, text, strlen (text), 0600, &err) == 0
      && rename (tmp, path) < 0)
    ps_error_set_errno (&err, 500, errno, "rename %s", tmp);
  if (err)
    {
      ps_warn ("result cache: %s", err->msg);
      ps_error_free (err);
      unlink (tmp);
    }
  cJSON_free (text);
}

/* skopeo copy SRC containers-storage:...NAME: one process where `buildah
   pull` and `buildah tag` are two.  0, or -1 with *err. */
static int
copy_into_storage (const char *src, const char *name, const struct cache_registry_access *a, ps_error **err)
{
  ps_strv argv = { 0 };
  ps_strv_push (&argv, "skopeo");
  ps_strv_pushf (&argv, "--command-timeout=%ds", PS_CACHE_INSPECT_TIMEOUT_S);
  if (a->registries_conf)
    ps_strv_pushf (&argv, "--registries-conf=%s", a->registries_conf);
  ps_strv_push (&argv, "copy");
  ps_strv_push (&argv, "--quiet");
  if (a->authfile)
    ps_strv_pushf (&argv, "--src-authfile=%s", a->authfile);
  ps_strv_push (&argv, src);
  cleanup_free char *dst = buildah_storage_name_ref (name);
  ps_strv_push (&argv, dst);
  cleanup_free char *out = NULL, *errout = NULL;
  int status = -1;
  int r = ps_run_capture (argv.v, &out, &errout, &status, err);
  ps_strv_free (&argv);
  if (r == 0 && status != 0)
    r = ps_error_set (err, 500, "skopeo copy %s: exit status %d: %s", src, status, errout ? errout : "");
  return r;
}

int
result_cache_shared_pull (const char *repo, const char *key, const struct cache_registry_access *a,
                          const ps_strv *tags, char **image_id)
{
  cleanup_free char *src = xasprintf ("docker://%s:" RESULT_CACHE_SHARED_TAG "%s", repo, key);
  cleanup_free char *id = NULL;
  ps_error *err = NULL;
  int r;
  if (tags->n > 0)
    {
      /* Straight to the build's first name; its ID from the store's list. */
      r = copy_into_storage (src, tags->v[0], a, &err);
      if (r == 0)
        r = buildah_image_resolve (tags->v[0], &id, &err);
    }
  else
    {
      ps_strv argv = { 0 };
      ps_strv_push (&argv, "pull");
      ps_strv_push (&argv, "--quiet");
      cache_registry_access_argv (&argv, a);
      ps_strv_push (&argv, src);
      r = buildah_call_line ((const char *const *) argv.v, &id, &err);
      ps_strv_free (&argv);
    }
  if (r < 0 || id == NULL || strlen (id) != 64)
    {
      /* Absent (the usual miss), or unreadable: buildah's own per-step
         lookups say more when the build runs. */
      ps_debug ("cache %s: no whole-build result %.12s: %s", repo, key, err ? err->msg : "no image ID");
      ps_error_free (err);
      return 0;
    }
  ps_strv rest = { .v = tags->n > 1 ? tags->v + 1 : NULL, .n = tags->n > 1 ? tags->n - 1 : 0 };
  if (rest.n > 0 && !tag_image (id, &rest))
    {
      ps_warn ("cache %s: result %.12s pulled as %.12s but could not be tagged", repo, key, id);
      return 0;
    }
  *image_id = steal_pointer (&id);
  return 1;
}

int
result_cache_shared_push (const char *repo, const char *key, const char *image_id,
                          const struct cache_registry_access *a, ps_error **err)
{
  ps_strv argv = { 0 };
  ps_strv_push (&argv, "push");
  ps_strv_push (&argv, "--quiet");
  cache_registry_access_argv (&argv, a);
  ps_strv_push (&argv, image_id);
  ps_strv_pushf (&argv, "docker://%s:" RESULT_CACHE_SHARED_TAG "%s", repo, key);
  int r = buildah_call ((const char *const *) argv.v, NULL, err);
  ps_strv_free (&argv);
  return r < 0 ? ps_error_wrap (err, "cache export %s: the build's result", repo) : 0;
}
