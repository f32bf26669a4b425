/* context_tar.c — the build context tar (see context_tar.h).
 *
 * The walk mirrors Docker's archive.TarWithOptions: a path the ignore file
 * excludes is left out; an excluded directory is skipped whole unless a
 * '!' pattern (or a kept path) could bring back something below it, in
 * which case it is walked but its own entry is not written (the daemon's
 * extractor creates missing parents).  The daemon applies the same rules
 * again after unpacking, so the two can only disagree by sending more. */
#define _GNU_SOURCE
#include "client/context_tar.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/cli.h"
#include "common/archive.h"
#include "common/limits.h"

/* Largest ignore file read: Docker reads any size, but a megabyte of
   patterns is certainly a mistake. */
#define CLI_MAX_IGNORE_FILE PS_MAX_IGNORE_FILE_BYTES

/* Bytes copied per read while archiving a file. */
#define CLI_COPY_CHUNK (128 * 1024)

int
cli_tmpfile (ps_error **err)
{
  const char *dir = getenv ("TMPDIR");
  if (dir == NULL || *dir == '\0')
    dir = "/tmp";
  cleanup_free char *tmpl = xasprintf ("%s/podsolve-XXXXXX", dir);
  int fd = mkostemp (tmpl, O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, 0, errno, "create a temporary file in %s", dir);
  unlink (tmpl);
  return fd;
}

ps_ignore *
cli_context_load_ignore (const char *context_dir, const char *dockerfile, const char *dockerfile_rel, char **used_rel,
                         ps_error **err)
{
  *used_rel = NULL;
  cleanup_free char *df_ignore = dockerfile ? xasprintf ("%s.dockerignore", dockerfile) : NULL;
  cleanup_free char *df_ignore_rel = dockerfile_rel ? xasprintf ("%s.dockerignore", dockerfile_rel) : NULL;
  cleanup_free char *containerignore = xasprintf ("%s/.containerignore", context_dir);
  cleanup_free char *dockerignore = xasprintf ("%s/.dockerignore", context_dir);
  const char *candidates[][2] = {
    { df_ignore, df_ignore_rel },
    { containerignore, ".containerignore" },
    { dockerignore, ".dockerignore" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (candidates); i++)
    {
      const char *path = candidates[i][0];
      struct stat st;
      if (path == NULL || stat (path, &st) < 0 || !S_ISREG (st.st_mode))
        continue;
      cleanup_free char *text = NULL;
      size_t len = 0;
      if (ps_read_file (path, CLI_MAX_IGNORE_FILE, &text, &len, err) < 0)
        return NULL;
      ps_ignore *ig = ps_ignore_parse (text, len, err);
      if (ig == NULL)
        {
          ps_error_wrap (err, "%s", path);
          return NULL;
        }
      *used_rel = candidates[i][1] ? xstrdup (candidates[i][1]) : NULL;
      return ig;
    }
  return NULL;
}

/* ---- the walk ------------------------------------------------------------------ */

struct walk
{
  struct archive *ar;
  const ps_ignore *ig;
  const char *const *keep;
  size_t n_keep;
  bool exceptions;
  struct cli_context_stats *stats;
  char *buf; /* CLI_COPY_CHUNK bytes */
};

static bool
is_kept (const struct walk *w, const char *rel)
{
  for (size_t i = 0; i < w->n_keep; i++)
    if (w->keep[i] && strcmp (w->keep[i], rel) == 0)
      return true;
  return false;
}

static bool
keeps_below (const struct walk *w, const char *rel)
{
  size_t n = strlen (rel);
  for (size_t i = 0; i < w->n_keep; i++)
    if (w->keep[i] && strncmp (w->keep[i], rel, n) == 0 && w->keep[i][n] == '/')
      return true;
  return false;
}

/* The names in the directory `dirfd`, sorted so the tar is reproducible. */
static int
list_dir (int dirfd, const char *rel, ps_strv *names, ps_error **err)
{
  const char *step;
  if (ps_list_dir_at (dirfd, true, names, &step) < 0)
    return ps_error_set_errno (err, 0, errno, "read directory %s", rel[0] ? rel : ".");
  return 0;
}

static int
archive_failed (struct walk *w, const char *rel, ps_error **err)
{
  const char *msg = archive_error_string (w->ar);
  return ps_error_set (err, 0, "archive %s: %s", rel, msg ? msg : "write failed");
}

static int
copy_file (struct walk *w, int fd, const char *rel, ps_error **err)
{
  for (;;)
    {
      ssize_t r = read (fd, w->buf, CLI_COPY_CHUNK);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return ps_error_set_errno (err, 0, errno, "read %s", rel);
      if (r == 0)
        return 0;
      /* a file that grew while we read it is cut at the size in its header */
      if (archive_write_data (w->ar, w->buf, (size_t) r) < 0)
        return archive_failed (w, rel, err);
      w->stats->bytes += (uint64_t) r;
    }
}

/* One entry named `rel`, described by `st`.  A symlink's target is read
   from `name` in `dirfd`; a regular file's bytes from `content_fd`. */
static int
write_entry (struct walk *w, int dirfd, const char *name, const char *rel, const struct stat *st, int content_fd,
             ps_error **err)
{
  struct archive_entry *e = archive_entry_new ();
  archive_entry_set_pathname (e, rel);
  archive_entry_set_perm (e, st->st_mode & 07777);
  archive_entry_set_uid (e, 0);
  archive_entry_set_gid (e, 0);
  archive_entry_set_mtime (e, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
  if (S_ISDIR (st->st_mode))
    archive_entry_set_filetype (e, AE_IFDIR);
  else if (S_ISLNK (st->st_mode))
    {
      char target[PATH_MAX];
      ssize_t n = readlinkat (dirfd, name, target, sizeof target - 1);
      if (n < 0)
        {
          archive_entry_free (e);
          return ps_error_set_errno (err, 0, errno, "read link %s", rel);
        }
      target[n] = '\0';
      archive_entry_set_filetype (e, AE_IFLNK);
      archive_entry_set_symlink (e, target);
    }
  else
    {
      archive_entry_set_filetype (e, AE_IFREG);
      archive_entry_set_size (e, st->st_size);
    }
  int r = archive_write_header (w->ar, e);
  archive_entry_free (e);
  if (r < ARCHIVE_WARN)
    return archive_failed (w, rel, err);
  w->stats->entries++;
  if (S_ISREG (st->st_mode) && copy_file (w, content_fd, rel, err) < 0)
    return -1;
  if (archive_write_finish_entry (w->ar) < ARCHIVE_WARN)
    return archive_failed (w, rel, err);
  return 0;
}

/* A regular file: opened first and described by fstat, so the size in its
   header is the size of what we read, even if the path is replaced. */
static int
write_file (struct walk *w, int dirfd, const char *name, const char *rel, ps_error **err)
{
  cleanup_close int fd = openat (dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0)
    return ps_error_set_errno (err, 0, errno, "open %s", rel);
  if (!S_ISREG (st.st_mode))
    return 0; /* replaced while we walk */
  return write_entry (w, dirfd, name, rel, &st, fd, err);
}

static int walk_dir (struct walk *w, int dirfd, const char *rel, ps_error **err);

static int
walk_entry (struct walk *w, int dirfd, const char *rel, const char *name, ps_error **err)
{
  if (cli_interrupted)
    return ps_error_set (err, 0, "interrupted");
  cleanup_free char *child = rel[0] ? xasprintf ("%s/%s", rel, name) : xstrdup (name);
  struct stat st;
  if (fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return 0; /* removed while we walk */
      return ps_error_set_errno (err, 0, errno, "stat %s", child);
    }
  bool kept = is_kept (w, child);
  bool excluded = !kept && ps_ignore_matches (w->ig, child);

  if (!S_ISDIR (st.st_mode))
    {
      if (excluded)
        return 0;
      if (S_ISREG (st.st_mode))
        return write_file (w, dirfd, name, child, err);
      if (S_ISLNK (st.st_mode))
        return write_entry (w, dirfd, name, child, &st, -1, err);
      w->stats->skipped++;
      return 0;
    }

  if (excluded && !w->exceptions && !keeps_below (w, child))
    return 0;
  if (!excluded && write_entry (w, dirfd, name, child, &st, -1, err) < 0)
    return -1;
  cleanup_close int fd = openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, 0, errno, "open directory %s", child);
  return walk_dir (w, fd, child, err);
}

static int
walk_dir (struct walk *w, int dirfd, const char *rel, ps_error **err)
{
  ps_strv names = { 0 };
  int ret = list_dir (dirfd, rel, &names, err);
  for (size_t i = 0; ret == 0 && i < names.n; i++)
    ret = walk_entry (w, dirfd, rel, names.v[i], err);
  ps_strv_free (&names);
  return ret;
}

static struct archive *
tar_writer (int fd)
{
  struct archive *ar = archive_write_new ();
  if (ar == NULL)
    abort ();
  /* pax: names and sizes without ustar's limits; "restricted" writes the
     extended header only when an entry needs it. */
  archive_write_set_format_pax_restricted (ar);
  archive_write_add_filter_none (ar);
  archive_write_set_bytes_in_last_block (ar, 1);
  if (archive_write_open_fd (ar, fd) != ARCHIVE_OK)
    {
      archive_write_free (ar);
      return NULL;
    }
  return ar;
}

static int
tar_close (struct archive *ar, int ret, ps_error **err)
{
  if (archive_write_close (ar) != ARCHIVE_OK && ret == 0)
    {
      const char *msg = archive_error_string (ar);
      ret = ps_error_set (err, 0, "finish the tar: %s", msg ? msg : "write failed");
    }
  archive_write_free (ar);
  return ret;
}

int
cli_context_tar (const char *context_dir, const ps_ignore *ig, const char *const *keep, size_t n_keep, int fd,
                 struct cli_context_stats *stats, ps_error **err)
{
  memset (stats, 0, sizeof *stats);
  if (ps_libarchive_load (err) < 0)
    return -1;
  cleanup_close int root = open (context_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    return ps_error_set_errno (err, 0, errno, "open context directory %s", context_dir);
  struct archive *ar = tar_writer (fd);
  if (ar == NULL)
    return ps_error_set (err, 0, "start the context tar");
  cleanup_free char *buf = xmalloc (CLI_COPY_CHUNK);
  struct walk w = {
    .ar = ar,
    .ig = ig,
    .keep = keep,
    .n_keep = n_keep,
    .exceptions = ps_ignore_has_exceptions (ig),
    .stats = stats,
    .buf = buf,
  };
  int ret = walk_dir (&w, root, "", err);
  ret = tar_close (ar, ret, err);
  if (ret < 0)
    return ps_error_wrap (err, "context %s", context_dir);
  return 0;
}

int
cli_context_tar_file (int src_fd, const char *name, int fd, ps_error **err)
{
  struct stat st;
  if (ps_libarchive_load (err) < 0)
    return -1;
  if (fstat (src_fd, &st) < 0)
    return ps_error_set_errno (err, 0, errno, "stat %s", name);
  if (!S_ISREG (st.st_mode))
    return ps_error_set (err, 0, "%s is not a regular file", name);
  struct archive *ar = tar_writer (fd);
  if (ar == NULL)
    return ps_error_set (err, 0, "start the tar of %s", name);
  struct cli_context_stats stats = { 0 };
  cleanup_free char *buf = xmalloc (CLI_COPY_CHUNK);
  struct walk w = { .ar = ar, .stats = &stats, .buf = buf };
  int ret = 0;
  if (lseek (src_fd, 0, SEEK_SET) < 0)
    ret = ps_error_set_errno (err, 0, errno, "rewind %s", name);
  else
    ret = write_entry (&w, -1, NULL, name, &st, src_fd, err);
  return tar_close (ar, ret, err);
}
