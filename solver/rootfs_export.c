/* rootfs_export.c — image filesystems to tar files and directories with
 * libarchive (read_disk on the buildah mount, write or write_disk out). */
#define _GNU_SOURCE
#include "solver/rootfs_export.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/archive.h"
#include "solver/buildah.h"

int
rootfs_with_mount (const char *image_id, int (*fn) (const char *root, void *ud, ps_error **err), void *ud,
                   ps_error **err)
{
  struct buildah_wc w;
  if (buildah_wc_from (image_id, NULL, false, &w, err) < 0)
    return ps_error_wrap (err, "mount image %.12s", image_id);
  int ret = buildah_wc_mount (&w, err);
  if (ret == 0)
    ret = fn (w.mnt, ud, err);
  buildah_wc_remove (&w);
  return ret;
}

/* Walk `root` with read_disk and hand each entry, renamed relative to the
   root, to `emit`. */
static int
walk_tree (const char *root, int (*emit) (struct archive *in, struct archive_entry *e, void *ud, ps_error **err),
           void *ud, ps_error **err)
{
  struct archive *in = archive_read_disk_new ();
  archive_read_disk_set_symlink_physical (in);
  archive_read_disk_set_standard_lookup (in);
  int ret = 0;
  if (archive_read_disk_open (in, root) != ARCHIVE_OK)
    {
      ret = ps_error_set (err, 500, "read %s: %s", root, archive_error_string (in));
      archive_read_free (in);
      return ret;
    }
  size_t rootlen = strlen (root);
  for (;;)
    {
      struct archive_entry *e = archive_entry_new ();
      int r = archive_read_next_header2 (in, e);
      if (r == ARCHIVE_EOF)
        {
          archive_entry_free (e);
          break;
        }
      if (r < ARCHIVE_WARN)
        {
          ret = ps_error_set (err, 500, "read %s: %s", root, archive_error_string (in));
          archive_entry_free (e);
          break;
        }
      archive_read_disk_descend (in);
      const char *path = archive_entry_pathname (e);
      const char *rel = path + (strncmp (path, root, rootlen) == 0 ? rootlen : 0);
      while (*rel == '/')
        rel++;
      if (*rel == '\0')
        {
          archive_entry_free (e);
          continue;
        }
      cleanup_free char *relcopy = xstrdup (rel);
      archive_entry_set_pathname (e, relcopy);
      /* Hard links found on disk name their target by disk path too. */
      const char *hl = archive_entry_hardlink (e);
      if (hl && strncmp (hl, root, rootlen) == 0)
        {
          cleanup_free char *hrel = xstrdup (hl + rootlen + (hl[rootlen] == '/'));
          archive_entry_set_hardlink (e, hrel);
        }
      ret = emit (in, e, ud, err);
      archive_entry_free (e);
      if (ret < 0)
        break;
    }
  archive_read_close (in);
  archive_read_free (in);
  return ret;
}

static int
copy_data (struct archive *in, struct archive_entry *e, struct archive *out, bool disk, ps_error **err)
{
  if (archive_entry_filetype (e) != AE_IFREG || archive_entry_size (e) == 0)
    return 0;
  switch (ps_archive_copy_data (in, out, disk, NULL, NULL))
    {
    case PS_ARCHIVE_COPY_READ_ERROR:
      return ps_error_set (err, 500, "read %s: %s", archive_entry_pathname (e), archive_error_string (in));
    case PS_ARCHIVE_COPY_WRITE_ERROR:
      return ps_error_set (err, 500, "write %s: %s", archive_entry_pathname (e), archive_error_string (out));
    default:
      return 0;
    }
}

struct rootfs_tar
{
  struct archive *out;
  char *path;
  const char *prefix; /* of the tree being added, "" for none */
};

/* The entry's path, and its hard link's target, under `prefix`. */
static void
entry_under (struct archive_entry *e, const char *prefix)
{
  cleanup_free char *full = xasprintf ("%s/%s", prefix, archive_entry_pathname (e));
  archive_entry_set_pathname (e, full);
  const char *hl = archive_entry_hardlink (e);
  if (hl)
    {
      cleanup_free char *hfull = xasprintf ("%s/%s", prefix, hl);
      archive_entry_set_hardlink (e, hfull);
    }
}

static int
emit_tar (struct archive *in, struct archive_entry *e, void *ud, ps_error **err)
{
  struct rootfs_tar *t = ud;
  if (*t->prefix)
    entry_under (e, t->prefix);
  if (archive_write_header (t->out, e) < ARCHIVE_WARN)
    return ps_error_set (err, 500, "write %s: %s", archive_entry_pathname (e), archive_error_string (t->out));
  return copy_data (in, e, t->out, false, err);
}

rootfs_tar *
rootfs_tar_new (const char *tar_path, ps_error **err)
{
  if (ps_libarchive_load (err) < 0)
    return NULL;
  struct archive *out = archive_write_new ();
  archive_write_set_format_pax_restricted (out);
  if (archive_write_open_filename (out, tar_path) != ARCHIVE_OK)
    {
      ps_error_set (err, 500, "create %s: %s", tar_path, archive_error_string (out));
      archive_write_free (out);
      return NULL;
    }
  rootfs_tar *t = xcalloc (1, sizeof *t);
  t->out = out;
  t->path = xstrdup (tar_path);
  t->prefix = "";
  return t;
}

int
rootfs_tar_add (rootfs_tar *t, const char *root, const char *prefix, ps_error **err)
{
  t->prefix = prefix ? prefix : "";
  if (*t->prefix)
    {
      /* The directory itself, as BuildKit's multi-platform tar has it. */
      struct archive_entry *d = archive_entry_new ();
      archive_entry_set_pathname (d, t->prefix);
      archive_entry_set_filetype (d, AE_IFDIR);
      archive_entry_set_perm (d, 0755);
      archive_entry_set_mtime (d, time (NULL), 0);
      int w = archive_write_header (t->out, d);
      archive_entry_free (d);
      if (w < ARCHIVE_WARN)
        return ps_error_set (err, 500, "write %s: %s", t->prefix, archive_error_string (t->out));
    }
  return walk_tree (root, emit_tar, t, err);
}

int
rootfs_tar_finish (rootfs_tar *t, int ret, uint64_t *bytes, ps_error **err)
{
  if (t == NULL)
    return ret;
  if (archive_write_close (t->out) != ARCHIVE_OK && ret == 0)
    ret = ps_error_set (err, 500, "write %s: %s", t->path, archive_error_string (t->out));
  archive_write_free (t->out);
  struct stat st;
  if (ret == 0 && bytes)
    *bytes = stat (t->path, &st) == 0 ? (uint64_t) st.st_size : 0;
  free (t->path);
  free (t);
  return ret;
}

int
rootfs_write_tar (const char *root, const char *tar_path, uint64_t *bytes, ps_error **err)
{
  rootfs_tar *t = rootfs_tar_new (tar_path, err);
  if (t == NULL)
    return -1;
  int ret = rootfs_tar_add (t, root, NULL, err);
  return rootfs_tar_finish (t, ret, bytes, err);
}

struct disk_out
{
  struct archive *out;
  const char *dest;
};

static int
emit_disk (struct archive *in, struct archive_entry *e, void *ud, ps_error **err)
{
  struct disk_out *d = ud;
  entry_under (e, d->dest);
  if (archive_write_header (d->out, e) < ARCHIVE_WARN)
    return ps_error_set (err, 500, "write %s: %s", archive_entry_pathname (e), archive_error_string (d->out));
  int r = copy_data (in, e, d->out, true, err);
  archive_write_finish_entry (d->out);
  return r;
}

int
rootfs_copy_dir (const char *root, const char *dest, ps_error **err)
{
  if (ps_libarchive_load (err) < 0 || ps_mkdir_p (dest, 0755, err) < 0)
    return -1;
  struct archive *out = archive_write_disk_new ();
  archive_write_disk_set_options (out, ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_OWNER
                                           | PS_ARCHIVE_EXTRACT_SECURE | ARCHIVE_EXTRACT_UNLINK);
  archive_write_disk_set_standard_lookup (out);
  struct disk_out d = { out, dest };
  int ret = walk_tree (root, emit_disk, &d, err);
  archive_write_close (out);
  archive_write_free (out);
  return ret;
}
