/* buildah.c — spawning buildah, the isolation probe and version probe. */
#define _GNU_SOURCE
#include "solver/buildah.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

extern char **environ;

static struct buildah_config config = { .buildah = "buildah" };
static char *chosen_isolation;
static char *chosen_runtime;
static char *version_string;

void
buildah_configure (const struct buildah_config *cfg)
{
  config = *cfg;
  if (config.buildah == NULL)
    config.buildah = "buildah";
}

void
buildah_argv_init (ps_strv *argv)
{
  ps_strv_push (argv, config.buildah);
  if (config.root)
    {
      ps_strv_push (argv, "--root");
      ps_strv_push (argv, config.root);
    }
  if (config.runroot)
    {
      ps_strv_push (argv, "--runroot");
      ps_strv_push (argv, config.runroot);
    }
  if (config.storage_driver)
    {
      ps_strv_push (argv, "--storage-driver");
      ps_strv_push (argv, config.storage_driver);
    }
}

char *
buildah_storage_name_ref (const char *name)
{
  if (config.root && config.runroot)
    return xasprintf ("containers-storage:[%s@%s+%s]%s", buildah_storage_driver (), config.root, config.runroot,
                      name);
  return xasprintf ("containers-storage:%s", name);
}

char *
buildah_storage_image_ref (const char *id)
{
  cleanup_free char *at = xasprintf ("@%s", id);
  return buildah_storage_name_ref (at);
}

const char *
buildah_isolation (void)
{
  return chosen_isolation ? chosen_isolation : "oci";
}

const char *
buildah_runtime (void)
{
  return chosen_runtime;
}

void
buildah_argv_isolation (ps_strv *argv, const char *override_isolation)
{
  const char *iso = override_isolation ? override_isolation : buildah_isolation ();
  ps_strv_pushf (argv, "--isolation=%s", iso);
  if (strcmp (iso, "oci") == 0 && chosen_runtime)
    ps_strv_pushf (argv, "--runtime=%s", chosen_runtime);
}

const char *
buildah_version (void)
{
  return version_string ? version_string : "unknown";
}

/* The store's driver and graph root from `buildah info`, asked once. */
static pthread_mutex_t store_info_lock = PTHREAD_MUTEX_INITIALIZER;
static char *info_driver, *info_graph_root;
static bool info_asked;

static void
store_info (void)
{
  pthread_mutex_lock (&store_info_lock);
  if (!info_asked)
    {
      info_asked = true;
      const char *args[] = { "info", NULL };
      cleanup_free char *out = NULL;
      ps_error *err = NULL;
      if (buildah_call (args, &out, &err) < 0)
        {
          ps_warn ("cannot tell the storage driver: %s", err->msg);
          ps_error_free (err);
        }
      cJSON *root = out ? cJSON_Parse (out) : NULL;
      const cJSON *store = cJSON_GetObjectItemCaseSensitive (root, "store");
      const char *name = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (store, "GraphDriverName"));
      const char *groot = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (store, "GraphRoot"));
      if (name && *name)
        info_driver = xstrdup (name);
      if (groot && *groot)
        info_graph_root = xstrdup (groot);
      cJSON_Delete (root);
    }
  pthread_mutex_unlock (&store_info_lock);
}

const char *
buildah_storage_driver (void)
{
  if (config.storage_driver)
    return config.storage_driver;
  store_info ();
  return info_driver ? info_driver : "unknown";
}

static const char *
graph_root (void)
{
  if (config.root)
    return config.root;
  store_info ();
  return info_graph_root;
}

/* ---- the store's image list ------------------------------------------------------ */

/* containers-storage's images.json may hold thousands of images; beyond
   this, buildah is asked instead. */
#define PS_IMAGES_JSON_MAX ((size_t) 64 << 20)

struct store_image
{
  char *id;     /* 64 hex */
  char *digest; /* the manifest's, "sha256:..." (buildah's FromImageDigest), or NULL */
  char *layer;  /* its top layer's id, or NULL (an image of no layers) */
};

struct store_name
{
  char *name;                      /* as stored: "localhost/busybox:latest" */
  const struct store_image *image; /* into images.v */
};

static pthread_mutex_t images_lock = PTHREAD_MUTEX_INITIALIZER;
static struct
{
  bool valid;
  dev_t dev;
  ino_t ino;
  struct timespec mtime;
  off_t size;
  struct store_image *v; /* sorted by id */
  size_t n;
  struct store_name *names; /* sorted by name */
  size_t n_names;
} images;

static int
cmp_image (const void *a, const void *b)
{
  return strcmp (((const struct store_image *) a)->id, ((const struct store_image *) b)->id);
}

static int
cmp_name (const void *a, const void *b)
{
  return strcmp (((const struct store_name *) a)->name, ((const struct store_name *) b)->name);
}

static bool
full_id (const char *id)
{
  if (strlen (id) != 64)
    return false;
  for (const char *c = id; *c; c++)
    if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
      return false;
  return true;
}

static void
images_forget (void)
{
  for (size_t i = 0; i < images.n; i++)
    {
      free (images.v[i].id);
      free (images.v[i].digest);
      free (images.v[i].layer);
    }
  for (size_t i = 0; i < images.n_names; i++)
    free (images.names[i].name);
  free (images.v);
  free (images.names);
  memset (&images, 0, sizeof images);
}

/* Make `images` the list as it is now; false when it cannot be read.
   Called with images_lock held. */
static bool
images_refresh (void)
{
  const char *root = graph_root ();
  if (root == NULL)
    return false;
  cleanup_free char *path = xasprintf ("%s/%s-images/images.json", root, buildah_storage_driver ());
  struct stat st;
  if (stat (path, &st) < 0)
    {
      images_forget ();
      return false;
    }
  if (images.valid && st.st_dev == images.dev && st.st_ino == images.ino && st.st_size == images.size
      && st.st_mtim.tv_sec == images.mtime.tv_sec && st.st_mtim.tv_nsec == images.mtime.tv_nsec)
    return true;
  images_forget ();
  cleanup_free char *text = NULL;
  size_t len = 0;
  if ((size_t) st.st_size > PS_IMAGES_JSON_MAX || ps_read_file (path, PS_IMAGES_JSON_MAX, &text, &len, NULL) < 0)
    return false;
  cJSON *list = cJSON_ParseWithLength (text, len);
  if (!cJSON_IsArray (list))
    {
      cJSON_Delete (list);
      return false;
    }
  size_t cap = (size_t) cJSON_GetArraySize (list) + 1, names_cap = 0;
  images.v = xcalloc (cap, sizeof *images.v);
  const cJSON *it;
  cJSON_ArrayForEach (it, list)
    {
      const char *id = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (it, "id"));
      const char *digest = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (it, "digest"));
      const char *layer = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (it, "layer"));
      if (id == NULL || !full_id (id))
        continue;
      images.v[images.n].id = xstrdup (id);
      images.v[images.n].digest = digest && *digest ? xstrdup (digest) : NULL;
      images.v[images.n].layer = layer && full_id (layer) ? xstrdup (layer) : NULL;
      images.n++;
      names_cap += (size_t) cJSON_GetArraySize (cJSON_GetObjectItemCaseSensitive (it, "names"));
    }
  qsort (images.v, images.n, sizeof *images.v, cmp_image);
  images.names = xcalloc (names_cap + 1, sizeof *images.names);
  cJSON_ArrayForEach (it, list)
    {
      const char *id = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (it, "id"));
      struct store_image key = { .id = (char *) id };
      const struct store_image *img
          = id ? bsearch (&key, images.v, images.n, sizeof *images.v, cmp_image) : NULL;
      const cJSON *name;
      cJSON_ArrayForEach (name, cJSON_GetObjectItemCaseSensitive (it, "names"))
        if (img && cJSON_IsString (name) && images.n_names < names_cap)
          {
            images.names[images.n_names].name = xstrdup (name->valuestring);
            images.names[images.n_names++].image = img;
          }
    }
  cJSON_Delete (list);
  qsort (images.names, images.n_names, sizeof *images.names, cmp_name);
  /* Read after the stat: a change in between is seen at the next call. */
  images.valid = true;
  images.dev = st.st_dev;
  images.ino = st.st_ino;
  images.size = st.st_size;
  images.mtime = st.st_mtim;
  return true;
}

/* A name containers-storage keeps as written: a registry host first
   (with a dot or a port, or "localhost") and a tag, ":latest" added when
   there is none; NULL for short names (resolved through registries.conf)
   and digests, which buildah is asked about. */
static char *
stored_name (const char *ref)
{
  const char *slash = strchr (ref, '/');
  if (slash == NULL || strchr (ref, '@') != NULL)
    return NULL;
  size_t host = (size_t) (slash - ref);
  if (memchr (ref, '.', host) == NULL && memchr (ref, ':', host) == NULL
      && !(host == 9 && strncmp (ref, "localhost", 9) == 0))
    return NULL;
  const char *last = strrchr (ref, '/');
  return strchr (last, ':') ? xstrdup (ref) : xasprintf ("%s:latest", ref);
}

/* The image `ref` (a full ID or a stored name) from the list: a copy of
   its ID and digest; false when the list does not say. */
static bool
images_find (const char *ref, char **id, char **digest)
{
  cleanup_free char *name = full_id (ref) ? NULL : stored_name (ref);
  if (!full_id (ref) && name == NULL)
    return false;
  bool found = false;
  pthread_mutex_lock (&images_lock);
  if (images_refresh ())
    {
      const struct store_image *img = NULL;
      if (name)
        {
          struct store_name key = { .name = name };
          const struct store_name *n = bsearch (&key, images.names, images.n_names, sizeof *images.names, cmp_name);
          img = n ? n->image : NULL;
        }
      else
        {
          struct store_image key = { .id = (char *) ref };
          img = bsearch (&key, images.v, images.n, sizeof *images.v, cmp_image);
        }
      if (img)
        {
          found = true;
          if (id)
            *id = xstrdup (img->id);
          if (digest)
            *digest = img->digest ? xstrdup (img->digest) : NULL;
        }
    }
  pthread_mutex_unlock (&images_lock);
  return found;
}

void
buildah_layers_free (struct buildah_layer *v, size_t n)
{
  for (size_t i = 0; i < n; i++)
    {
      free (v[i].dir);
      free (v[i].diff_digest);
    }
  free (v);
}

int
buildah_image_layers (const char *id, struct buildah_layer **out, size_t *n_out, ps_error **err)
{
  *out = NULL;
  *n_out = 0;
  if (strcmp (buildah_storage_driver (), "overlay") != 0)
    return ps_error_set (err, 501, "storage driver %s: layer directories are the overlay driver's",
                         buildah_storage_driver ());
  const char *root = graph_root ();
  cleanup_free char *top = NULL;
  bool found = false;
  pthread_mutex_lock (&images_lock);
  if (full_id (id) && images_refresh ())
    {
      struct store_image key = { .id = (char *) id };
      const struct store_image *img = bsearch (&key, images.v, images.n, sizeof *images.v, cmp_image);
      if (img)
        {
          found = true;
          top = img->layer ? xstrdup (img->layer) : NULL;
        }
    }
  pthread_mutex_unlock (&images_lock);
  if (!found || root == NULL)
    return ps_error_set (err, 404, "image %.12s is not in the store's image list", id);
  if (top == NULL)
    return 0;
  /* The parent links: <root>/overlay-layers/layers.json, which
     containers-storage replaces whole on every change. */
  cleanup_free char *path = xasprintf ("%s/overlay-layers/layers.json", root);
  cleanup_free char *text = NULL;
  size_t len = 0;
  if (ps_read_file (path, PS_IMAGES_JSON_MAX, &text, &len, err) < 0)
    return -1;
  cJSON *list = cJSON_ParseWithLength (text, len);
  if (!cJSON_IsArray (list))
    {
      cJSON_Delete (list);
      return ps_error_set (err, 500, "%s: not a JSON array", path);
    }
  int ret = 0;
  size_t cap = (size_t) cJSON_GetArraySize (list) + 1, n = 0;
  struct buildah_layer *v = xcalloc (cap, sizeof *v);
  cleanup_free char *want = steal_pointer (&top);
  while (want && ret == 0)
    {
      const cJSON *it, *hit = NULL;
      cJSON_ArrayForEach (it, list)
        {
          const char *lid = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (it, "id"));
          if (lid && strcmp (lid, want) == 0)
            {
              hit = it;
              break;
            }
        }
      /* A chain longer than the list has layers is a loop. */
      if (hit == NULL || n + 1 >= cap)
        {
          ret = ps_error_set (err, 500, "layer %.12s of image %.12s: %s", want, id,
                              hit ? "the parent links loop" : "not in the store's layer list");
          break;
        }
      const cJSON *flags = cJSON_GetObjectItemCaseSensitive (hit, "flags");
      const char *dd = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (hit, "diff-digest"));
      const cJSON *ds = cJSON_GetObjectItemCaseSensitive (hit, "diff-size");
      if (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (flags, "incomplete")))
        {
          ret = ps_error_set (err, 500, "layer %.12s of image %.12s is incomplete", want, id);
          break;
        }
      v[n].dir = xasprintf ("%s/overlay/%s/diff", root, want);
      v[n].diff_digest = dd && ps_str_has_prefix (dd, "sha256:") ? xstrdup (dd) : NULL;
      v[n].diff_size = cJSON_IsNumber (ds) ? (int64_t) ds->valuedouble : -1;
      n++;
      const char *parent = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (hit, "parent"));
      free (want);
      want = parent && *parent ? xstrdup (parent) : NULL;
    }
  cJSON_Delete (list);
  if (ret < 0)
    {
      buildah_layers_free (v, n);
      return -1;
    }
  *out = v;
  *n_out = n;
  return 0;
}

int
buildah_image_layer_dirs (const char *id, ps_strv *dirs, ps_error **err)
{
  struct buildah_layer *v = NULL;
  size_t n = 0;
  if (buildah_image_layers (id, &v, &n, err) < 0)
    return -1;
  for (size_t i = 0; i < n; i++)
    ps_strv_push (dirs, v[i].dir);
  buildah_layers_free (v, n);
  return 0;
}

int
buildah_image_config (const char *id, char **json, size_t *len, ps_error **err)
{
  const char *root = graph_root ();
  if (!full_id (id) || root == NULL)
    return ps_error_set (err, 404, "image %s: no config to read", id);
  /* containers-storage keeps an image's config as the big-data item
     "sha256:<id>", in a file named "=" and the key in base64. */
  cleanup_free char *key = xasprintf ("sha256:%s", id);
  cleanup_free char *enc = ps_base64_encode (key, strlen (key));
  cleanup_free char *path = xasprintf ("%s/%s-images/%s/=%s", root, buildah_storage_driver (), id, enc);
  return ps_read_file (path, 1 << 24, json, len, err);
}

bool
buildah_image_present (const char *id)
{
  /* Not in the list: an additional (read-only) store may still have it. */
  if (full_id (id) && images_find (id, NULL, NULL))
    return true;
  cleanup_free char *out = NULL;
  return buildah_image_id (id, &out, NULL) == 0 && out[0];
}

int
buildah_image_resolve (const char *ref, char **id, ps_error **err)
{
  if (images_find (ref, id, NULL))
    return 0;
  return buildah_image_id (ref, id, err);
}

bool
buildah_image_named (const char *name, const char *id)
{
  cleanup_free char *named = NULL;
  return full_id (id) && !full_id (name) && images_find (name, &named, NULL) && strcmp (named, id) == 0;
}

char *
buildah_image_digest (const char *id)
{
  char *digest = NULL;
  if (images_find (id, NULL, &digest) && digest)
    return digest;
  free (digest);
  char *out = NULL;
  if (buildah_callv (&out, NULL, "inspect", "--type=image", "--format={{.FromImageDigest}}", id, NULL) < 0)
    return NULL;
  return out;
}


int
buildah_copy_into_storage (const char *src, const char *id, const char *what, ps_error **err)
{
  ps_strv argv = { 0 };
  cleanup_free char *dst = buildah_storage_image_ref (id);
  cleanup_free char *out = NULL, *errout = NULL;
  int status = -1;
  ps_strv_push (&argv, "skopeo");
  ps_strv_push (&argv, "copy");
  ps_strv_push (&argv, "--quiet");
  ps_strv_push (&argv, src);
  ps_strv_push (&argv, dst);
  int r = ps_run_capture (argv.v, &out, &errout, &status, err);
  ps_strv_free (&argv);
  if (r == 0 && status != 0)
    r = ps_error_set (err, 500, "skopeo copy of %s into storage: exit status %d: %s", what, status,
                      errout ? errout : "");
  return r;
}

int
buildah_call (const char *const *args, char **out, ps_error **err)
{
  ps_strv argv = { 0 };
  buildah_argv_init (&argv);
  for (const char *const *a = args; *a; a++)
    ps_strv_push (&argv, *a);
  cleanup_free char *o = NULL, *e = NULL;
  int status = -1;
  int r = ps_run_capture (argv.v, &o, &e, &status, err);
  ps_strv_free (&argv);
  if (r < 0)
    return -1;
  if (status != 0)
    {
      size_t n = e ? strlen (e) : 0;
      while (n > 0 && (e[n - 1] == '\n' || e[n - 1] == ' '))
        e[--n] = '\0';
      cleanup_free char *how = ps_exit_text (status);
      return ps_error_set (err, 500, "buildah %s: %s: %s", args[0], how, e && *e ? e : "failed");
    }
  if (out)
    *out = steal_pointer (&o);
  return 0;
}

int
buildah_call_line (const char *const *args, char **out, ps_error **err)
{
  char *all = NULL;
  if (buildah_call (args, out ? &all : NULL, err) < 0)
    return -1;
  if (out)
    {
      *out = xstrndup (all ? all : "", strcspn (all ? all : "", "\n"));
      free (all);
    }
  return 0;
}

int
buildah_callv (char **out, ps_error **err, const char *arg0, ...)
{
  ps_strv args = { 0 };
  va_list ap;
  va_start (ap, arg0);
  for (const char *a = arg0; a; a = va_arg (ap, const char *))
    ps_strv_push (&args, a);
  va_end (ap);
  int r = buildah_call_line ((const char *const *) args.v, out, err);
  ps_strv_free (&args);
  return r;
}

int
buildah_image_id (const char *image, char **id, ps_error **err)
{
  return buildah_callv (id, err, "inspect", "--type=image", "--format={{.FromImageID}}", image, NULL);
}

static pthread_mutex_t container_tag_lock = PTHREAD_MUTEX_INITIALIZER;
static char container_tag[9] = "0";
static char *container_tag_source;

void
buildah_set_container_tag_source (const char *state_dir)
{
  pthread_mutex_lock (&container_tag_lock);
  free (container_tag_source);
  container_tag_source = xstrdup (state_dir);
  snprintf (container_tag, sizeof container_tag, "0");
  pthread_mutex_unlock (&container_tag_lock);
}

const char *
buildah_container_tag (void)
{
  pthread_mutex_lock (&container_tag_lock);
  if (container_tag_source != NULL)
    {
      /* Hashed now, not at start-up: an idle daemon with no container in
         its storage never needs it, and the first digest initialises
         OpenSSL (about 2 MB of resident pages). */
      char digest[65];
      ps_sha256_hex (container_tag_source, strlen (container_tag_source), digest);
      snprintf (container_tag, sizeof container_tag, "%.8s", digest);
      free (container_tag_source);
      container_tag_source = NULL;
    }
  pthread_mutex_unlock (&container_tag_lock);
  return container_tag;
}

char *
buildah_container_name (void)
{
  char rnd[17];
  ps_random_hex (rnd, 8);
  return xasprintf (PS_CONTAINER_PREFIX "%s-%s", buildah_container_tag (), rnd);
}

int
buildah_from (const char *image, const char *const *extra, char **ctr, ps_error **err)
{
  cleanup_free char *name = buildah_container_name ();
  ps_strv args = { 0 };
  ps_strv_push (&args, "from");
  ps_strv_push (&args, "--quiet");
  ps_strv_push (&args, "--pull=never");
  ps_strv_pushf (&args, "--name=%s", name);
  for (const char *const *a = extra; a && *a; a++)
    ps_strv_push (&args, *a);
  ps_strv_push (&args, image ? image : "scratch");
  int r = buildah_call_line ((const char *const *) args.v, ctr, err);
  ps_strv_free (&args);
  if (r < 0)
    buildah_callv (NULL, NULL, "rm", name, NULL); /* usually "no such container" */
  return r;
}

/* ---- working containers ------------------------------------------------- */

int
buildah_wc_from (const char *image, const char *const *extra, bool mount, struct buildah_wc *w, ps_error **err)
{
  w->ctr = w->mnt = NULL;
  if (buildah_from (image, extra, &w->ctr, err) < 0)
    return -1;
  if (mount && buildah_wc_mount (w, err) < 0)
    {
      buildah_wc_remove (w);
      return -1;
    }
  return 0;
}

int
buildah_wc_mount (struct buildah_wc *w, ps_error **err)
{
  return buildah_callv (&w->mnt, err, "mount", w->ctr, NULL);
}

int
buildah_wc_commit (struct buildah_wc *w, const char *const *opts, bool rm, char **image, ps_error **err)
{
  ps_strv args = { 0 };
  ps_strv_push (&args, "commit");
  ps_strv_push (&args, "--quiet");
  for (const char *const *o = opts; o && *o; o++)
    ps_strv_push (&args, *o);
  if (rm)
    ps_strv_push (&args, "--rm");
  ps_strv_push (&args, w->ctr);
  int r = buildah_call_line ((const char *const *) args.v, image, err);
  ps_strv_free (&args);
  if (r == 0 && rm)
    {
      free (w->ctr);
      free (w->mnt);
      w->ctr = w->mnt = NULL;
    }
  return r;
}

void
buildah_wc_remove (struct buildah_wc *w)
{
  if (w->ctr == NULL)
    return;
  buildah_callv (NULL, NULL, "rm", w->ctr, NULL); /* unmounts it too */
  free (w->ctr);
  free (w->mnt);
  w->ctr = w->mnt = NULL;
}

/* ---- start-up probes ----------------------------------------------------- */

static char *
first_line (const char *s)
{
  const char *nl = strchr (s, '\n');
  return nl ? xstrndup (s, (size_t) (nl - s)) : xstrdup (s);
}

/* Try one isolation mode: returns 0 when a container ran, else -1 with a
   reason in *why. */
static int
probe_one (const char *iso, const char *runtime, char **why)
{
  ps_strv argv = { 0 };
  buildah_argv_init (&argv);
  ps_strv_push (&argv, "from");
  ps_strv_push (&argv, "--quiet");
  ps_strv_push (&argv, "--pull=never");
  ps_strv_push (&argv, "scratch");
  cleanup_free char *out = NULL, *errout = NULL;
  int status = -1;
  ps_error *err = NULL;
  if (ps_run_capture (argv.v, &out, &errout, &status, &err) < 0 || status != 0)
    {
      *why = xasprintf ("buildah from scratch failed: %s",
                        err ? err->msg : (errout && *errout ? errout : "unknown error"));
      ps_error_free (err);
      ps_strv_free (&argv);
      return -1;
    }
  ps_strv_free (&argv);
  cleanup_free char *ctr = first_line (out);

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "run");
  ps_strv_pushf (&argv, "--isolation=%s", iso);
  if (runtime)
    ps_strv_pushf (&argv, "--runtime=%s", runtime);
  const char *binds[] = { "/usr", "/lib", "/lib64", "/bin" };
  for (size_t i = 0; i < ARRAY_SIZE (binds); i++)
    {
      struct stat st;
      if (lstat (binds[i], &st) == 0)
        ps_strv_pushf (&argv, "--volume=%s:%s:ro", binds[i], binds[i]);
    }
  ps_strv_push (&argv, ctr);
  ps_strv_push (&argv, "/usr/bin/true");
  free (out);
  free (errout);
  out = errout = NULL;
  int rc = ps_run_capture (argv.v, &out, &errout, &status, &err);
  ps_strv_free (&argv);
  if (rc < 0 || status != 0)
    {
      /* The runtime's own complaint is the most useful line. */
      const char *e = err ? err->msg : errout;
      const char *pick = e ? strstr (e, "cgroups in hybrid mode") : NULL;
      *why = pick ? first_line (pick) : (e && *e ? first_line (e) : xstrdup ("container did not run"));
      ps_error_free (err);
      err = NULL;
    }

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "rm");
  ps_strv_push (&argv, ctr);
  ps_run_capture (argv.v, NULL, NULL, NULL, NULL);
  ps_strv_free (&argv);
  return rc < 0 || status != 0 ? -1 : 0;
}

int
buildah_probe_isolation (const char *wanted, const char *runtime, ps_error **err)
{
  /* buildah's version doubles as the check that buildah runs at all. */
  ps_strv argv = { 0 };
  ps_strv_push (&argv, config.buildah);
  ps_strv_push (&argv, "version");
  ps_strv_push (&argv, "--json");
  cleanup_free char *out = NULL;
  int status = -1;
  if (ps_run_capture (argv.v, &out, NULL, &status, err) < 0)
    {
      ps_strv_free (&argv);
      return ps_error_wrap (err, "buildah is required");
    }
  ps_strv_free (&argv);
  const char *v = out ? strstr (out, "\"version\": \"") : NULL;
  if (v)
    {
      v += 12;
      const char *end = strchr (v, '"');
      version_string = end ? xstrndup (v, (size_t) (end - v)) : NULL;
    }

  if (strcmp (wanted, "chroot") == 0)
    {
      chosen_isolation = xstrdup ("chroot");
      ps_info ("isolation: chroot (as configured)");
      return 0;
    }
  if (strcmp (wanted, "oci") != 0)
    return ps_error_set (err, 400, "unknown isolation %s (use oci or chroot)", wanted);

  cleanup_free char *why = NULL;
  if (probe_one ("oci", runtime, &why) == 0)
    {
      chosen_isolation = xstrdup ("oci");
      chosen_runtime = runtime ? xstrdup (runtime) : NULL;
      ps_info ("isolation: oci with runtime %s (probe container ran)", runtime ? runtime : "buildah's default");
      return 0;
    }
  cleanup_free char *runc = ps_find_in_path ("runc", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  if (runc && (runtime == NULL || strcmp (runtime, runc) != 0))
    {
      cleanup_free char *why2 = NULL;
      if (probe_one ("oci", runc, &why2) == 0)
        {
          chosen_isolation = xstrdup ("oci");
          chosen_runtime = xstrdup (runc);
          ps_info ("isolation: oci with runtime %s, because the %s runtime cannot run containers here: %s",
                   runc, runtime ? runtime : "default", why);
          return 0;
        }
      char *both = xasprintf ("%s; runc: %s", why ? why : "", why2);
      free (why);
      why = both;
    }
  chosen_isolation = xstrdup ("chroot");
  ps_info ("isolation: chroot, because OCI isolation cannot run containers here: %s", why);
  return 0;
}
