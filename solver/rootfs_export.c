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

#include <openssl/evp.h>

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

/* ---- overlay upper directories as OCI layers ---------------------------------------- */

struct layer_out
{
  struct archive *out;
  int fd;
  EVP_MD_CTX *md;
  uint64_t bytes;
};

static la_ssize_t
layer_write (struct archive *a, void *ud, const void *buf, size_t len)
{
  struct layer_out *l = ud;
  for (size_t off = 0; off < len;)
    {
      ssize_t w = write (l->fd, (const char *) buf + off, len - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        {
          archive_set_error (a, errno, "write: %s", strerror (errno));
          return -1;
        }
      off += (size_t) w;
    }
  EVP_DigestUpdate (l->md, buf, len);
  l->bytes += len;
  return (la_ssize_t) len;
}

/* An empty file entry `name` (a whiteout marker) with `e`'s times. */
static int
write_marker (struct layer_out *l, struct archive_entry *e, const char *name, ps_error **err)
{
  struct archive_entry *m = archive_entry_new ();
  archive_entry_set_pathname (m, name);
  archive_entry_set_filetype (m, AE_IFREG);
  archive_entry_set_perm (m, 0);
  archive_entry_set_size (m, 0);
  archive_entry_set_mtime (m, archive_entry_mtime (e), archive_entry_mtime_nsec (e));
  int w = archive_write_header (l->out, m);
  archive_entry_free (m);
  if (w < ARCHIVE_WARN)
    return ps_error_set (err, 500, "write %s: %s", name, archive_error_string (l->out));
  return 0;
}

static int
emit_layer (struct archive *in, struct archive_entry *e, void *ud, ps_error **err)
{
  struct layer_out *l = ud;
  const char *path = archive_entry_pathname (e);
  const char *slash = strrchr (path, '/');
  cleanup_free char *dir = slash ? xstrndup (path, (size_t) (slash - path + 1)) : xstrdup ("");
  const char *base = slash ? slash + 1 : path;
  if (archive_entry_filetype (e) == AE_IFCHR && archive_entry_rdev (e) == 0)
    {
      cleanup_free char *wh = xasprintf ("%s.wh.%s", dir, base);
      return write_marker (l, e, wh, err);
    }
  /* Keep every xattr but overlay's own; note an opaque directory. */
  bool opaque = false, dropped = false;
  ps_strv names = { 0 };
  struct kept
  {
    const void *v;
    size_t n;
  } *vals = NULL;
  size_t n_vals = 0;
  if (archive_entry_xattr_reset (e) > 0)
    {
      const char *name;
      const void *v;
      size_t n;
      while (archive_entry_xattr_next (e, &name, &v, &n) == ARCHIVE_OK)
        {
          if (strncmp (name, "trusted.overlay.", 16) == 0)
            {
              dropped = true;
              opaque |= strcmp (name, "trusted.overlay.opaque") == 0 && n >= 1 && ((const char *) v)[0] == 'y';
              continue;
            }
          ps_strv_push (&names, name);
          vals = xrealloc (vals, (n_vals + 1) * sizeof *vals);
          vals[n_vals].v = v;
          vals[n_vals++].n = n;
        }
    }
  if (dropped)
    {
      /* The kept values point into e's list: copy them before clearing it. */
      void **copies = xcalloc (n_vals + 1, sizeof *copies);
      for (size_t i = 0; i < n_vals; i++)
        {
          copies[i] = xmalloc (vals[i].n + 1);
          memcpy (copies[i], vals[i].v, vals[i].n);
        }
      archive_entry_xattr_clear (e);
      for (size_t i = 0; i < n_vals; i++)
        {
          archive_entry_xattr_add_entry (e, names.v[i], copies[i], vals[i].n);
          free (copies[i]);
        }
      free (copies);
    }
  free (vals);
  ps_strv_free (&names);
  if (archive_write_header (l->out, e) < ARCHIVE_WARN)
    return ps_error_set (err, 500, "write %s: %s", path, archive_error_string (l->out));
  if (archive_entry_filetype (e) == AE_IFDIR && opaque)
    {
      size_t pl = strlen (path);
      while (pl > 0 && path[pl - 1] == '/')
        pl--;
      cleanup_free char *opq = xasprintf ("%.*s/.wh..wh..opq", (int) pl, path);
      return write_marker (l, e, opq, err);
    }
  return copy_data (in, e, l->out, false, err);
}

int
rootfs_write_layer_tar (const char *upper, const char *tar_path, char **diff_id, uint64_t *bytes, ps_error **err)
{
  if (ps_libarchive_load (err) < 0)
    return -1;
  struct layer_out l = { 0 };
  l.fd = open (tar_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (l.fd < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", tar_path);
  l.md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (l.md, EVP_sha256 (), NULL);
  l.out = archive_write_new ();
  archive_write_add_filter_none (l.out);
  archive_write_set_format_pax_restricted (l.out);
  archive_write_set_bytes_in_last_block (l.out, 1);
  int ret = 0;
  if (archive_write_open (l.out, &l, NULL, layer_write, NULL) != ARCHIVE_OK)
    ret = ps_error_set (err, 500, "create %s: %s", tar_path, archive_error_string (l.out));
  if (ret == 0)
    ret = walk_tree (upper, emit_layer, &l, err);
  if (archive_write_close (l.out) != ARCHIVE_OK && ret == 0)
    ret = ps_error_set (err, 500, "write %s: %s", tar_path, archive_error_string (l.out));
  archive_write_free (l.out);
  if (close (l.fd) < 0 && ret == 0)
    ret = ps_error_set_errno (err, 500, errno, "write %s", tar_path);
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_DigestFinal_ex (l.md, md, &mdlen);
  EVP_MD_CTX_free (l.md);
  if (ret == 0)
    {
      char hex[65];
      for (int i = 0; i < 32; i++)
        sprintf (hex + 2 * i, "%02x", md[i]);
      *diff_id = xasprintf ("sha256:%s", hex);
      *bytes = l.bytes;
    }
  return ret;
}
