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

#include "common/archive.h"
#include "common/limits.h"
#include "common/process.h"
#include "common/log.h"
#include "solver/buildah.h"
#include "solver/cache_prune.h"
#include "solver/context.h"
#include "solver/frontend_image.h"
#include "solver/dockerfile/parse.h"
#include "solver/dockerfile/scan.h"

/* Bump when the key's material changes meaning. */
#define RESULT_CACHE_VERSION "podsolve-result-v1"
#define RESULT_CACHE_SHARED_VERSION "podsolve-shared-result-v1"
#define RESULT_CACHE_TAR_VERSION "podsolve-tar-result-v1"
#define RESULT_CACHE_SHARED_TAR_VERSION "podsolve-shared-tar-result-v1"

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
   content checksums leave mtimes out too), of at most *budget bytes in
   all (-1 past it). */
static int
hash_tree (EVP_MD_CTX *md, int dirfd_, const char *rel, bool by_content, uint64_t *budget)
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
          if (S_ISREG (st.st_mode) && (uint64_t) st.st_size > *budget)
            {
              ret = -1;
              break;
            }
          if (S_ISREG (st.st_mode))
            *budget -= (uint64_t) st.st_size;
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
          ret = fd < 0 ? -1 : hash_tree (md, fd, sub, by_content, budget);
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
hash_from_images (EVP_MD_CTX *md, const char *dockerfile_text)
{
  ps_strv images = { 0 };
  bool ok = dockerfile_from_images (dockerfile_text, &images);
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

/* Every key's material before its context: the key's kind (`version`),
   the scope it is valid in (NULL: anywhere), the options that shape the
   image and the Dockerfile, where the cache comes from (local keys: a
   cache import can change what buildah reuses), and the FROM images as
   storage has them now.  *ok is false when a FROM image cannot be
   resolved. */
static EVP_MD_CTX *
key_begin (const char *version, const char *scope, const struct build_options *o, const char *dockerfile_text,
           bool with_cache_from, bool *ok)
{
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
  EVP_DigestUpdate (md, version, strlen (version));
  EVP_DigestUpdate (md, "\n", 1);
  if (scope)
    EVP_DigestUpdate (md, scope, strlen (scope) + 1);
  hash_build_options (md, o, dockerfile_text);
  if (with_cache_from)
    hash_strv (md, "cache-from", &o->cache_from);
  *ok = hash_from_images (md, dockerfile_text);
  return md;
}

/* The context directory's tree into `md` (hash_tree); false when it
   cannot be read. */
static bool
hash_context_dir (EVP_MD_CTX *md, const char *dir, bool by_content)
{
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  uint64_t budget = PS_MAX_RESULT_KEY_CONTENT_BYTES;
  return fd >= 0 && hash_tree (md, fd, ".", by_content, &budget) == 0;
}

char *
result_cache_key (const struct dockerfile_build *b, const char *dockerfile_text)
{
  const struct build_options *o = &b->opts;
  if (!reusable (o))
    return NULL;
  /* The context directory is the client's own cache (per session shared
     key and dir name), so a result is only reused for the same client
     context: two clients whose trees have equal names, sizes and mtimes
     but different bytes never share a result.  Within one client, equal
     size and mtime is exactly what the DiffCopy sync trusts too. */
  bool ok;
  EVP_MD_CTX *md = key_begin (RESULT_CACHE_VERSION, o->context_dir, o, dockerfile_text, true, &ok);
  return finish_key (md, ok && hash_context_dir (md, o->context_dir, false));
}

char *
result_cache_shared_key (const struct dockerfile_build *b, const char *dockerfile_text)
{
  const struct build_options *o = &b->opts;
  if (!reusable (o) || o->platforms.n > 1)
    return NULL;
  bool ok;
  EVP_MD_CTX *md = key_begin (RESULT_CACHE_SHARED_VERSION, NULL, o, dockerfile_text, false, &ok);
  return finish_key (md, ok && hash_context_dir (md, o->context_dir, true));
}

/* ---- keys of a context still in its tar ------------------------------------ */

struct tar_read
{
  ps_strv lines;                     /* one per entry (tar_entry_line) */
  const char *const *dockerfiles;    /* candidate names, in order */
  size_t n_dockerfiles;
  struct result_cache_tar *out;
  size_t found_rank;                 /* index of the candidate in out->text */
  uint64_t budget;                   /* content bytes still to be hashed */
  bool ambiguous;                    /* a candidate that is not a regular file */
};

/* An entry's material: clean name, type, permissions, size, symlink
   target and the digest of its bytes, each length-prefixed where it is
   free text.  Not the owner (the extraction does not restore it) nor the
   mtime (BuildKit's content checksums leave it out too). */
static int
tar_entry (void *ud, const char *name, struct archive *in, struct archive_entry *e)
{
  struct tar_read *t = ud;
  mode_t type = archive_entry_filetype (e);
  size_t rank = t->n_dockerfiles;
  for (size_t i = 0; i < t->n_dockerfiles; i++)
    if (strcmp (name, t->dockerfiles[i]) == 0)
      rank = i;
  if (rank < t->n_dockerfiles && type != AE_IFREG)
    t->ambiguous = true;
  /* Past the budget: no key (the context is unpacked as without one). */
  if (type == AE_IFREG && (uint64_t) archive_entry_size (e) > t->budget)
    return -1;
  if (type == AE_IFREG)
    t->budget -= (uint64_t) archive_entry_size (e);
  bool keep = type == AE_IFREG && rank < t->found_rank;
  ps_buf text = { 0 };
  char content[65] = "";
  if (type == AE_IFREG)
    {
      EVP_MD_CTX *md = EVP_MD_CTX_new ();
      EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
      int r;
      const void *buf;
      size_t size;
      la_int64_t offset;
      while ((r = archive_read_data_block (in, &buf, &size, &offset)) == ARCHIVE_OK || r == ARCHIVE_WARN)
        {
          EVP_DigestUpdate (md, buf, size);
          if (keep && text.len + size <= PS_MAX_DOCKERFILE_BYTES)
            ps_buf_append (&text, buf, size);
          else
            keep = false;
        }
      unsigned char raw[32];
      unsigned int n = 0;
      EVP_DigestFinal_ex (md, raw, &n);
      EVP_MD_CTX_free (md);
      if (r != ARCHIVE_EOF)
        {
          ps_buf_free (&text);
          return -1;
        }
      for (unsigned i = 0; i < 32; i++)
        sprintf (content + 2 * i, "%02x", raw[i]);
    }
  if (keep)
    {
      free (t->out->text);
      t->out->len = text.len;
      t->out->text = text.data ? ps_buf_steal (&text) : xstrdup ("");
      free (t->out->dockerfile);
      t->out->dockerfile = xstrdup (name);
      t->found_rank = rank;
    }
  ps_buf_free (&text);
  const char *link = "";
  if (type == AE_IFLNK)
    link = archive_entry_symlink (e) ? archive_entry_symlink (e) : archive_entry_symlink_utf8 (e);
  ps_strv_pushf (&t->lines, "%zu:%s %o %o %lld %zu:%s %s\n", strlen (name), name, (unsigned) type,
                 (unsigned) archive_entry_perm (e), (long long) (type == AE_IFREG ? archive_entry_size (e) : 0),
                 strlen (link), link, content);
  return 0;
}

int
result_cache_tar_read (const char *tar, const struct ps_context_limits *lim, const char *const *dockerfiles,
                       size_t n_dockerfiles, struct result_cache_tar *out)
{
  memset (out, 0, sizeof *out);
  int fd = open (tar, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  ps_strv names = { 0 };
  for (size_t i = 0; i < n_dockerfiles; i++)
    {
      const char *n = dockerfiles[i];
      while (ps_str_has_prefix (n, "./"))
        n += 2;
      ps_strv_push (&names, n);
    }
  struct tar_read t = { .dockerfiles = (const char *const *) names.v, .n_dockerfiles = names.n, .out = out,
                        .found_rank = names.n, .budget = PS_MAX_RESULT_KEY_CONTENT_BYTES };
  int r = context_tar_walk (fd, lim, tar_entry, &t);
  close (fd);
  ps_strv_free (&names);
  if (r == 0 && !t.ambiguous && out->text != NULL)
    {
      /* Entries in name order: the order the client's tar had is not part
         of what is built. */
      if (t.lines.n)
        qsort (t.lines.v, t.lines.n, sizeof (char *), cmp_str);
      EVP_MD_CTX *md = EVP_MD_CTX_new ();
      EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
      for (size_t i = 0; i < t.lines.n; i++)
        EVP_DigestUpdate (md, t.lines.v[i], strlen (t.lines.v[i]));
      cleanup_free char *hex = finish_key (md, true);
      memcpy (out->digest, hex, 65);
    }
  else
    {
      result_cache_tar_clear (out);
      r = -1;
    }
  ps_strv_free (&t.lines);
  return r;
}

void
result_cache_tar_clear (struct result_cache_tar *t)
{
  free (t->dockerfile);
  free (t->text);
  memset (t, 0, sizeof *t);
}

char *
result_cache_tar_key (const struct dockerfile_build *b, const struct result_cache_tar *t, bool shared)
{
  const struct build_options *o = &b->opts;
  /* Besides what the other keys refuse: builds without layers (the user
     asked for nothing to be kept), with the client's session (secrets and
     agents it serves are not in the key), for several platforms (a list
     of images, not one), and through a frontend image (its own rules). */
  if (!reusable (o) || !o->layers || b->client_session != NULL || o->platforms.n > 1)
    return NULL;
  const char *arg = NULL;
  for (size_t i = 0; i < o->build_args.n; i++)
    if (ps_str_has_prefix (o->build_args.v[i], "BUILDKIT_SYNTAX="))
      arg = o->build_args.v[i] + strlen ("BUILDKIT_SYNTAX=");
  cleanup_free char *directive = dockerfile_detect_syntax (t->text, t->len);
  cleanup_free char *frontend = b->legacy ? NULL : frontend_image_for_dockerfile (directive, arg, NULL);
  if (frontend != NULL)
    return NULL;
  bool ok;
  EVP_MD_CTX *md = key_begin (shared ? RESULT_CACHE_SHARED_TAR_VERSION : RESULT_CACHE_TAR_VERSION, NULL, o, t->text,
                              !shared, &ok);
  EVP_DigestUpdate (md, t->digest, strlen (t->digest));
  return finish_key (md, ok);
}

static char *
record_path (const char *state_dir, const char *key)
{
  return xasprintf ("%s/results/%s.json", state_dir, key);
}

bool
result_cache_has (const char *state_dir, const char *key)
{
  cleanup_free char *path = record_path (state_dir, key);
  return access (path, F_OK) == 0;
}

static bool
tag_image (const char *image_id, const ps_strv *tags)
{
  /* The names that do not name the image yet: none on a rebuild with the
     same tags, and then no buildah process at all (the store's list says
     the image is there). */
  ps_strv argv = { 0 };
  ps_strv_push (&argv, "tag");
  ps_strv_push (&argv, image_id);
  for (size_t i = 0; i < tags->n; i++)
    if (!buildah_image_named (tags->v[i], image_id))
      ps_strv_push (&argv, tags->v[i]);
  bool ok = argv.n > 2 ? buildah_call ((const char *const *) argv.v, NULL, NULL) == 0
                       : buildah_image_present (image_id);
  ps_strv_free (&argv);
  return ok;
}

/* The layer ID a builder line "--> 3f2a…" shows, or NULL. */
static const char *
layer_of (const cJSON *line)
{
  if (!cJSON_IsString (line) || !ps_str_has_prefix (line->valuestring, "--> "))
    return NULL;
  const char *id = line->valuestring + 4;
  return strspn (id, "0123456789abcdef") >= 11 ? id : NULL;
}

static void
emit_line (solver_job *job, const char *vertex, char *text)
{
  struct solver_event ev = { .kind = SOLVER_EV_TEXT };
  ev.vertex = xstrdup (vertex);
  ev.text = text;
  solver_job_emit (job, &ev);
}

/* The builder's lines of a reused vertex, as buildah prints them for a
   step it finds in its cache (the Podman-compatible /build stream is
   these lines): a step the recorded build ran shows its layer
   ("--> 3f2a…"); reused, buildah says "--> Using cache 3f2a…" first.  The
   last step's layer is the image COMMIT shows next (`commit`, the next
   vertex's lines when it is the export), as buildah says it.  Only STEP
   vertices (their `text`) get the line; FROM has no layer of its own. */
static void
replay_lines (solver_job *job, const char *vertex, const char *text, const cJSON *lines, const cJSON *next)
{
  bool step = text && strstr (text, "STEP ") && !strstr (text, ": FROM ");
  bool said = !step;
  const cJSON *l;
  cJSON_ArrayForEach (l, lines)
    {
      if (!cJSON_IsString (l))
        continue;
      const char *id = layer_of (l);
      if (ps_str_has_prefix (l->valuestring, "--> Using cache "))
        said = true;
      else if (!said && id)
        {
          emit_line (job, vertex, xasprintf ("--> Using cache %s", id));
          said = true;
        }
      emit_line (job, vertex, xstrdup (l->valuestring));
    }
  const cJSON *nt = cJSON_GetObjectItemCaseSensitive (next, "text");
  if (said || !cJSON_IsString (nt) || !ps_str_has_prefix (nt->valuestring, "COMMIT"))
    return;
  cJSON_ArrayForEach (l, cJSON_GetObjectItemCaseSensitive (next, "lines"))
    if (layer_of (l))
      {
        emit_line (job, vertex, xasprintf ("--> Using cache %s", layer_of (l)));
        return;
      }
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
      const cJSON *t = cJSON_GetObjectItemCaseSensitive (v, "text");
      if (!cJSON_IsString (d) || !cJSON_IsString (n))
        continue;
      ps_strv inputs = { 0 };
      const cJSON *x;
      cJSON_ArrayForEach (x, in)
        if (cJSON_IsString (x))
          ps_strv_push (&inputs, x->valuestring);
      solver_job_emit_vertex (job, d->valuestring, n->valuestring, (const char *const *) inputs.v, now, now, true,
                              NULL, cJSON_IsString (t) ? t->valuestring : NULL);
      ps_strv_free (&inputs);
      replay_lines (job, d->valuestring, cJSON_IsString (t) ? t->valuestring : NULL,
                    cJSON_GetObjectItemCaseSensitive (v, "lines"), v->next);
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
      if ((ev->kind != SOLVER_EV_VERTEX && ev->kind != SOLVER_EV_TEXT) || ev->vertex == NULL)
        continue;
      cJSON *seen = NULL, *x;
      cJSON_ArrayForEach (x, vertices)
        if (strcmp (cJSON_GetObjectItemCaseSensitive (x, "digest")->valuestring, ev->vertex) == 0)
          seen = x;
      if (ev->kind == SOLVER_EV_TEXT)
        {
          /* The builder's lines for that vertex (not a RUN's output: its
             logs), for the Podman-compatible stream of a replay. */
          if (seen && ev->text)
            cJSON_AddItemToArray (cJSON_GetObjectItemCaseSensitive (seen, "lines"), cJSON_CreateString (ev->text));
          continue;
        }
      if (seen)
        {
          if (ev->text && !cJSON_HasObjectItem (seen, "text"))
            cJSON_AddStringToObject (seen, "text", ev->text);
          continue;
        }
      cJSON *v = cJSON_CreateObject ();
      cJSON_AddStringToObject (v, "digest", ev->vertex);
      cJSON_AddStringToObject (v, "name", ev->name ? ev->name : "");
      if (ev->text)
        cJSON_AddStringToObject (v, "text", ev->text);
      cJSON *in = cJSON_AddArrayToObject (v, "inputs");
      for (char **p = ev->inputs; p && *p; p++)
        cJSON_AddItemToArray (in, cJSON_CreateString (*p));
      cJSON_AddArrayToObject (v, "lines");
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
  cache_registry_skopeo_argv (&argv, "copy", a);
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
