/* cache_prune.c — podsolve's build cache: its records, and pruning them
 * (see cache_prune.h for what the cache holds and how entries are sized). */
#define _GNU_SOURCE
#include "solver/cache_prune.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "solver/buildah.h"

/* How often a prune waiting for running builds (or another prune) looks
   again, and asks whether its client is still there. */

/* ---- records ------------------------------------------------------------------ */

void
cache_record_touch (const char *path)
{
  /* NULL times = now; a record that cannot be touched only ages early. */
  utimensat (AT_FDCWD, path, NULL, 0);
}

char *
cache_record_read (const char *path)
{
  char *id = NULL;
  if (ps_read_file (path, 256, &id, NULL, NULL) < 0)
    return NULL;
  id[strcspn (id, "\n")] = '\0';
  if (*id == '\0' || !buildah_image_present (id))
    {
      free (id);
      return NULL;
    }
  cache_record_touch (path);
  return id;
}

void
cache_record_write (const char *path, const char *image_id)
{
  cleanup_free char *dir = xstrdup (path);
  char *slash = strrchr (dir, '/');
  if (slash)
    *slash = '\0';
  char rnd[17];
  ps_random_hex (rnd, 8); /* jobs are threads of one process: the pid is not unique */
  cleanup_free char *tmp = xasprintf ("%s.tmp-%s", path, rnd);
  cleanup_error ps_error *e = NULL;
  if (ps_mkdir_p (dir, 0700, &e) < 0 || ps_write_file (tmp, image_id, strlen (image_id), 0600, &e) < 0)
    {
      ps_warn ("cache record %s: %s", path, e->msg);
      return;
    }
  if (rename (tmp, path) < 0)
    {
      ps_warn ("cache record %s: rename: %s", path, strerror (errno));
      unlink (tmp);
    }
}

/* ---- options ------------------------------------------------------------------- */

void
cache_prune_opts_free (struct cache_prune_opts *o)
{
  ps_strv_free (&o->ids);
  ps_strv_free (&o->types);
}

int
cache_prune_parse_duration (const char *s, int64_t *ns, ps_error **err)
{
  static const struct
  {
    const char *name;
    double ns;
  } units[] = { { "ns", 1 }, { "us", 1e3 }, { "\xc2\xb5s", 1e3 }, { "\xce\xbcs", 1e3 }, { "ms", 1e6 },
                { "s", 1e9 },  { "m", 60e9 }, { "h", 3600e9 } };
  const char *p = s;
  double total = 0;
  if (strcmp (s, "0") == 0)
    {
      *ns = 0;
      return 0;
    }
  if (*p == '\0')
    goto bad;
  while (*p)
    {
      /* One "<number><unit>" group: digits, an optional fraction. */
      const char *start = p;
      while (*p >= '0' && *p <= '9')
        p++;
      if (*p == '.')
        {
          p++;
          while (*p >= '0' && *p <= '9')
            p++;
        }
      if (p == start || (p == start + 1 && *start == '.'))
        goto bad;
      char num[32];
      if ((size_t) (p - start) >= sizeof num)
        goto bad;
      memcpy (num, start, (size_t) (p - start));
      num[p - start] = '\0';
      double value = strtod (num, NULL);
      size_t best = 0;
      double mult = 0;
      for (size_t i = 0; i < ARRAY_SIZE (units); i++)
        {
          size_t n = strlen (units[i].name);
          /* "ms" must win over "m": take the longest unit that matches. */
          if (strncmp (p, units[i].name, n) == 0 && n > best)
            {
              best = n;
              mult = units[i].ns;
            }
        }
      if (best == 0)
        goto bad;
      p += best;
      total += value * mult;
      if (total > 9.2e18)
        goto bad;
    }
  *ns = (int64_t) (total + 0.5);
  return 0;
bad:
  return ps_error_set (err, 400, "\"%s\" is not a duration (e.g. \"24h\", \"1h30m\", \"90s\")", s);
}

/* Values of one filter: ["a","b"] or {"a":true,"b":true}. */
static int
filter_values (const cJSON *v, const char *key, ps_strv *out, ps_error **err)
{
  const cJSON *x;
  if (cJSON_IsArray (v))
    {
      cJSON_ArrayForEach (x, v)
        {
          if (!cJSON_IsString (x))
            return ps_error_set (err, 400, "filters.%s: values must be strings", key);
          ps_strv_push (out, x->valuestring);
        }
      return 0;
    }
  if (cJSON_IsObject (v))
    {
      cJSON_ArrayForEach (x, v)
        {
          if (!cJSON_IsBool (x))
            return ps_error_set (err, 400, "filters.%s: {\"value\": true} maps need boolean values", key);
          if (cJSON_IsTrue (x))
            ps_strv_push (out, x->string);
        }
      return 0;
    }
  return ps_error_set (err, 400, "filters.%s: expected a list of strings", key);
}

static const char *const known_types[] = { "llb.result",         "build.result",   "exec.cachemount", "exec.snapshot",
                                           "source.local",       "source.http",    "export.layout",
                                           "image.intermediate", "image.dangling" };

int
cache_prune_parse_filters (const char *json, struct cache_prune_opts *o, ps_error **err)
{
  if (json == NULL || *json == '\0')
    return 0;
  cJSON *root = cJSON_Parse (json);
  if (root == NULL || !cJSON_IsObject (root))
    {
      cJSON_Delete (root);
      return ps_error_set (err, 400, "filters: not a JSON object (e.g. {\"until\":[\"24h\"]})");
    }
  int ret = 0;
  const char *until_key = NULL;
  const cJSON *f;
  cJSON_ArrayForEach (f, root)
    {
      const char *key = f->string;
      ps_strv vals = { 0 };
      if (filter_values (f, key, &vals, err) < 0)
        ret = -1;
      else if (strcmp (key, "until") == 0 || strcmp (key, "unused-for") == 0)
        {
          /* "unused-for" is Docker's older name for "until". */
          if (until_key)
            ret = ps_error_set (err, 400, "filters: \"%s\" and \"%s\" cannot be combined", until_key, key);
          else if (vals.n != 1)
            ret = ps_error_set (err, 400, "filters.%s: expected exactly one duration", key);
          else if (cache_prune_parse_duration (vals.v[0], &o->keep_duration_ns, err) < 0)
            ret = ps_error_wrap (err, "filters.%s: expects a duration", key);
          until_key = key;
        }
      else if (strcmp (key, "id") == 0)
        for (size_t i = 0; i < vals.n; i++)
          ps_strv_push (&o->ids, vals.v[i]);
      else if (strcmp (key, "type") == 0)
        for (size_t i = 0; i < vals.n && ret == 0; i++)
          {
            bool known = false;
            for (size_t t = 0; t < ARRAY_SIZE (known_types); t++)
              known |= strcmp (vals.v[i], known_types[t]) == 0;
            if (!known)
              ret = ps_error_set (err, 400, "filters.type: unknown cache type \"%s\" (known: llb.result, "
                                            "build.result, exec.cachemount, exec.snapshot, source.local, "
                                            "source.http, export.layout, image.intermediate, "
                                            "image.dangling)", vals.v[i]);
            else
              ps_strv_push (&o->types, vals.v[i]);
          }
      else
        ret = ps_error_set (err, 400, "filters: unknown filter \"%s\" (supported: until, unused-for, id, type)",
                            key);
      ps_strv_free (&vals);
      if (ret < 0)
        break;
    }
  cJSON_Delete (root);
  return ret;
}

/* ---- what is in the cache ------------------------------------------------------- */

struct image
{
  char *id;           /* 64 hex */
  bool tagged;
  int64_t created_ns;
  char **chains;      /* chain ID of each layer, bottom first: layers are equal when these are */
  uint64_t *sizes;    /* each layer's size as its stored manifest says */
  size_t n_layers;
  uint64_t own;       /* its top layer's bytes when no tagged image holds that layer */
  bool kept_by_record; /* named by a record that stays */
  bool remove;
  bool removed;
  size_t owner;       /* the entry whose removal removes it */
};

struct entry
{
  char *id;
  const char *type;
  char *path;         /* record file or directory; NULL for a bare image */
  bool is_dir;
  struct image *image; /* the image it names or is; NULL when none (or gone) */
  int64_t last_used_ns;
  int64_t created_ns;
  uint64_t est;       /* bytes it holds, for the size budget */
  uint64_t freed;     /* bytes its removal freed */
  bool selected;
  bool deleted;
};

struct cache
{
  struct image *images;
  size_t n_images;
  struct entry *entries;
  size_t n_entries;
};

static void
cache_free (struct cache *c)
{
  for (size_t i = 0; i < c->n_images; i++)
    {
      free (c->images[i].id);
      for (size_t l = 0; l < c->images[i].n_layers; l++)
        free (c->images[i].chains[l]);
      free (c->images[i].chains);
      free (c->images[i].sizes);
    }
  free (c->images);
  for (size_t i = 0; i < c->n_entries; i++)
    {
      free (c->entries[i].id);
      free (c->entries[i].path);
    }
  free (c->entries);
}

static struct entry *
add_entry (struct cache *c, const char *id, const char *type, const char *path, bool is_dir, int64_t last_used)
{
  c->entries = xrealloc (c->entries, (c->n_entries + 1) * sizeof *c->entries);
  struct entry *e = &c->entries[c->n_entries++];
  memset (e, 0, sizeof *e);
  e->id = xstrdup (id);
  e->type = type;
  e->path = path ? xstrdup (path) : NULL;
  e->is_dir = is_dir;
  e->last_used_ns = last_used;
  e->created_ns = last_used;
  return e;
}

static struct image *
find_image (struct cache *c, const char *id)
{
  if (ps_str_has_prefix (id, "sha256:"))
    id += 7;
  for (size_t i = 0; i < c->n_images; i++)
    if (strcmp (c->images[i].id, id) == 0)
      return &c->images[i];
  return NULL;
}

/* Layers of one image from `buildah inspect`: OCIv1.rootfs.diff_ids
   (identity) and the stored manifest's layer sizes (uncompressed for
   what buildah committed; for a pulled image, the registry's compressed
   sizes — those images are tagged and never removed, so only their
   identity matters here). */
static int
read_layers (struct image *im, ps_error **err)
{
  const char *args[] = { "inspect", "--type=image", im->id, NULL };
  cleanup_free char *out = NULL;
  if (buildah_call (args, &out, err) < 0)
    return -1;
  cJSON *root = cJSON_Parse (out);
  const cJSON *oci = cJSON_GetObjectItemCaseSensitive (root, "OCIv1");
  const cJSON *rootfs = cJSON_GetObjectItemCaseSensitive (oci, "rootfs");
  const cJSON *diffs = cJSON_GetObjectItemCaseSensitive (rootfs, "diff_ids");
  const cJSON *mtext = cJSON_GetObjectItemCaseSensitive (root, "Manifest");
  cJSON *manifest = cJSON_IsString (mtext) ? cJSON_Parse (mtext->valuestring) : NULL;
  const cJSON *mlayers = cJSON_GetObjectItemCaseSensitive (manifest, "layers");
  int n = cJSON_GetArraySize (diffs);
  bool sizes_match = cJSON_GetArraySize (mlayers) == n;
  im->chains = xcalloc ((size_t) n + 1, sizeof *im->chains);
  im->sizes = xcalloc ((size_t) n + 1, sizeof *im->sizes);
  char chain[65] = "";
  for (int i = 0; i < n; i++)
    {
      const cJSON *d = cJSON_GetArrayItem (diffs, i);
      cleanup_free char *material = xasprintf ("%s %s", chain, cJSON_IsString (d) ? d->valuestring : "?");
      ps_sha256_hex (material, strlen (material), chain);
      im->chains[i] = xstrdup (chain);
      const cJSON *sz = sizes_match ? cJSON_GetObjectItemCaseSensitive (cJSON_GetArrayItem (mlayers, i), "size")
                                    : NULL;
      im->sizes[i] = cJSON_IsNumber (sz) && sz->valuedouble > 0 ? (uint64_t) sz->valuedouble : 0;
    }
  im->n_layers = (size_t) n;
  cJSON_Delete (manifest);
  cJSON_Delete (root);
  return 0;
}

static int
list_images (struct cache *c, ps_error **err)
{
  const char *args[] = { "images", "--all", "--json", "--no-trunc", NULL };
  cleanup_free char *out = NULL;
  if (buildah_call (args, &out, err) < 0)
    return ps_error_wrap (err, "list images");
  cJSON *arr = cJSON_Parse (out);
  if (arr == NULL || (!cJSON_IsArray (arr) && !cJSON_IsNull (arr)))
    {
      cJSON_Delete (arr);
      return ps_error_set (err, 500, "list images: buildah images --json printed no JSON list");
    }
  size_t n = (size_t) cJSON_GetArraySize (arr);
  c->images = xcalloc (n + 1, sizeof *c->images);
  const cJSON *x;
  cJSON_ArrayForEach (x, arr)
    {
      const cJSON *id = cJSON_GetObjectItemCaseSensitive (x, "id");
      const cJSON *names = cJSON_GetObjectItemCaseSensitive (x, "names");
      const cJSON *created = cJSON_GetObjectItemCaseSensitive (x, "created");
      if (!cJSON_IsString (id))
        continue;
      struct image *im = &c->images[c->n_images++];
      im->id = xstrdup (ps_str_has_prefix (id->valuestring, "sha256:") ? id->valuestring + 7 : id->valuestring);
      im->tagged = cJSON_GetArraySize (names) > 0;
      im->created_ns = cJSON_IsNumber (created) ? (int64_t) created->valuedouble * 1000000000LL : 0;
    }
  cJSON_Delete (arr);
  for (size_t i = 0; i < c->n_images; i++)
    if (read_layers (&c->images[i], err) < 0)
      {
        /* Removed by someone else since the listing: it holds nothing. */
        if (buildah_image_present (c->images[i].id))
          return ps_error_wrap (err, "image %.12s", c->images[i].id);
        ps_error_free (*err);
        *err = NULL;
      }

  /* Own bytes: the top layer, when no tagged image holds it and no image
     listed earlier already counted it (images of metadata-only steps share
     their parent's top layer). */
  for (size_t i = 0; i < c->n_images; i++)
    {
      struct image *im = &c->images[i];
      if (im->n_layers == 0)
        continue;
      const char *top = im->chains[im->n_layers - 1];
      bool counted = false;
      for (size_t j = 0; j < c->n_images && !counted; j++)
        {
          const struct image *o = &c->images[j];
          if (j == i || o->n_layers < im->n_layers || strcmp (o->chains[im->n_layers - 1], top))
            continue;
          counted = o->tagged || (j < i && o->n_layers == im->n_layers);
        }
      im->own = counted ? 0 : im->sizes[im->n_layers - 1];
    }
  return 0;
}

/* An untagged image whose layers another image starts with (buildah's
   layer cache), as opposed to a final image nobody tagged. */
static bool
is_intermediate (const struct cache *c, const struct image *im)
{
  if (im->n_layers == 0)
    return false;
  const char *top = im->chains[im->n_layers - 1];
  for (size_t j = 0; j < c->n_images; j++)
    {
      const struct image *o = &c->images[j];
      if (o == im || o->n_layers < im->n_layers || strcmp (o->chains[im->n_layers - 1], top))
        continue;
      if (o->n_layers > im->n_layers || o->created_ns > im->created_ns)
        return true;
    }
  return false;
}

/* Allocated bytes of a tree (the directory itself included), symlinks not
   followed. */
static uint64_t
tree_bytes (int dfd)
{
  uint64_t total = 0;
  struct stat st;
  if (fstat (dfd, &st) == 0)
    total += (uint64_t) st.st_blocks * 512;
  DIR *d = fdopendir (dfd);
  if (d == NULL)
    {
      close (dfd);
      return total;
    }
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (fstatat (dirfd (d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        continue;
      if (S_ISDIR (st.st_mode))
        {
          int sub = openat (dirfd (d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub >= 0)
            total += tree_bytes (sub);
        }
      else
        total += (uint64_t) st.st_blocks * 512;
    }
  closedir (d);
  return total;
}

static uint64_t
path_bytes (const char *path, bool is_dir)
{
  if (is_dir)
    {
      int fd = open (path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      return fd < 0 ? 0 : tree_bytes (fd);
    }
  struct stat st;
  return lstat (path, &st) == 0 ? (uint64_t) st.st_blocks * 512 : 0;
}

static int64_t
mtime_ns (const struct stat *st)
{
  return (int64_t) st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

/* When `path` was made (its birth time where the file system keeps one),
   else `fallback`. */
static int64_t
birth_ns (const char *path, int64_t fallback)
{
  struct statx stx;
  if (statx (AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_BTIME, &stx) == 0 && (stx.stx_mask & STATX_BTIME))
    return (int64_t) stx.stx_btime.tv_sec * 1000000000LL + stx.stx_btime.tv_nsec;
  return fallback;
}

/* Every entry of `dir` (a record file, or a directory when `dirs`), with
   `suffix` cut from the id; temporary and lock files are skipped. */
static void
scan_dir (struct cache *c, const char *dir, const char *type, bool dirs, const char *suffix)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      const char *name = de->d_name;
      if (name[0] == '.' || strstr (name, ".tmp") || ps_str_has_suffix (name, ".lock"))
        continue;
      if (suffix && !ps_str_has_suffix (name, suffix))
        continue;
      cleanup_free char *path = xasprintf ("%s/%s", dir, name);
      struct stat st;
      if (lstat (path, &st) < 0 || (dirs ? !S_ISDIR (st.st_mode) : !S_ISREG (st.st_mode)))
        continue;
      cleanup_free char *id = xstrndup (name, strlen (name) - (suffix ? strlen (suffix) : 0));
      struct entry *e = add_entry (c, id, type, path, dirs, mtime_ns (&st));
      e->created_ns = birth_ns (path, e->last_used_ns);
      e->est = path_bytes (path, dirs);
      if (dirs && strcmp (type, "exec.snapshot") == 0)
        {
          /* The image a snapshot was made into goes with it, as a
             record's image does. */
          cleanup_free char *ipath = xasprintf ("%s/image", path), *made = NULL;
          if (ps_read_file (ipath, 256, &made, NULL, NULL) == 0)
            {
              made[strcspn (made, "\n")] = '\0';
              e->image = find_image (c, made);
            }
        }
      if (dirs)
        continue;
      /* The image the record names: a bare id (llb.result) or the "image"
         of a JSON record (build.result). */
      cleanup_free char *text = NULL;
      if (ps_read_file (path, PS_MAX_RESULT_RECORD_BYTES, &text, NULL, NULL) < 0)
        continue;
      cleanup_free char *image_id = NULL;
      if (suffix == NULL)
        image_id = xstrndup (text, strcspn (text, "\n"));
      else
        {
          cJSON *rec = cJSON_Parse (text);
          const cJSON *img = cJSON_GetObjectItemCaseSensitive (rec, "image");
          if (cJSON_IsString (img))
            image_id = xstrdup (img->valuestring);
          cJSON_Delete (rec);
        }
      if (image_id)
        e->image = find_image (c, image_id);
    }
  closedir (d);
}

static int
gather (struct cache *c, const char *state_dir, ps_error **err)
{
  if (list_images (c, err) < 0)
    return -1;
  cleanup_free char *llb = xasprintf ("%s/llb-results", state_dir);
  cleanup_free char *results = xasprintf ("%s/results", state_dir);
  cleanup_free char *mounts = xasprintf ("%s/llb-cache-mounts", state_dir);
  cleanup_free char *contexts = xasprintf ("%s/contexts", state_dir);
  scan_dir (c, llb, "llb.result", false, NULL);
  scan_dir (c, results, "build.result", false, ".json");
  scan_dir (c, mounts, "exec.cachemount", true, NULL);
  cleanup_free char *snaps = xasprintf ("%s/" CACHE_LLB_SNAPSHOTS, state_dir);
  scan_dir (c, snaps, "exec.snapshot", true, NULL);
  scan_dir (c, contexts, "source.local", true, NULL);
  cleanup_free char *layouts = xasprintf ("%s/" CACHE_EXPORT_LAYOUTS, state_dir);
  scan_dir (c, layouts, "export.layout", true, NULL);
  cleanup_free char *http = xasprintf ("%s/" CACHE_HTTP_RECORDS, state_dir);
  scan_dir (c, http, "source.http", false, ".json");

  /* A record's image bytes count once, for the record used last. */
  for (size_t i = 0; i < c->n_images; i++)
    {
      struct image *im = &c->images[i];
      struct entry *newest = NULL;
      for (size_t k = 0; k < c->n_entries; k++)
        if (c->entries[k].image == im && (newest == NULL || c->entries[k].last_used_ns > newest->last_used_ns))
          newest = &c->entries[k];
      if (newest)
        {
          if (!im->tagged)
            newest->est += im->own;
          continue;
        }
      if (im->tagged)
        continue;
      /* An untagged image no record names. */
      struct entry *e = add_entry (c, im->id, is_intermediate (c, im) ? "image.intermediate" : "image.dangling",
                                   NULL, false, im->created_ns);
      e->image = im;
      e->est = im->own;
    }
  return 0;
}

/* ---- choosing ----------------------------------------------------------------- */

static bool
wanted (const struct entry *e, const struct cache_prune_opts *o, int64_t now)
{
  if (!o->all && (strcmp (e->type, "source.local") == 0 || strcmp (e->type, "source.http") == 0
                  || strcmp (e->type, "image.dangling") == 0))
    return false;
  if (o->types.n)
    {
      bool match = false;
      for (size_t i = 0; i < o->types.n; i++)
        match |= strcmp (o->types.v[i], e->type) == 0;
      if (!match)
        return false;
    }
  if (o->ids.n)
    {
      bool match = false;
      for (size_t i = 0; i < o->ids.n; i++)
        match |= ps_str_has_prefix (e->id, o->ids.v[i]);
      if (!match)
        return false;
    }
  if (o->keep_duration_ns && e->last_used_ns >= now - o->keep_duration_ns)
    return false;
  if (o->select)
    {
      struct cache_prune_entry pe = { .id = e->id, .type = e->type, .size = e->est,
                                      .last_used_ns = e->last_used_ns, .created_ns = e->created_ns };
      return o->select (&pe, o->select_data);
    }
  return true;
}

static int
cmp_oldest_first (const void *a, const void *b)
{
  const struct entry *x = *(const struct entry *const *) a, *y = *(const struct entry *const *) b;
  return x->last_used_ns < y->last_used_ns ? -1 : x->last_used_ns > y->last_used_ns;
}

/* Candidates go oldest first while the cache is over the budget and
   above the reserve. */
static void
choose (struct cache *c, const struct cache_prune_opts *o)
{
  int64_t now = ps_now_ns ();
  uint64_t total = 0;
  struct entry **cand = xcalloc (c->n_entries + 1, sizeof *cand);
  size_t n = 0;
  for (size_t i = 0; i < c->n_entries; i++)
    {
      total += c->entries[i].est;
      if (wanted (&c->entries[i], o, now))
        cand[n++] = &c->entries[i];
    }
  qsort (cand, n, sizeof *cand, cmp_oldest_first);
  for (size_t i = 0; i < n; i++)
    {
      if (o->max_used_bytes && total <= o->max_used_bytes)
        break;
      if (o->reserved_bytes && total < o->reserved_bytes + cand[i]->est)
        break;
      cand[i]->selected = true;
      total -= cand[i]->est;
    }
  free (cand);
}

/* ---- removing ------------------------------------------------------------------ */

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(const char *const *) a, *(const char *const *) b);
}

struct freed_layer
{
  const char *chain;
  uint64_t size;
  size_t owner;
};

static int
cmp_freed (const void *a, const void *b)
{
  return strcmp (((const struct freed_layer *) a)->chain, ((const struct freed_layer *) b)->chain);
}

/* Bytes of the layers that removed images held and no remaining image
   holds, each counted once, for the entry that removed the image. */
static void
count_freed_layers (struct cache *c)
{
  ps_strv left = { 0 };
  size_t n_freed = 0;
  for (size_t i = 0; i < c->n_images; i++)
    n_freed += c->images[i].removed ? c->images[i].n_layers : 0;
  struct freed_layer *freed = xcalloc (n_freed + 1, sizeof *freed);
  n_freed = 0;
  for (size_t i = 0; i < c->n_images; i++)
    for (size_t l = 0; l < c->images[i].n_layers; l++)
      if (c->images[i].removed)
        freed[n_freed++] = (struct freed_layer){ c->images[i].chains[l], c->images[i].sizes[l], c->images[i].owner };
      else
        ps_strv_push (&left, c->images[i].chains[l]);
  if (left.n)
    qsort (left.v, left.n, sizeof (char *), cmp_str);
  qsort (freed, n_freed, sizeof *freed, cmp_freed);
  for (size_t i = 0; i < n_freed; i++)
    {
      if (i > 0 && strcmp (freed[i].chain, freed[i - 1].chain) == 0)
        continue;
      if (left.n && bsearch (&freed[i].chain, left.v, left.n, sizeof (char *), cmp_str))
        continue;
      c->entries[freed[i].owner].freed += freed[i].size;
    }
  free (freed);
  ps_strv_free (&left);
}

static void
remove_selected (struct cache *c, const char *state_dir, const struct cache_prune_opts *o)
{
  /* Records and directories first: once a record is gone, no build can
     take its image for a cache hit. */
  for (size_t i = 0; i < c->n_entries; i++)
    {
      struct entry *e = &c->entries[i];
      if (!e->selected || e->path == NULL)
        continue;
      uint64_t bytes = path_bytes (e->path, e->is_dir);
      ps_error *err = NULL;
      if (e->is_dir ? ps_rm_rf (e->path, &err) < 0 : (unlink (e->path) < 0 && errno != ENOENT))
        {
          ps_warn ("cache prune: cannot remove %s: %s", e->path, err ? err->msg : strerror (errno));
          ps_error_free (err);
          continue;
        }
      if (e->is_dir)
        {
          /* Context caches and locked/private cache mounts have their
             flock file beside them; no build holds it now. */
          cleanup_free char *lock = xasprintf ("%s.lock", e->path);
          unlink (lock);
        }
      e->deleted = true;
      e->freed = bytes;
    }

  /* Images: those of removed records (a build.result's image is a final
     build image: only with `all`) and untagged images chosen themselves;
     never one a kept record still names, never a tagged one. */
  for (size_t i = 0; i < c->n_entries; i++)
    {
      const struct entry *e = &c->entries[i];
      if (e->image && e->path && !e->deleted)
        e->image->kept_by_record = true;
    }
  for (size_t i = 0; i < c->n_entries; i++)
    {
      struct entry *e = &c->entries[i];
      struct image *im = e->image;
      if (!e->selected || im == NULL || im->tagged || im->kept_by_record || im->remove)
        continue;
      if (e->path && !e->deleted)
        continue;
      if (strcmp (e->type, "build.result") == 0 && !o->all)
        continue;
      im->remove = true;
      im->owner = i;
    }
  for (size_t i = 0; i < c->n_images; i++)
    {
      struct image *im = &c->images[i];
      if (!im->remove)
        continue;
      const char *args[] = { "rmi", im->id, NULL };
      ps_error *err = NULL;
      if (buildah_call (args, NULL, &err) < 0)
        {
          /* In use by a container, most likely: it stays, and so does a
             bare image entry. */
          ps_info ("cache prune: image %.12s stays: %s", im->id, err->msg);
          ps_error_free (err);
          continue;
        }
      im->removed = true;
      c->entries[im->owner].deleted = true;
      /* What the LLB executor kept about the image (a diff's deletions)
         goes with it. */
      cleanup_free char *side = xasprintf ("%s/llb-whiteouts/%s", state_dir, im->id);
      struct stat st;
      if (lstat (side, &st) == 0)
        {
          c->entries[im->owner].freed += path_bytes (side, S_ISDIR (st.st_mode));
          ps_rm_rf (side, NULL);
        }
    }
  count_freed_layers (c);
}

int
cache_prune (const char *state_dir, const struct cache_prune_opts *o, struct cache_prune_report *report,
             ps_error **err)
{
  memset (report, 0, sizeof *report);
  cleanup_close int gate = -1;
  cleanup_close int lock = -1;
  if (cache_lock_exclusive (state_dir, o->give_up, o->give_up_data, o->wait_ms, &gate, &lock, err) < 0)
    return -1;

  struct cache c = { 0 };
  if (gather (&c, state_dir, err) < 0)
    {
      cache_free (&c);
      return ps_error_wrap (err, "build cache");
    }
  choose (&c, o);
  remove_selected (&c, state_dir, o);

  report->deleted = xcalloc (c.n_entries + 1, sizeof *report->deleted);
  for (size_t i = 0; i < c.n_entries; i++)
    {
      struct entry *e = &c.entries[i];
      if (!e->deleted)
        continue;
      struct cache_prune_entry *r = &report->deleted[report->n_deleted++];
      r->id = ps_steal_pointer ((void **) &e->id);
      r->type = e->type;
      r->size = e->freed;
      r->last_used_ns = e->last_used_ns;
      r->created_ns = e->created_ns;
      report->reclaimed += e->freed;
    }
  cache_free (&c);
  ps_info ("cache prune: %zu entries removed, %llu bytes reclaimed", report->n_deleted,
           (unsigned long long) report->reclaimed);
  return 0;
}

int
cache_usage (const char *state_dir, const struct cache_prune_opts *o, struct cache_prune_report *report,
             ps_error **err)
{
  memset (report, 0, sizeof *report);
  struct cache c = { 0 };
  if (gather (&c, state_dir, err) < 0)
    {
      cache_free (&c);
      return ps_error_wrap (err, "build cache");
    }
  struct cache_prune_opts every = *o;
  every.all = true;
  int64_t now = ps_now_ns ();
  struct entry **sel = xcalloc (c.n_entries + 1, sizeof *sel);
  size_t n = 0;
  for (size_t i = 0; i < c.n_entries; i++)
    if (wanted (&c.entries[i], &every, now))
      sel[n++] = &c.entries[i];
  qsort (sel, n, sizeof *sel, cmp_oldest_first);
  report->deleted = xcalloc (n + 1, sizeof *report->deleted);
  for (size_t i = 0; i < n; i++)
    {
      struct cache_prune_entry *r = &report->deleted[report->n_deleted++];
      r->id = ps_steal_pointer ((void **) &sel[i]->id);
      r->type = sel[i]->type;
      r->size = sel[i]->est;
      r->last_used_ns = sel[i]->last_used_ns;
      r->created_ns = sel[i]->created_ns;
      report->reclaimed += sel[i]->est;
    }
  free (sel);
  cache_free (&c);
  return 0;
}

bool
cache_type_mutable (const char *type)
{
  return strcmp (type, "exec.cachemount") == 0 || strcmp (type, "source.local") == 0;
}

const char *
cache_type_description (const char *type)
{
  static const char *const d[][2] = {
    { "llb.result", "the image an LLB vertex produced" },
    { "build.result", "a whole build's result, kept for reuse" },
    { "exec.cachemount", "an LLB cache mount" },
    { "exec.snapshot", "an LLB exec's changes, kept as a directory until an image is needed" },
    { "source.local", "a client's context as last synced over its session" },
    { "source.http", "how an LLB http source was last downloaded" },
    { "export.layout", "an exported image's OCI layout, kept for its next export" },
    { "image.intermediate", "an untagged image in buildah's layer cache" },
    { "image.dangling", "an untagged image" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (d); i++)
    if (strcmp (type, d[i][0]) == 0)
      return d[i][1];
  return type;
}

void
cache_prune_report_free (struct cache_prune_report *r)
{
  for (size_t i = 0; i < r->n_deleted; i++)
    free (r->deleted[i].id);
  free (r->deleted);
  memset (r, 0, sizeof *r);
}
