/* snapshot.c — exec results kept as overlay upper directories until an
 * image is needed (see snapshot.h). */
#define _GNU_SOURCE
#include "solver/llb/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "solver/buildah.h"
#include "solver/llb/merge.h"
#include "solver/llb/wc.h"
#include "solver/rootfs_export.h"

#include <cjson/cJSON.h>
#include "common/cjson.h"

/* Snapshots below one: a chain of execs in one graph, and the graphs
   built on its results.  Deeper means a loop in corrupt records. */
#define LLB_SNAPSHOT_MAX_DEPTH 4096

bool
llb_snapshot_id_ok (const char *id)
{
  if (id == NULL || strlen (id) != 32)
    return false;
  for (const char *c = id; *c; c++)
    if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
      return false;
  return true;
}

static char *
snap_dir (const char *state_dir, const char *id)
{
  return xasprintf ("%s/" LLB_SNAPSHOTS_DIR "/%s", state_dir, id);
}

/* What the kernel said about a failed fsconfig/fsmount: its messages are
   read from the context fd ("e overlay: ..."). */
static char *
fs_messages (int fs)
{
  char out[2048] = "", buf[512];
  size_t len = 0;
  for (int i = 0; i < 8; i++)
    {
      ssize_t n = read (fs, buf, sizeof buf - 1);
      if (n <= 0)
        break;
      buf[n] = '\0';
      int w = snprintf (out + len, sizeof out - len, "%s%s", len ? "; " : "", buf);
      if (w < 0 || (size_t) w >= sizeof out - len)
        break;
      len += (size_t) w;
    }
  return xstrdup (out);
}

/* Mount overlay at `target`: `lowers` top first (given one at a time, so
   no chain is too long for one mount), `upper` and `work` on one file
   system.  Redirects and metacopy off, so an upper directory holds
   every changed file and directory whole, as llb_tree_apply_upper reads
   it. */
static int
overlay_mount (const ps_strv *lowers, const char *upper, const char *work, const char *target, ps_error **err)
{
  int fs = fsopen ("overlay", FSOPEN_CLOEXEC);
  if (fs < 0)
    return ps_error_set_errno (err, 500, errno, "fsopen overlay");
  const char *step = "lowerdir+";
  int r = 0;
  for (size_t i = 0; r == 0 && i < lowers->n; i++)
    r = fsconfig (fs, FSCONFIG_SET_STRING, "lowerdir+", lowers->v[i], 0);
  if (r == 0 && upper)
    {
      step = "upperdir";
      r = fsconfig (fs, FSCONFIG_SET_STRING, "upperdir", upper, 0);
      if (r == 0)
        {
          step = "workdir";
          r = fsconfig (fs, FSCONFIG_SET_STRING, "workdir", work, 0);
        }
    }
  if (r == 0)
    {
      step = "options";
      r = fsconfig (fs, FSCONFIG_SET_STRING, "redirect_dir", "off", 0);
      if (r == 0)
        r = fsconfig (fs, FSCONFIG_SET_STRING, "metacopy", "off", 0);
      if (r == 0)
        r = fsconfig (fs, FSCONFIG_SET_STRING, "index", "off", 0);
    }
  if (r == 0)
    {
      step = "create";
      r = fsconfig (fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
    }
  int mnt = -1;
  if (r == 0)
    {
      step = "fsmount";
      mnt = fsmount (fs, FSMOUNT_CLOEXEC, 0);
      r = mnt < 0 ? -1 : 0;
    }
  if (r == 0)
    {
      step = "move_mount";
      r = move_mount (mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    }
  if (r < 0)
    {
      int e = errno;
      cleanup_free char *msg = fs_messages (fs);
      ps_error_set_errno (err, 500, e, "mount overlay at %s (%s%s%s)", target, step, *msg ? ": " : "", msg);
    }
  if (mnt >= 0)
    close (mnt);
  close (fs);
  return r < 0 ? -1 : 0;
}

static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static int probed = -1; /* -1 not asked, 0 no, 1 yes */

bool
llb_snapshots_usable (const char *state_dir)
{
  pthread_mutex_lock (&probe_lock);
  if (probed < 0)
    {
      probed = 0;
      char rnd[17];
      ps_random_hex (rnd, 8);
      cleanup_free char *dir = xasprintf ("%s/" LLB_SNAPSHOTS_DIR "/.probe-%s", state_dir, rnd);
      cleanup_free char *l1 = xasprintf ("%s/l1", dir), *l2 = xasprintf ("%s/l2", dir);
      cleanup_free char *u = xasprintf ("%s/u", dir), *w = xasprintf ("%s/w", dir), *m = xasprintf ("%s/m", dir);
      ps_error *err = NULL;
      if (strcmp (buildah_storage_driver (), "overlay") != 0)
        ps_info ("LLB execs commit every result: the storage driver is %s, not overlay", buildah_storage_driver ());
      else if (ps_mkdir_p (l1, 0755, &err) == 0 && ps_mkdir_p (l2, 0755, &err) == 0 && ps_mkdir_p (u, 0755, &err) == 0
               && ps_mkdir_p (w, 0700, &err) == 0 && ps_mkdir_p (m, 0755, &err) == 0)
        {
          ps_strv lowers = { 0 };
          ps_strv_push (&lowers, l1);
          ps_strv_push (&lowers, l2);
          if (overlay_mount (&lowers, u, w, m, &err) == 0)
            {
              umount2 (m, MNT_DETACH);
              probed = 1;
            }
          ps_strv_free (&lowers);
        }
      if (err)
        {
          ps_info ("LLB execs commit every result: %s", err->msg);
          ps_error_free (err);
        }
      ps_rm_rf (dir, NULL);
    }
  bool ok = probed == 1;
  pthread_mutex_unlock (&probe_lock);
  return ok;
}

/* Read <snapshot>/parent: *kind "image" or "snap", *ref its id. */
static int
read_parent (const char *dir, char **kind, char **ref)
{
  cleanup_free char *path = xasprintf ("%s/parent", dir);
  cleanup_free char *text = NULL;
  if (ps_read_file (path, 256, &text, NULL, NULL) < 0)
    return -1;
  text[strcspn (text, "\n")] = '\0';
  char *sp = strchr (text, ' ');
  if (sp == NULL)
    return -1;
  *sp = '\0';
  if (!((strcmp (text, "image") == 0 && strlen (sp + 1) == 64) || (strcmp (text, "snap") == 0 && llb_snapshot_id_ok (sp + 1))))
    return -1;
  *kind = xstrdup (text);
  *ref = xstrdup (sp + 1);
  return 0;
}

/* The chain under snapshot `id` (itself first, when given): its finished
   snapshots' ids, newest first, into *snaps, and the image at the bottom
   into *image.  -1 when a link is missing or unreadable. */
static int
chain (const char *state_dir, const char *id, ps_strv *snaps, char **image, ps_error **err)
{
  cleanup_free char *cur = xstrdup (id);
  for (int depth = 0; depth < LLB_SNAPSHOT_MAX_DEPTH; depth++)
    {
      cleanup_free char *dir = snap_dir (state_dir, cur);
      cleanup_free char *kind = NULL, *ref = NULL;
      if (read_parent (dir, &kind, &ref) < 0)
        return ps_error_set (err, 404, "snapshot %s is gone or unfinished", cur);
      ps_strv_push (snaps, cur);
      if (strcmp (kind, "image") == 0)
        {
          *image = steal_pointer (&ref);
          return 0;
        }
      free (cur);
      cur = steal_pointer (&ref);
    }
  return ps_error_set (err, 500, "snapshot %s: a chain deeper than %d", id, LLB_SNAPSHOT_MAX_DEPTH);
}

/* The lower directories of a mount over snapshot `snap` (NULL: over image
   `image` alone), top first: the chain's upper directories, then the
   image's layers. */
static int
chain_lowers (const char *state_dir, const char *image, const char *snap, ps_strv *lowers, ps_error **err)
{
  ps_strv snaps = { 0 };
  cleanup_free char *base = image ? xstrdup (image) : NULL;
  int ret = 0;
  if (snap)
    {
      free (base);
      base = NULL;
      ret = chain (state_dir, snap, &snaps, &base, err);
    }
  for (size_t i = 0; ret == 0 && i < snaps.n; i++)
    {
      cleanup_free char *d = snap_dir (state_dir, snaps.v[i]);
      ps_strv_pushf (lowers, "%s/diff", d);
    }
  if (ret == 0)
    ret = buildah_image_layer_dirs (base, lowers, err);
  ps_strv_free (&snaps);
  return ret;
}

int
llb_snapshot_mount (const char *state_dir, const char *parent_image, const char *parent_snap,
                    struct llb_snapshot_mount *m, ps_error **err)
{
  memset (m, 0, sizeof *m);
  ps_strv lowers = { 0 };
  int ret = chain_lowers (state_dir, parent_image, parent_snap, &lowers, err);
  char rnd[33];
  ps_random_hex (rnd, 16);
  m->id = xstrdup (rnd);
  m->dir = snap_dir (state_dir, m->id);
  m->merged = xasprintf ("%s/merged", m->dir);
  m->parent = parent_snap ? xasprintf ("snap %s", parent_snap) : xasprintf ("image %s", parent_image);
  cleanup_free char *diff = xasprintf ("%s/diff", m->dir), *work = xasprintf ("%s/work", m->dir);
  cleanup_free char *empty = xasprintf ("%s/empty", m->dir);
  if (ret == 0)
    ret = ps_mkdir_p (diff, 0755, err);
  if (ret == 0)
    ret = ps_mkdir_p (work, 0700, err);
  if (ret == 0)
    ret = ps_mkdir_p (m->merged, 0755, err);
  if (ret == 0 && lowers.n == 0)
    {
      /* an image of no layers: overlay wants a lower directory */
      ret = ps_mkdir_p (empty, 0755, err);
      ps_strv_push (&lowers, empty);
    }
  /* The upper directory is the merged root: it keeps the owner and mode
     the root had below (as containers-storage makes a layer's). */
  struct stat st;
  if (ret == 0 && stat (lowers.v[0], &st) == 0
      && (chown (diff, st.st_uid, st.st_gid) < 0 || chmod (diff, st.st_mode & 07777) < 0))
    ret = ps_error_set_errno (err, 500, errno, "set the owner and mode of %s", diff);
  if (ret == 0)
    ret = overlay_mount (&lowers, diff, work, m->merged, err);
  ps_strv_free (&lowers);
  if (ret < 0)
    {
      if (m->dir)
        ps_rm_rf (m->dir, NULL);
      free (m->id);
      free (m->dir);
      free (m->merged);
      free (m->parent);
      memset (m, 0, sizeof *m);
    }
  return ret;
}

int
llb_snapshot_mount_ro (const char *state_dir, const char *id, struct llb_snapshot_mount *m, ps_error **err)
{
  memset (m, 0, sizeof *m);
  ps_strv lowers = { 0 };
  int ret = chain_lowers (state_dir, NULL, id, &lowers, err);
  char rnd[17];
  ps_random_hex (rnd, 8);
  /* a name prune's scan passes over and llb_snapshots_recover removes */
  m->dir = xasprintf ("%s/" LLB_SNAPSHOTS_DIR "/.ro-%s", state_dir, rnd);
  m->merged = xasprintf ("%s/merged", m->dir);
  cleanup_free char *empty = xasprintf ("%s/empty", m->dir);
  if (ret == 0)
    ret = ps_mkdir_p (m->merged, 0755, err);
  /* overlay without an upper directory wants two lower ones */
  if (ret == 0 && lowers.n < 2 && (ret = ps_mkdir_p (empty, 0755, err)) == 0)
    ps_strv_push (&lowers, empty);
  if (ret == 0)
    ret = overlay_mount (&lowers, NULL, NULL, m->merged, err);
  ps_strv_free (&lowers);
  if (ret < 0)
    {
      ps_rm_rf (m->dir, NULL);
      free (m->dir);
      free (m->merged);
      memset (m, 0, sizeof *m);
    }
  return ret;
}

void
llb_snapshot_unmount_ro (struct llb_snapshot_mount *m)
{
  if (m->dir == NULL)
    return;
  if (umount2 (m->merged, 0) < 0 && errno != EINVAL)
    umount2 (m->merged, MNT_DETACH);
  ps_rm_rf (m->dir, NULL);
  free (m->dir);
  free (m->merged);
  memset (m, 0, sizeof *m);
}

int
llb_snapshot_finish (struct llb_snapshot_mount *m, bool keep, ps_error **err)
{
  if (m->dir == NULL)
    return 0;
  int ret = 0;
  if (umount2 (m->merged, 0) < 0 && errno != EINVAL && umount2 (m->merged, MNT_DETACH) < 0 && errno != EINVAL)
    ret = ps_error_set_errno (err, 500, errno, "unmount %s", m->merged);
  if (ret == 0 && keep)
    {
      cleanup_free char *work = xasprintf ("%s/work", m->dir), *empty = xasprintf ("%s/empty", m->dir);
      cleanup_free char *path = xasprintf ("%s/parent", m->dir), *tmp = xasprintf ("%s/parent.tmp", m->dir);
      cleanup_free char *text = xasprintf ("%s\n", m->parent);
      if (m->created_by)
        {
          cleanup_free char *cb = xasprintf ("%s/created_by", m->dir);
          ps_write_file (cb, m->created_by, strlen (m->created_by), 0600, NULL);
        }
      rmdir (m->merged);
      ps_rm_rf (work, NULL);
      rmdir (empty);
      if (ps_write_file (tmp, text, strlen (text), 0600, err) < 0)
        ret = -1;
      else if (rename (tmp, path) < 0)
        ret = ps_error_set_errno (err, 500, errno, "rename %s", tmp);
    }
  if (ret < 0 || !keep)
    ps_rm_rf (m->dir, NULL);
  if (ret < 0 || !keep)
    {
      free (m->id);
      m->id = NULL;
    }
  free (m->dir);
  free (m->merged);
  free (m->parent);
  m->dir = m->merged = m->parent = NULL;
  return ret;
}

bool
llb_snapshot_valid (const char *state_dir, const char *id)
{
  if (!llb_snapshot_id_ok (id))
    return false;
  ps_strv snaps = { 0 };
  cleanup_free char *image = NULL;
  bool ok = chain (state_dir, id, &snaps, &image, NULL) == 0 && buildah_image_present (image);
  ps_strv_free (&snaps);
  return ok;
}

/* The image a finished snapshot was made into, when still in storage. */
static char *
made_image (const char *state_dir, const char *id)
{
  cleanup_free char *dir = snap_dir (state_dir, id);
  cleanup_free char *record = xasprintf ("%s/image", dir);
  char *made = NULL;
  if (ps_read_file (record, 256, &made, NULL, NULL) < 0)
    return NULL;
  made[strcspn (made, "\n")] = '\0';
  if (strlen (made) == 64 && buildah_image_present (made))
    return made;
  free (made);
  return NULL;
}

static const char *const LAYER_TAR = "application/vnd.oci.image.layer.v1.tar";

static cJSON *
descriptor (const char *media_type, const char *digest, int64_t size)
{
  cJSON *d = cJSON_CreateObject ();
  cJSON_AddStringToObject (d, "mediaType", media_type);
  cJSON_AddStringToObject (d, "digest", digest);
  cJSON_AddNumberToObject (d, "size", (double) size);
  return d;
}

/* snaps[0..n) (newest first) as layers over image `base`: a dir: layout
   of the new config, a manifest listing the base's layers by diff ID (the
   store has them: skopeo reuses them without reading a blob) and the new
   layer tars, copied into storage under the config's digest. */
static int
image_from_layers (const char *state_dir, const ps_strv *snaps, size_t n, const char *base, char **image,
                   ps_error **err)
{
  cleanup_free char *cfg_text = NULL;
  size_t cfg_len = 0;
  struct buildah_layer *bl = NULL;
  size_t nbl = 0;
  if (buildah_image_config (base, &cfg_text, &cfg_len, err) < 0 || buildah_image_layers (base, &bl, &nbl, err) < 0)
    return -1;
  int ret = 0;
  cleanup_cjson cJSON *cfg = cJSON_ParseWithLength (cfg_text, cfg_len);
  cleanup_cjson cJSON *manifest = cJSON_CreateObject ();
  cJSON *rootfs = cJSON_GetObjectItemCaseSensitive (cfg, "rootfs");
  cJSON *diff_ids = cJSON_GetObjectItemCaseSensitive (rootfs, "diff_ids");
  if (!cJSON_IsObject (cfg) || !cJSON_IsArray (diff_ids) || (size_t) cJSON_GetArraySize (diff_ids) != nbl)
    ret = ps_error_set (err, 500, "image %.12s: its config's rootfs does not list its %zu layers", base, nbl);
  cJSON *layers = cJSON_CreateArray ();
  cJSON_AddNumberToObject (manifest, "schemaVersion", 2);
  cJSON_AddStringToObject (manifest, "mediaType", "application/vnd.oci.image.manifest.v1+json");
  for (size_t i = nbl; ret == 0 && i-- > 0;)
    {
      const cJSON *want = cJSON_GetArrayItem (diff_ids, (int) (nbl - 1 - i));
      if (bl[i].diff_digest == NULL || bl[i].diff_size < 0 || !cJSON_IsString (want)
          || strcmp (want->valuestring, bl[i].diff_digest) != 0)
        ret = ps_error_set (err, 500, "image %.12s: layer %zu has no diff ID the config agrees with", base,
                            nbl - 1 - i);
      else
        cJSON_AddItemToArray (layers, descriptor (LAYER_TAR, bl[i].diff_digest, bl[i].diff_size));
    }
  buildah_layers_free (bl, nbl);
  cleanup_free char *tmp_top = xasprintf ("%s/llb-tmp", state_dir);
  cleanup_free char *dir = xasprintf ("%s/snapshot-image-XXXXXX", tmp_top);
  if (ret == 0)
    ret = ps_mkdir_p (tmp_top, 0700, err);
  if (ret == 0 && mkdtemp (dir) == NULL)
    ret = ps_error_set_errno (err, 500, errno, "mkdtemp %s", dir);
  bool made_dir = ret == 0;
  char created[64];
  ps_format_rfc3339 (ps_now_ns (), created, sizeof created);
  cJSON *history = cJSON_GetObjectItemCaseSensitive (cfg, "history");
  if (ret == 0 && !cJSON_IsArray (history))
    {
      cJSON_DeleteItemFromObjectCaseSensitive (cfg, "history");
      history = cJSON_AddArrayToObject (cfg, "history");
    }
  for (size_t k = n; ret == 0 && k-- > 0;)
    {
      cleanup_free char *sd = snap_dir (state_dir, snaps->v[k]);
      cleanup_free char *diff = xasprintf ("%s/diff", sd), *cbp = xasprintf ("%s/created_by", sd);
      cleanup_free char *tar = xasprintf ("%s/layer.tmp", dir);
      cleanup_free char *diff_id = NULL, *created_by = NULL;
      uint64_t bytes = 0;
      if ((ret = rootfs_write_layer_tar (diff, tar, &diff_id, &bytes, err)) < 0)
        break;
      cleanup_free char *blob = xasprintf ("%s/%s", dir, diff_id + 7);
      if (rename (tar, blob) < 0 && errno != EEXIST)
        {
          ret = ps_error_set_errno (err, 500, errno, "rename %s", tar);
          break;
        }
      cJSON_AddItemToArray (layers, descriptor (LAYER_TAR, diff_id, (int64_t) bytes));
      cJSON_AddItemToArray (diff_ids, cJSON_CreateString (diff_id));
      cJSON *h = cJSON_CreateObject ();
      cJSON_AddStringToObject (h, "created", created);
      if (ps_read_file (cbp, 1 << 16, &created_by, NULL, NULL) == 0 && *created_by)
        cJSON_AddStringToObject (h, "created_by", created_by);
      cJSON_AddStringToObject (h, "comment", "podsolve LLB exec");
      cJSON_AddItemToArray (history, h);
    }
  cleanup_free char *config = NULL, *mtext = NULL;
  char hex[65] = "";
  if (ret == 0)
    {
      cJSON_DeleteItemFromObjectCaseSensitive (cfg, "created");
      cJSON_AddStringToObject (cfg, "created", created);
      config = cJSON_PrintUnformatted (cfg);
      ps_sha256_hex (config, strlen (config), hex);
      cleanup_free char *cpath = xasprintf ("%s/%s", dir, hex), *digest = xasprintf ("sha256:%s", hex);
      cJSON_AddItemToObject (manifest, "config",
                             descriptor ("application/vnd.oci.image.config.v1+json", digest, (int64_t) strlen (config)));
      cJSON_AddItemToObject (manifest, "layers", layers);
      layers = NULL;
      mtext = cJSON_PrintUnformatted (manifest);
      cleanup_free char *mpath = xasprintf ("%s/manifest.json", dir), *vpath = xasprintf ("%s/version", dir);
      const char *version = "Directory Transport Version: 1.1\n";
      if (ps_write_file (cpath, config, strlen (config), 0600, err) < 0
          || ps_write_file (mpath, mtext, strlen (mtext), 0600, err) < 0
          || ps_write_file (vpath, version, strlen (version), 0600, err) < 0)
        ret = -1;
    }
  cJSON_Delete (layers);
  if (ret == 0)
    {
      cleanup_free char *src = xasprintf ("dir:%s", dir);
      ret = buildah_copy_into_storage (src, hex, "the snapshots' image", err);
    }
  if (made_dir)
    ps_rm_rf (dir, NULL);
  if (ret == 0)
    *image = xstrdup (hex);
  return ret;
}

/* The chain applied over a working container of image `base`, committed:
   one layer for the whole chain. */
static int
image_by_commit (const char *state_dir, const ps_strv *snaps, size_t n, const char *base, const char *who,
                 char **image, ps_error **err)
{
  struct buildah_wc w = { 0 };
  int ret = llb_wc_from (base, true, &w, err);
  for (size_t i = n; ret == 0 && i-- > 0;)
    {
      cleanup_free char *d = snap_dir (state_dir, snaps->v[i]);
      cleanup_free char *diff = xasprintf ("%s/diff", d);
      ret = llb_tree_apply_upper (w.mnt, diff, who, err);
    }
  if (ret == 0)
    ret = llb_wc_commit_rm (&w, image, err);
  llb_wc_remove (&w);
  return ret;
}

int
llb_snapshot_image (const char *state_dir, const char *id, const char *who, char **image, ps_error **err)
{
  char *made = made_image (state_dir, id);
  if (made)
    {
      *image = made;
      return 0;
    }
  ps_strv snaps = { 0 };
  cleanup_free char *base = NULL;
  if (chain (state_dir, id, &snaps, &base, err) < 0)
    {
      ps_strv_free (&snaps);
      return -1;
    }
  /* Start from the newest snapshot below this one that is an image already. */
  size_t n = snaps.n;
  for (size_t i = 1; i < snaps.n; i++)
    {
      char *below = made_image (state_dir, snaps.v[i]);
      if (below)
        {
          free (base);
          base = below;
          n = i;
          break;
        }
    }
  cleanup_free char *id_out = NULL;
  ps_error *fast = NULL;
  int ret = image_from_layers (state_dir, &snaps, n, base, &id_out, &fast);
  if (ret < 0)
    {
      ps_warn ("%s: snapshot %s made into one layer: %s", who, id, fast->msg);
      ps_error_free (fast);
      ret = image_by_commit (state_dir, &snaps, n, base, who, &id_out, err);
    }
  ps_strv_free (&snaps);
  if (ret < 0)
    return -1;
  cleanup_free char *dir = snap_dir (state_dir, id);
  cleanup_free char *record = xasprintf ("%s/image", dir), *tmp = xasprintf ("%s/image.tmp", dir);
  cleanup_error ps_error *e = NULL;
  if (ps_write_file (tmp, id_out, strlen (id_out), 0600, &e) < 0 || rename (tmp, record) < 0)
    unlink (tmp); /* a lost record only costs making the image again */
  *image = steal_pointer (&id_out);
  return 0;
}

void
llb_snapshots_recover (const char *state_dir)
{
  if (state_dir == NULL)
    return;
  cleanup_free char *top = xasprintf ("%s/" LLB_SNAPSHOTS_DIR, state_dir);
  DIR *d = opendir (top);
  if (d == NULL)
    return;
  struct dirent *de;
  size_t removed = 0;
  while ((de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.' && (de->d_name[1] == '\0' || (de->d_name[1] == '.' && de->d_name[2] == '\0')))
        continue;
      cleanup_free char *dir = xasprintf ("%s/%s", top, de->d_name);
      cleanup_free char *merged = xasprintf ("%s/merged", dir), *parent = xasprintf ("%s/parent", dir);
      umount2 (merged, MNT_DETACH); /* EINVAL or ENOENT when not mounted */
      if (!llb_snapshot_id_ok (de->d_name) || access (parent, F_OK) < 0)
        {
          ps_rm_rf (dir, NULL);
          removed++;
        }
    }
  closedir (d);
  if (removed)
    ps_info ("removed %zu unfinished LLB snapshot(s) a stopped daemon left", removed);
}
