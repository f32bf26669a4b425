/* extract.c — unpacking a local output (a tar of the image filesystem)
 * into a directory on this machine, without letting any entry land
 * outside it (see cli_extract_tar in outputs.h).
 *
 * Every name is checked here (no absolute names, no ".." elements, hard
 * link targets too), and libarchive's SECURE_* flags check the same again
 * plus what only the disk knows: no entry is written through a symlink,
 * whether the tar made it earlier or it was already in the directory.
 * Those flags judge the full path given to libarchive, so extraction runs
 * with the destination as the working directory and names relative to it;
 * the previous working directory is restored afterwards. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/cli.h"
#include "common/archive.h"
#include "client/outputs.h"

/* Bytes libarchive reads from the tar at a time. */
#define CLI_EXTRACT_BLOCK (64 * 1024)

/* `name` without leading "./" and "/" runs; NULL when it is absolute or
   climbs with "..", "" for the root entry itself. */
static const char *
contained_name (const char *name, bool *absolute)
{
  *absolute = name[0] == '/';
  while (ps_str_has_prefix (name, "./"))
    name += 2;
  if (*name == '\0' || strcmp (name, ".") == 0)
    return "";
  if (*absolute || !ps_path_is_contained (name))
    return NULL;
  return name;
}

static int
archive_failed (struct archive *a, const char *what, const char *name, ps_error **err)
{
  const char *msg = archive_error_string (a);
  return ps_error_set (err, 0, "%s %s: %s", what, name, msg ? msg : "failed");
}

static int
copy_data (struct archive *in, struct archive *out, const char *name, ps_error **err)
{
  switch (ps_archive_copy_data (in, out, true, NULL, NULL))
    {
    case PS_ARCHIVE_COPY_READ_ERROR:
      return archive_failed (in, "read", name, err);
    case PS_ARCHIVE_COPY_WRITE_ERROR:
      return archive_failed (out, "write", name, err);
    default:
      return 0;
    }
}

/* One entry; returns 1 when it was skipped. */
static int
extract_entry (struct archive *in, struct archive *out, struct archive_entry *e, ps_error **err)
{
  cleanup_free char *orig = xstrdup (archive_entry_pathname (e) ? archive_entry_pathname (e) : "");
  bool absolute;
  const char *name = contained_name (orig, &absolute);
  if (name == NULL)
    return ps_error_set (err, 0, "refusing tar entry \"%s\": it would land outside the destination", orig);
  if (*name == '\0')
    return 1;
  const char *link = archive_entry_hardlink (e);
  if (link)
    {
      cleanup_free char *orig_link = xstrdup (link);
      const char *target = contained_name (orig_link, &absolute);
      if (target == NULL || *target == '\0')
        return ps_error_set (err, 0, "refusing tar entry \"%s\": a hard link to \"%s\", outside the destination", orig,
                             orig_link);
      archive_entry_set_hardlink (e, target);
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
  archive_entry_set_pathname (e, name);
  if (archive_write_header (out, e) < ARCHIVE_WARN)
    return archive_failed (out, "write", orig, err);
  if (archive_entry_size (e) > 0 && copy_data (in, out, orig, err) < 0)
    return -1;
  if (archive_write_finish_entry (out) < ARCHIVE_WARN)
    return archive_failed (out, "write", orig, err);
  return 0;
}

static int
extract_here (int fd, ps_error **err)
{
  struct archive *in = archive_read_new ();
  struct archive *out = archive_write_disk_new ();
  if (in == NULL || out == NULL)
    abort ();
  archive_read_support_format_tar (in);
  archive_read_support_filter_all (in);
  int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | PS_ARCHIVE_EXTRACT_SECURE
              | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
  if (geteuid () == 0)
    {
      flags |= ARCHIVE_EXTRACT_OWNER;
      archive_write_disk_set_standard_lookup (out);
    }
  archive_write_disk_set_options (out, flags);

  int ret = 0;
  if (archive_read_open_fd (in, fd, CLI_EXTRACT_BLOCK) != ARCHIVE_OK)
    ret = archive_failed (in, "read", "the output tar", err);
  while (ret == 0)
    {
      if (cli_interrupted)
        {
          ret = ps_error_set (err, 0, "interrupted");
          break;
        }
      struct archive_entry *e;
      int r = archive_read_next_header (in, &e);
      if (r == ARCHIVE_EOF)
        break;
      if (r < ARCHIVE_WARN)
        ret = archive_failed (in, "read", "the output tar", err);
      else if (extract_entry (in, out, e, err) < 0)
        ret = -1;
    }
  /* close applies the deferred directory modes and times, even after a
     failure, so what was written can be removed by its owner */
  if (archive_write_close (out) != ARCHIVE_OK && ret == 0)
    ret = archive_failed (out, "finish", "the extraction", err);
  archive_write_free (out);
  archive_read_free (in);
  return ret;
}

int
cli_extract_tar (int fd, const char *dest, ps_error **err)
{
  if (ps_mkdir_p (dest, 0755, err) < 0)
    return -1;
  cleanup_close int cwd = open (".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cwd < 0)
    return ps_error_set_errno (err, 0, errno, "open the working directory");
  cleanup_close int dfd = open (dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fchdir (dfd) < 0)
    return ps_error_set_errno (err, 0, errno, "enter %s", dest);
  int ret = extract_here (fd, err);
  if (fchdir (cwd) < 0 && ret == 0)
    ret = ps_error_set_errno (err, 0, errno, "return to the working directory");
  if (ret < 0)
    return ps_error_wrap (err, "extract into %s", dest);
  return 0;
}
