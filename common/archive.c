/* archive.c — libarchive helpers shared by the daemon and the CLI. */
#define _GNU_SOURCE
#include "common/archive.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Bytes libarchive reads from the tar at a time. */
#define EXTRACT_READ_BLOCK (64 * 1024)

void
ps_archive_freep (struct archive **a)
{
  if (*a != NULL)
    archive_free (*a);
}

int
ps_archive_copy_data (struct archive *in, struct archive *out, bool to_disk, ps_archive_block_fn on_block,
                      void *ud)
{
  for (;;)
    {
      const void *buf;
      size_t size;
      la_int64_t offset;
      int r = archive_read_data_block (in, &buf, &size, &offset);
      if (r == ARCHIVE_EOF)
        return PS_ARCHIVE_COPY_DONE;
      if (r < ARCHIVE_WARN)
        return PS_ARCHIVE_COPY_READ_ERROR;
      if (on_block != NULL && on_block (ud, size) < 0)
        return PS_ARCHIVE_COPY_REFUSED;
      if (size == 0)
        continue;
      la_ssize_t w = to_disk ? archive_write_data_block (out, buf, size, offset) : archive_write_data (out, buf, size);
      if (w < ARCHIVE_WARN)
        return PS_ARCHIVE_COPY_WRITE_ERROR;
    }
}

/* ---- safe extraction -------------------------------------------------------- */

struct extract
{
  const struct ps_extract_opts *o;
  const char *root; /* realpath of the destination */
  struct archive *in, *out;
};

/* `name` without leading "./" and "/" runs; NULL when it is absolute or
   climbs with "..", "" for the root entry itself. */
static const char *
contained_name (const char *name)
{
  bool absolute = name[0] == '/';
  while (ps_str_has_prefix (name, "./"))
    name += 2;
  if (*name == '\0' || strcmp (name, ".") == 0)
    return "";
  if (absolute || !ps_path_is_contained (name))
    return NULL;
  return name;
}

static int
archive_failed (const struct extract *x, struct archive *a, const char *what, const char *name, ps_error **err)
{
  const char *msg = archive_error_string (a);
  return ps_error_set (err, x->o->status, "%s %s: %s", what, name, msg ? msg : "failed");
}

static int
extract_data (const struct extract *x, const char *name, ps_error **err)
{
  switch (ps_archive_copy_data (x->in, x->out, true, NULL, NULL))
    {
    case PS_ARCHIVE_COPY_READ_ERROR:
      return archive_failed (x, x->in, "read", name, err);
    case PS_ARCHIVE_COPY_WRITE_ERROR:
      return archive_failed (x, x->out, "write", name, err);
    default:
      return 0;
    }
}

/* One entry; returns 1 when it was skipped. */
static int
extract_entry (const struct extract *x, struct archive_entry *e, ps_error **err)
{
  cleanup_free char *orig = xstrdup (archive_entry_pathname (e) ? archive_entry_pathname (e) : "");
  const char *name = contained_name (orig);
  if (name == NULL)
    return ps_error_set (err, x->o->status, "refusing tar entry \"%s\": it would land outside the destination", orig);
  if (*name == '\0')
    return 1;
  const char *link = archive_entry_hardlink (e);
  if (link)
    {
      cleanup_free char *orig_link = xstrdup (link);
      const char *target = contained_name (orig_link);
      if (target == NULL || *target == '\0')
        return ps_error_set (err, x->o->status,
                             "refusing tar entry \"%s\": a hard link to \"%s\", outside the destination", orig,
                             orig_link);
      cleanup_free char *full_link = xasprintf ("%s/%s", x->root, target);
      archive_entry_set_hardlink (e, full_link);
    }
  else
    switch (archive_entry_filetype (e))
      {
      case AE_IFREG:
      case AE_IFDIR:
      case AE_IFLNK:
        break;
      default:
        return 1; /* devices, fifos, sockets: not files a user wants */
      }
  cleanup_free char *full = xasprintf ("%s/%s", x->root, name);
  archive_entry_set_pathname (e, full);
  if (archive_write_header (x->out, e) < ARCHIVE_WARN)
    return archive_failed (x, x->out, "write", orig, err);
  if (archive_entry_size (e) > 0 && extract_data (x, orig, err) < 0)
    return -1;
  if (archive_write_finish_entry (x->out) < ARCHIVE_WARN)
    return archive_failed (x, x->out, "write", orig, err);
  return 0;
}

int
ps_archive_extract_fd (int fd, const char *dest, const struct ps_extract_opts *o, ps_error **err)
{
  /* SECURE_SYMLINKS judges every element of the full path, the
     destination's own ancestors included: hand it a path without any. */
  if (ps_libarchive_load (err) < 0)
    return -1;
  cleanup_free char *root = realpath (dest, NULL);
  if (root == NULL)
    return ps_error_set_errno (err, o->status, errno, "enter %s", dest);
  cleanup_archive struct archive *in = archive_read_new ();
  cleanup_archive struct archive *out = archive_write_disk_new ();
  if (in == NULL || out == NULL)
    abort ();
  archive_read_support_format_tar (in);
  archive_read_support_filter_all (in);
  /* Not SECURE_NOABSOLUTEPATHS: the paths we hand over are absolute (under
     root); the archive's own absolute names were refused above. */
  int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | PS_ARCHIVE_EXTRACT_SECURE;
  if (o->owner)
    {
      flags |= ARCHIVE_EXTRACT_OWNER;
      archive_write_disk_set_standard_lookup (out);
    }
  archive_write_disk_set_options (out, flags);
  struct extract x = { .o = o, .root = root, .in = in, .out = out };

  int ret = 0;
  if (archive_read_open_fd (in, fd, EXTRACT_READ_BLOCK) != ARCHIVE_OK)
    ret = archive_failed (&x, in, "read", x.o->label, err);
  while (ret == 0)
    {
      if (o->interrupted && *o->interrupted)
        {
          ret = ps_error_set (err, o->status, "interrupted");
          break;
        }
      struct archive_entry *e;
      int r = archive_read_next_header (in, &e);
      if (r == ARCHIVE_EOF)
        break;
      if (r < ARCHIVE_WARN)
        ret = archive_failed (&x, in, "read", x.o->label, err);
      else if (extract_entry (&x, e, err) < 0)
        ret = -1;
    }
  /* close applies the deferred directory modes and times, even after a
     failure, so what was written can be removed by its owner */
  if (archive_write_close (out) != ARCHIVE_OK && ret == 0)
    ret = archive_failed (&x, out, "finish", "the extraction", err);
  return ret;
}
