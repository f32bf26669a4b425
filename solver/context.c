/* context.c — build context intake: unpack an untrusted tar stream into a
 * directory podsolved owns, then apply the ignore file.
 *
 * libarchive does the reading (tar, GNU tar, pax; gzip, bzip2, xz, zstd)
 * and the writing (archive_write_disk, with its own SECURE_* checks), but
 * every entry is first checked here against the tree already on disk, so
 * the safety of the context does not rest on one library's flags alone:
 *
 *   name      cleaned element by element; absolute, ".." or too long -> 400
 *   type      regular, directory, symlink, hard link; nothing else -> 400
 *   parents   looked up with O_NOFOLLOW from the context root: a symlink or
 *             a non-directory on the way -> 400 (a symlink in the context may
 *             point anywhere; nothing is ever written through one)
 *   itself    an existing symlink is removed first, so it is replaced rather
 *             than followed; an existing directory is never replaced by a
 *             non-directory (libarchive fixes directory modes by path when it
 *             closes, so a directory must stay a directory)
 *   hard link must name a regular file an earlier entry created -> else 400
 *   limits    entry count, regular-file bytes and raw body bytes -> 413
 *
 * Paths handed to libarchive are absolute (realpath of dest + "/" + clean
 * name): the daemon is multi-threaded, so chdir() is not an option.  That
 * is why ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS is not set (it would refuse
 * our own prefix); absolute names from the archive are refused above.  dest
 * is resolved with realpath() because SECURE_SYMLINKS checks every element
 * of the path, the root's own ancestors included.  Full paths are kept below
 * PATH_MAX: beyond it libarchive's edit_deep_directories() calls chdir().
 */
#define _GNU_SOURCE
#include "solver/context.h"

#include "common/archive.h"
#include "common/limits.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read size for the client's stream. */
#define CONTEXT_READ_BLOCK (64 * 1024)

/* Longest entry name quoted in an error message. */
#define CONTEXT_MSG_NAME_MAX 200

/* Deliberately not ARCHIVE_EXTRACT_OWNER (files belong to podsolved) nor
   ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS (see the top of the file). */
#define CONTEXT_EXTRACT_FLAGS (PS_ARCHIVE_EXTRACT_SECURE | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME)

/* libarchive's ARCHIVE_ERRNO_MISC (archive_private.h, not installed): the
   "errno" its own checks report, as opposed to a system call's. */
#define LA_ERRNO_MISC (-1)

/* ---- small helpers ---------------------------------------------------------- */

/* `s` in double quotes for an error message: quotes, backslashes and
   control bytes escaped, long names cut, so a hostile name can neither
   break the message nor flood it. */
static char *
quote_name (const char *s)
{
  ps_buf b = { 0 };
  ps_buf_puts (&b, "\"");
  size_t i = 0;
  for (; s[i] != '\0' && i < CONTEXT_MSG_NAME_MAX; i++)
    {
      unsigned char c = (unsigned char) s[i];
      if (c == '"' || c == '\\')
        ps_buf_printf (&b, "\\%c", c);
      else if (c < 0x20 || c == 0x7f)
        ps_buf_printf (&b, "\\x%02x", c);
      else
        ps_buf_append (&b, &s[i], 1);
    }
  if (s[i] != '\0')
    ps_buf_puts (&b, "...");
  ps_buf_puts (&b, "\"");
  return ps_buf_steal (&b);
}

enum clean_result
{
  CLEAN_OK,
  CLEAN_ROOT,     /* "", ".", "./": the context root itself */
  CLEAN_ABSOLUTE, /* leading '/' */
  CLEAN_DOTDOT,   /* a ".." element */
};

/* Drop empty and "." elements; refuse absolute names and any "..": even an
   inner "a/../b" is refused, as a tar that needs it is not a context. */
static enum clean_result
clean_relative (const char *raw, char **out)
{
  *out = NULL;
  if (raw[0] == '/')
    return CLEAN_ABSOLUTE;
  ps_buf b = { 0 };
  const char *p = raw;
  while (*p)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      if (n == 2 && p[0] == '.' && p[1] == '.')
        {
          ps_buf_free (&b);
          return CLEAN_DOTDOT;
        }
      if (n > 0 && !(n == 1 && p[0] == '.'))
        {
          if (b.len > 0)
            ps_buf_append (&b, "/", 1);
          ps_buf_append (&b, p, n);
        }
      p += n + (slash ? 1 : 0);
    }
  if (b.len == 0)
    {
      ps_buf_free (&b);
      return CLEAN_ROOT;
    }
  *out = ps_buf_steal (&b);
  return CLEAN_OK;
}

/* ---- the regular files seen so far, for hard links ---------------------------- */

/* 64-bit hashes of names, not the names: a million 3 KiB names would
   otherwise be 3 GB.  A collision could only let a hard link name a file
   that some other entry created, which the on-disk check still requires
   to be a regular file inside the context. */
struct name_set
{
  uint64_t *slot; /* 0 = empty */
  size_t cap, n;
};

static uint64_t
hash_name (const char *s)
{
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char) *s) * 1099511628211ULL;
  return h ? h : 1;
}

static bool
name_set_has (const struct name_set *set, const char *name)
{
  if (set->cap == 0)
    return false;
  uint64_t h = hash_name (name);
  for (size_t i = h & (set->cap - 1);; i = (i + 1) & (set->cap - 1))
    {
      if (set->slot[i] == 0)
        return false;
      if (set->slot[i] == h)
        return true;
    }
}

static void
name_set_put (struct name_set *set, uint64_t h)
{
  for (size_t i = h & (set->cap - 1);; i = (i + 1) & (set->cap - 1))
    {
      if (set->slot[i] == h)
        return;
      if (set->slot[i] == 0)
        {
          set->slot[i] = h;
          set->n++;
          return;
        }
    }
}

static void
name_set_add (struct name_set *set, const char *name)
{
  if (2 * (set->n + 1) > set->cap)
    {
      size_t cap = set->cap ? set->cap * 2 : 64;
      struct name_set bigger = { xcalloc (cap, sizeof (uint64_t)), cap, 0 };
      for (size_t i = 0; i < set->cap; i++)
        if (set->slot[i] != 0)
          name_set_put (&bigger, set->slot[i]);
      free (set->slot);
      *set = bigger;
    }
  name_set_put (set, hash_name (name));
}

static void
name_set_free (struct name_set *set)
{
  free (set->slot);
  set->slot = NULL;
  set->cap = set->n = 0;
}

/* ---- looking at the tree without following symlinks ----------------------- */

/* Open the directory that holds `rel` (a clean relative name), walking from
   root_fd one element at a time with O_NOFOLLOW.  Returns 0 with *parent_fd
   set (caller closes) and *last pointing into `rel`; 1 when some parent does
   not exist yet (so nothing below it does either); -1 with *err set (400) when
   a parent is a symlink or not a directory, naming `entry` (quoted). */
static int
open_parent_nofollow (int root_fd, const char *rel, const char *entry, int *parent_fd,
                      const char **last, ps_error **err)
{
  cleanup_close int cur = openat (root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (cur < 0)
    return ps_error_set_errno (err, 500, errno, "open build context directory");
  cleanup_free char *buf = xstrdup (rel); /* each '/' in turn becomes a NUL */
  char *elem = buf;
  for (char *slash; (slash = strchr (elem, '/')) != NULL; elem = slash + 1)
    {
      *slash = '\0';
      struct stat st;
      if (fstatat (cur, elem, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          if (errno == ENOENT)
            return 1;
          return ps_error_set_errno (err, 500, errno, "context entry %s: stat", entry);
        }
      if (!S_ISDIR (st.st_mode))
        {
          cleanup_free char *prefix = xstrndup (rel, (size_t) (slash - buf));
          cleanup_free char *qprefix = quote_name (prefix);
          if (S_ISLNK (st.st_mode))
            return ps_error_set (err, 400,
                                 "context entry %s would be written through the symlink %s", entry,
                                 qprefix);
          return ps_error_set (err, 400, "context entry %s is below %s, which is not a directory",
                               entry, qprefix);
        }
      int next = openat (cur, elem, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (next < 0)
        return ps_error_set_errno (err, 500, errno, "context entry %s: open parent", entry);
      close (cur);
      cur = next;
    }
  *last = rel + (elem - buf);
  *parent_fd = cur;
  cur = -1;
  return 0;
}

/* ---- extraction ------------------------------------------------------------ */

struct extract
{
  struct archive *in, *out;
  int root_fd;
  const char *root;
  size_t root_len;
  uint64_t max_bytes;
  size_t max_entries;
  size_t headers;
  struct name_set files;
  struct ps_context_stats st;
};

static int
over_bytes (const struct extract *x, ps_error **err)
{
  return ps_error_set (err, 413, "build context exceeds --max-context-bytes (%llu bytes)",
                       (unsigned long long) x->max_bytes);
}

/* The raw body (compressed or not) is bounded as well as the files in it:
   a tar of empty files padded with huge headers is still a huge upload. */
static int
check_body_bytes (const struct extract *x, ps_error **err)
{
  int64_t raw = archive_filter_bytes (x->in, -1);
  if (raw > 0 && (uint64_t) raw > x->max_bytes)
    return over_bytes (x, err);
  return 0;
}

/* Errors that are ours, not the client's: reading a body that broke off
   or held garbage is the client's problem (400). */
static bool
is_system_error (int e)
{
  return e == ENOMEM || e == EBADF || e == EIO || e == EFAULT;
}

/* A failure from the reading side: the client's stream is bad (400), or
   something is wrong on our side (500). */
static int
read_error (const struct extract *x, const char *what, ps_error **err)
{
  int status = is_system_error (archive_errno (x->in)) ? 500 : 400;
  const char *msg = archive_error_string (x->in);
  return ps_error_set (err, status, "build context: %s: %s", what, msg ? msg : "read error");
}

static int
not_a_tar (const struct extract *x, ps_error **err)
{
  if (is_system_error (archive_errno (x->in)))
    return read_error (x, "read", err);
  return ps_error_set (err, 400, "build context is not a tar archive");
}

/* A failure from the writing side.  Our own checks ran first, so what
   libarchive still refuses (its security checks report LA_ERRNO_MISC or 0)
   or what the kernel refuses about names and types is the entry's fault
   (400); the rest is ours: a full disk 507 (ps_write_errno_status), EIO,
   EACCES... 500. */
static int
write_error (const struct extract *x, const char *qname, ps_error **err)
{
  int e = archive_errno (x->out);
  bool entry_fault = e == 0 || e == LA_ERRNO_MISC || e == ENAMETOOLONG || e == ENOTDIR
                     || e == EISDIR || e == EEXIST || e == ELOOP || e == EINVAL || e == EILSEQ;
  const char *msg = archive_error_string (x->out);
  return ps_error_set (err, entry_fault ? 400 : ps_write_errno_status (e), "write context entry %s: %s", qname,
                       msg ? msg : "write error");
}

static const char *
entry_name (struct archive_entry *e)
{
  const char *s = archive_entry_pathname (e);
  return s ? s : archive_entry_pathname_utf8 (e);
}

static const char *
entry_hardlink (struct archive_entry *e)
{
  const char *s = archive_entry_hardlink (e);
  return s ? s : archive_entry_hardlink_utf8 (e);
}

/* Check a hard link's target; on success *full is its absolute path. */
static int
check_hardlink (struct extract *x, const char *rel, const char *qname, const char *target,
                char **full, ps_error **err)
{
  cleanup_free char *clean = NULL;
  cleanup_free char *qtarget = quote_name (target);
  enum clean_result cr = clean_relative (target, &clean);
  if (cr != CLEAN_OK || !name_set_has (&x->files, clean) || strcmp (clean, rel) == 0)
    return ps_error_set (err, 400,
                         "context entry %s is a hard link to %s, which is not an earlier file "
                         "in the build context",
                         qname, qtarget);

  /* The name was a file when it was written; it must still be one now,
     reached without symlinks (a later entry may have replaced it). */
  cleanup_close int parent = -1;
  const char *last = NULL;
  int r = open_parent_nofollow (x->root_fd, clean, qname, &parent, &last, err);
  if (r < 0)
    return -1;
  struct stat st;
  if (r > 0 || fstatat (parent, last, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG (st.st_mode))
    return ps_error_set (err, 400,
                         "context entry %s is a hard link to %s, which is no longer a regular file",
                         qname, qtarget);
  *full = xasprintf ("%s/%s", x->root, clean);
  return 0;
}

/* Make sure writing `rel` touches nothing but `rel` itself. */
static int
prepare_target (struct extract *x, const char *rel, const char *qname, bool is_dir, ps_error **err)
{
  cleanup_close int parent = -1;
  const char *last = NULL;
  int r = open_parent_nofollow (x->root_fd, rel, qname, &parent, &last, err);
  if (r != 0)
    return r < 0 ? -1 : 0; /* a missing parent: libarchive creates a fresh one */
  struct stat st;
  if (fstatat (parent, last, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return 0;
      return ps_error_set_errno (err, 500, errno, "context entry %s: stat", qname);
    }
  if (S_ISDIR (st.st_mode))
    {
      if (!is_dir)
        return ps_error_set (err, 400, "context entry %s would replace a directory", qname);
      return 0;
    }
  /* A symlink (or file) of the same name from an earlier entry: replace it,
     never write through it. */
  if (S_ISLNK (st.st_mode) && unlinkat (parent, last, 0) < 0)
    return ps_error_set_errno (err, 500, errno, "context entry %s: remove earlier symlink", qname);
  return 0;
}

struct copy_check
{
  struct extract *x;
  ps_error **err;
};

/* Each block read counts against the unpacked and the body limits. */
static int
copy_block (void *ud, size_t size)
{
  struct copy_check *c = ud;
  struct extract *x = c->x;
  if (size > x->max_bytes - x->st.bytes)
    return over_bytes (x, c->err);
  x->st.bytes += size;
  return check_body_bytes (x, c->err);
}

static int
copy_data (struct extract *x, const char *qname, ps_error **err)
{
  struct copy_check c = { x, err };
  switch (ps_archive_copy_data (x->in, x->out, true, copy_block, &c))
    {
    case PS_ARCHIVE_COPY_READ_ERROR:
      {
        cleanup_free char *what = xasprintf ("read entry %s", qname);
        return read_error (x, what, err);
      }
    case PS_ARCHIVE_COPY_WRITE_ERROR:
      return write_error (x, qname, err);
    case PS_ARCHIVE_COPY_REFUSED:
      return -1;
    default:
      return 0;
    }
}

static int
extract_entry (struct extract *x, struct archive_entry *e, ps_error **err)
{
  const char *raw = entry_name (e);
  if (raw == NULL || raw[0] == '\0')
    return ps_error_set (err, 400, "context entry #%zu has no usable name", x->headers);
  cleanup_free char *qname = quote_name (raw);
  const char *hardlink = entry_hardlink (e);
  mode_t type = archive_entry_filetype (e);

  if (hardlink == NULL)
    switch (type)
      {
      case AE_IFREG:
      case AE_IFDIR:
      case AE_IFLNK:
        break;
      case AE_IFCHR:
      case AE_IFBLK:
        return ps_error_set (err, 400, "context entry %s is a device node", qname);
      case AE_IFIFO:
        return ps_error_set (err, 400, "context entry %s is a fifo", qname);
      case AE_IFSOCK:
        return ps_error_set (err, 400, "context entry %s is a socket", qname);
      default:
        return ps_error_set (err, 400, "context entry %s has an unsupported type", qname);
      }

  cleanup_free char *rel = NULL;
  switch (clean_relative (raw, &rel))
    {
    case CLEAN_ABSOLUTE:
      return ps_error_set (err, 400, "context entry %s is an absolute path", qname);
    case CLEAN_DOTDOT:
      return ps_error_set (err, 400, "context entry %s escapes the build context", qname);
    case CLEAN_ROOT:
      /* "./" from GNU tar: the root is ours, keep its mode and times. */
      if (hardlink != NULL || type != AE_IFDIR)
        return ps_error_set (err, 400,
                             "context entry %s names the context root but is not a directory",
                             qname);
      return 0;
    case CLEAN_OK:
      break;
    }
  size_t rel_len = strlen (rel);
  if (rel_len > PS_MAX_CONTEXT_PATH || x->root_len + 1 + rel_len >= PATH_MAX)
    return ps_error_set (err, 400, "context entry %s is longer than %d bytes", qname,
                         PS_MAX_CONTEXT_PATH);

  if (hardlink == NULL && type == AE_IFLNK)
    {
      const char *target = archive_entry_symlink (e);
      if (target == NULL)
        target = archive_entry_symlink_utf8 (e);
      if (target == NULL || target[0] == '\0' || strlen (target) >= PATH_MAX)
        return ps_error_set (err, 400, "context entry %s is a symlink with an unusable target",
                             qname);
    }

  cleanup_free char *link_full = NULL;
  if (hardlink != NULL && check_hardlink (x, rel, qname, hardlink, &link_full, err) < 0)
    return -1;
  bool is_dir = hardlink == NULL && type == AE_IFDIR;
  if (prepare_target (x, rel, qname, is_dir, err) < 0)
    return -1;

  if (hardlink == NULL && type == AE_IFREG && archive_entry_size_is_set (e)
      && archive_entry_size (e) > 0
      && (uint64_t) archive_entry_size (e) > x->max_bytes - x->st.bytes)
    return over_bytes (x, err);

  cleanup_free char *full = xasprintf ("%s/%s", x->root, rel);
  archive_entry_copy_pathname (e, full);
  if (link_full != NULL)
    archive_entry_copy_hardlink (e, link_full);

  if (archive_write_header (x->out, e) < ARCHIVE_WARN)
    return write_error (x, qname, err);
  if ((type == AE_IFREG || hardlink != NULL) && copy_data (x, qname, err) < 0)
    return -1;
  if (archive_write_finish_entry (x->out) < ARCHIVE_WARN)
    return write_error (x, qname, err);

  if (hardlink != NULL || type == AE_IFREG)
    name_set_add (&x->files, rel);
  x->st.entries++;
  return 0;
}

/* Reads the body from an fd and, for an uncompressed tar, completes what
   the docker CLI leaves out: when `docker build -f` names a Dockerfile
   outside the context, the 20.10 CLI appends it as ".dockerfile.<hex>"
   without padding the last block or writing the two end-of-archive
   blocks.  Go's tar reader tolerates that, libarchive does not; so at end
   of input the stream is padded to a 512-byte boundary plus 1024 zero
   bytes.  Compressed bodies are left alone (their framing ends them). */
struct padded_reader
{
  int fd;
  bool sniffed;
  bool compressed;
  bool at_eof;
  uint64_t total;
  size_t pad_left;
  char buf[CONTEXT_READ_BLOCK];
};

static bool
compression_magic (const unsigned char *b, size_t n)
{
  return (n >= 2 && b[0] == 0x1f && b[1] == 0x8b)                              /* gzip */
         || (n >= 3 && b[0] == 'B' && b[1] == 'Z' && b[2] == 'h')                /* bzip2 */
         || (n >= 6 && memcmp (b, "\xfd" "7zXZ\0", 6) == 0)                      /* xz */
         || (n >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd); /* zstd */
}

static la_ssize_t
padded_read (struct archive *a, void *cls, const void **out)
{
  struct padded_reader *r = cls;
  *out = r->buf;
  if (!r->at_eof)
    {
      ssize_t n;
      do
        n = read (r->fd, r->buf, sizeof r->buf);
      while (n < 0 && errno == EINTR);
      if (n < 0)
        {
          archive_set_error (a, errno, "read build context");
          return -1;
        }
      if (n > 0)
        {
          if (!r->sniffed)
            {
              r->sniffed = true;
              r->compressed = compression_magic ((unsigned char *) r->buf, (size_t) n);
            }
          r->total += (uint64_t) n;
          return n;
        }
      r->at_eof = true;
      if (r->total > 0 && !r->compressed)
        r->pad_left = (size_t) ((512 - r->total % 512) % 512) + 1024;
    }
  size_t n = r->pad_left < sizeof r->buf ? r->pad_left : sizeof r->buf;
  memset (r->buf, 0, n);
  r->pad_left -= n;
  return (la_ssize_t) n;
}

/* A reader of the compressions the Docker and Podman clients send; not
   _all(), which would also accept uuencode, lrzip and friends (some via
   fork+exec of an external program).  NULL when libarchive cannot
   allocate one. */
static struct archive *
context_reader_new (void)
{
  struct archive *in = archive_read_new ();
  if (in == NULL)
    return NULL;
  archive_read_support_filter_gzip (in);
  archive_read_support_filter_bzip2 (in);
  archive_read_support_filter_xz (in);
  archive_read_support_filter_zstd (in);
  archive_read_support_format_tar (in); /* ustar, pax, GNU and v7 */
  archive_read_support_format_gnutar (in);
  archive_read_support_format_empty (in); /* a 0-byte body */
  return in;
}

int
context_extract_fd (int fd, const char *dest, const struct ps_context_limits *lim,
                       struct ps_context_stats *stats, ps_error **err)
{
  struct extract x = {
    .max_bytes = lim && lim->max_bytes ? lim->max_bytes : PS_DEFAULT_MAX_CONTEXT_BYTES,
    .max_entries = lim && lim->max_entries ? lim->max_entries : PS_MAX_CONTEXT_ENTRIES,
    .root_fd = -1,
  };
  if (stats != NULL)
    memset (stats, 0, sizeof (*stats));

  if (ps_libarchive_load (err) < 0)
    return -1;
  cleanup_free char *root = realpath (dest, NULL);
  if (root == NULL)
    return ps_error_set_errno (err, 500, errno, "resolve build context directory %s", dest);
  cleanup_close int root_fd = open (root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0)
    return ps_error_set_errno (err, 500, errno, "open build context directory %s", root);
  x.root = root;
  x.root_len = strlen (root);
  x.root_fd = root_fd;

  cleanup_archive struct archive *in = context_reader_new ();
  cleanup_archive struct archive *out = archive_write_disk_new ();
  if (in == NULL || out == NULL)
    return ps_error_set (err, 500, "cannot allocate a libarchive handle");
  archive_write_disk_set_options (out, CONTEXT_EXTRACT_FLAGS);
  x.in = in;
  x.out = out;

  /* libarchive picks the format while opening (empty, tar) or at the first
     header; a failure before any entry means the body is something else. */
  int ret = 0;
  struct padded_reader pr = { .fd = fd };
  if (archive_read_open (in, &pr, NULL, padded_read, NULL) != ARCHIVE_OK)
    ret = not_a_tar (&x, err);
  while (ret == 0)
    {
      struct archive_entry *e;
      int r = archive_read_next_header (in, &e);
      if (r == ARCHIVE_EOF)
        {
          ret = check_body_bytes (&x, err);
          break;
        }
      if (r < ARCHIVE_WARN)
        {
          if (x.headers == 0)
            ret = not_a_tar (&x, err);
          else
            {
              cleanup_free char *what = xasprintf ("read entry #%zu", x.headers + 1);
              ret = read_error (&x, what, err);
            }
          break;
        }
      if (++x.headers > x.max_entries)
        {
          ret = ps_error_set (err, 413, "build context has more than %zu entries", x.max_entries);
          break;
        }
      if (check_body_bytes (&x, err) < 0 || extract_entry (&x, e, err) < 0)
        ret = -1;
    }

  /* Applies the deferred directory modes and times even after a failure,
     so the caller's removal of the build directory is not stopped by a
     read-only directory. */
  if (archive_write_close (out) != ARCHIVE_OK && ret == 0)
    ret = ps_error_set (err, 500, "finish build context: %s",
                        archive_error_string (out) ? archive_error_string (out) : "close failed");
  name_set_free (&x.files);
  if (stats != NULL)
    *stats = x.st;
  return ret;
}

/* ---- reading without writing ------------------------------------------------ */

/* Whether any parent directory of `rel` is in `set`. */
static bool
parent_in (const struct name_set *set, const char *rel)
{
  if (set->n == 0)
    return false;
  cleanup_free char *prefix = xstrdup (rel);
  for (char *slash = strrchr (prefix, '/'); slash != NULL; slash = strrchr (prefix, '/'))
    {
      *slash = '\0';
      if (name_set_has (set, prefix))
        return true;
    }
  return false;
}

/* One entry of context_tar_walk; -1 when the entry is one the walk does
   not vouch for (see context.h). */
static int
walk_entry (struct archive_entry *e, struct name_set *seen, struct name_set *not_dirs, uint64_t *bytes,
            uint64_t max_bytes, context_tar_entry_fn fn, void *ud, struct archive *in)
{
  const char *raw = entry_name (e);
  if (raw == NULL || raw[0] == '\0' || entry_hardlink (e) != NULL)
    return -1;
  mode_t type = archive_entry_filetype (e);
  if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
    return -1;
  cleanup_free char *rel = NULL;
  switch (clean_relative (raw, &rel))
    {
    case CLEAN_ROOT:
      return type == AE_IFDIR ? 0 : -1;
    case CLEAN_OK:
      break;
    default:
      return -1;
    }
  if (strlen (rel) > PS_MAX_CONTEXT_PATH || name_set_has (seen, rel) || parent_in (not_dirs, rel))
    return -1;
  if (type == AE_IFLNK)
    {
      const char *target = archive_entry_symlink (e);
      if (target == NULL)
        target = archive_entry_symlink_utf8 (e);
      if (target == NULL || target[0] == '\0' || strlen (target) >= PATH_MAX)
        return -1;
    }
  if (type == AE_IFREG && archive_entry_size (e) > 0)
    {
      *bytes += (uint64_t) archive_entry_size (e);
      if (*bytes > max_bytes)
        return -1;
    }
  name_set_add (seen, rel);
  if (type != AE_IFDIR)
    name_set_add (not_dirs, rel);
  return fn (ud, rel, in, e);
}

int
context_tar_walk (int fd, const struct ps_context_limits *lim, context_tar_entry_fn fn, void *ud)
{
  uint64_t max_bytes = lim && lim->max_bytes ? lim->max_bytes : PS_DEFAULT_MAX_CONTEXT_BYTES;
  size_t max_entries = lim && lim->max_entries ? lim->max_entries : PS_MAX_CONTEXT_ENTRIES;
  cleanup_error ps_error *load_err = NULL;
  if (ps_libarchive_load (&load_err) < 0)
    return -1;
  cleanup_archive struct archive *in = context_reader_new ();
  if (in == NULL)
    return -1;
  struct padded_reader pr = { .fd = fd };
  if (archive_read_open (in, &pr, NULL, padded_read, NULL) != ARCHIVE_OK)
    return -1;
  struct name_set seen = { 0 }, not_dirs = { 0 };
  uint64_t bytes = 0;
  size_t headers = 0;
  int ret = 0;
  while (ret == 0)
    {
      struct archive_entry *e;
      int r = archive_read_next_header (in, &e);
      if (r == ARCHIVE_EOF)
        break;
      int64_t raw = archive_filter_bytes (in, -1);
      if (r < ARCHIVE_WARN || ++headers > max_entries || (raw > 0 && (uint64_t) raw > max_bytes))
        ret = -1;
      else
        ret = walk_entry (e, &seen, &not_dirs, &bytes, max_bytes, fn, ud, in) < 0 ? -1 : 0;
    }
  int64_t raw = archive_filter_bytes (in, -1);
  if (ret == 0 && raw > 0 && (uint64_t) raw > max_bytes)
    ret = -1;
  name_set_free (&seen);
  name_set_free (&not_dirs);
  return ret;
}

int
context_extract_file (const char *tar, const char *dest, const struct ps_context_limits *lim,
                      struct ps_context_stats *stats, ps_error **err)
{
  if (ps_mkdir_p (dest, 0700, err) < 0)
    return -1;
  cleanup_close int fd = open (tar, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", tar);
  return context_extract_fd (fd, dest, lim, stats, err);
}

int
context_unpack_sources (const struct solve_source *src, size_t n, const struct solve_source *except,
                      uint64_t max_context_bytes, ps_error **err)
{
  for (size_t i = 0; i < n; i++)
    {
      if (&src[i] == except || src[i].tar == NULL)
        continue;
      struct ps_context_limits lim = { max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
      if (context_extract_file (src[i].tar, src[i].dir, &lim, NULL, err) < 0)
        return ps_error_wrap (err, "multipart part \"%s\"", src[i].name);
      unlink (src[i].tar);
    }
  return 0;
}

/* ---- pruning ---------------------------------------------------------------- */

struct prune
{
  const ps_ignore *ig;
  ps_strv keep; /* clean relative names */
  bool exceptions;
  long removed;
};

static bool
prune_is_kept (const struct prune *pr, const char *rel)
{
  for (size_t i = 0; i < pr->keep.n; i++)
    if (strcmp (pr->keep.v[i], rel) == 0)
      return true;
  return false;
}

static bool
prune_keeps_below (const struct prune *pr, const char *rel)
{
  size_t n = strlen (rel);
  for (size_t i = 0; i < pr->keep.n; i++)
    if (strncmp (pr->keep.v[i], rel, n) == 0 && pr->keep.v[i][n] == '/')
      return true;
  return false;
}

/* unlinkat(), lending the directory owner write access for a moment when
   it lacks it (a 0555 directory from the tar, podsolved not root). */
static int
unlink_in (int dirfd, const char *name, int flags)
{
  if (unlinkat (dirfd, name, flags) == 0)
    return 0;
  if (errno != EACCES)
    return -1;
  struct stat st;
  if (fstat (dirfd, &st) < 0 || fchmod (dirfd, (st.st_mode & 07777) | S_IWUSR | S_IXUSR) < 0)
    {
      errno = EACCES;
      return -1;
    }
  int r = unlinkat (dirfd, name, flags);
  int saved = errno;
  fchmod (dirfd, st.st_mode & 07777);
  errno = saved;
  return r;
}

/* Open a subdirectory to walk it, without following a symlink; when its
   mode keeps the owner out, open it up (*restore_mode says to what to set
   it back). */
static int
open_subdir (int dirfd, const char *name, mode_t mode, mode_t *restore_mode)
{
  *restore_mode = 0;
  int fd = openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0 || errno != EACCES)
    return fd;
  if (fchmodat (dirfd, name, (mode & 07777) | S_IRWXU, 0) < 0)
    {
      errno = EACCES;
      return -1;
    }
  *restore_mode = (mode & 07777) | S_IFDIR;
  return openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Names in a directory, read before anything in it is removed. */
static int
list_dir (int dirfd, ps_strv *names, const char *rel, ps_error **err)
{
  const char *step;
  if (ps_list_dir_at (dirfd, false, names, &step) < 0)
    return ps_error_set_errno (err, 500, errno, "%s %s", step, rel[0] ? rel : ".");
  return 0;
}

static int prune_dir (struct prune *pr, int dirfd, const char *rel, bool remove_all,
                      ps_error **err);

/* One entry of the directory dirfd (whose relative name is `rel`). */
static int
prune_entry (struct prune *pr, int dirfd, const char *rel, const char *name, bool remove_all,
             ps_error **err)
{
  cleanup_free char *child = rel[0] ? xasprintf ("%s/%s", rel, name) : xstrdup (name);
  struct stat st;
  if (fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    {
      if (errno == ENOENT)
        return 0;
      return ps_error_set_errno (err, 500, errno, "stat %s", child);
    }
  /* a kept path stays as it is, directory or not */
  if (!remove_all && prune_is_kept (pr, child))
    return 0;
  bool excluded = remove_all || ps_ignore_matches (pr->ig, child);

  if (!S_ISDIR (st.st_mode))
    {
      if (!excluded)
        return 0;
      if (unlink_in (dirfd, name, 0) < 0 && errno != ENOENT)
        return ps_error_set_errno (err, 500, errno, "remove %s", child);
      pr->removed++;
      return 0;
    }

  /* An excluded directory goes whole, unless a '!' pattern or a kept path
     could bring back something below it: then walk it and remove only
     what is excluded, and the directory only if that leaves it empty. */
  bool whole = excluded && (remove_all || (!pr->exceptions && !prune_keeps_below (pr, child)));
  mode_t restore_mode = 0;
  cleanup_close int fd = open_subdir (dirfd, name, st.st_mode, &restore_mode);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", child);
  if (prune_dir (pr, fd, child, whole, err) < 0)
    return -1;
  if (!excluded)
    {
      if (restore_mode)
        fchmod (fd, restore_mode & 07777);
      return 0;
    }
  if (unlink_in (dirfd, name, AT_REMOVEDIR) == 0)
    {
      pr->removed++;
      return 0;
    }
  if (errno == ENOTEMPTY || errno == EEXIST)
    {
      if (restore_mode)
        fchmod (fd, restore_mode & 07777);
      return 0; /* something below was re-included */
    }
  return ps_error_set_errno (err, 500, errno, "remove %s", child);
}

/* Walk the directory dirfd.  Each level holds one descriptor; names are
   read up front so removals do not disturb the listing. */
static int
prune_dir (struct prune *pr, int dirfd, const char *rel, bool remove_all, ps_error **err)
{
  ps_strv names = { 0 };
  if (list_dir (dirfd, &names, rel, err) < 0)
    {
      ps_strv_free (&names);
      return -1;
    }
  int ret = 0;
  for (size_t i = 0; i < names.n && ret == 0; i++)
    ret = prune_entry (pr, dirfd, rel, names.v[i], remove_all, err);
  ps_strv_free (&names);
  return ret;
}

long
context_prune (const char *dir, const ps_ignore *ig, const char *const *keep, size_t nkeep,
                  ps_error **err)
{
  if (ig == NULL || ps_ignore_count (ig) == 0)
    return 0;
  struct prune pr = { .ig = ig, .exceptions = ps_ignore_has_exceptions (ig) };
  for (size_t i = 0; i < nkeep; i++)
    {
      if (keep[i] == NULL)
        continue;
      /* "/Dockerfile" and "./Dockerfile" name the same kept file */
      const char *k = keep[i];
      while (*k == '/')
        k++;
      cleanup_free char *clean = NULL;
      if (clean_relative (k, &clean) == CLEAN_OK)
        ps_strv_push (&pr.keep, clean);
    }

  int ret = -1;
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    ps_error_set_errno (err, 500, errno, "open build context directory %s", dir);
  else
    {
      ret = prune_dir (&pr, fd, "", false, err);
      close (fd);
    }
  ps_strv_free (&pr.keep);
  if (ret < 0)
    return ps_error_wrap (err, "apply ignore file");
  return pr.removed;
}

/* ---- lookups shared by the frontends ---------------------------------------- */

int
context_file (const char *dir, const char *rel, ps_error **err)
{
  while (ps_str_has_prefix (rel, "./"))
    rel += 2;
  if (!ps_path_is_contained (rel))
    return ps_error_set (err, 400, "the path \"%s\" must be inside the build context", rel);
  cleanup_free char *full = xasprintf ("%s/%s", dir, rel);
  char resolved[PATH_MAX], dirreal[PATH_MAX];
  if (realpath (full, resolved) == NULL)
    return 0;
  if (realpath (dir, dirreal) == NULL)
    return ps_error_set_errno (err, 500, errno, "resolve %s", dir);
  size_t n = strlen (dirreal);
  if (strncmp (resolved, dirreal, n) != 0 || resolved[n] != '/')
    return ps_error_set (err, 400, "the path \"%s\" leads outside the build context", rel);
  struct stat st;
  return stat (resolved, &st) == 0 && S_ISREG (st.st_mode) ? 1 : 0;
}

int
context_apply_ignore (const char *dir, const char *dockerfile, const ps_strv *excludes, ps_error **err)
{
  ps_ignore *ig = NULL;
  const char *ignore_name = NULL;
  cleanup_free char *df_ignore = dockerfile ? xasprintf ("%s.dockerignore", dockerfile) : NULL;

  if (excludes && excludes->n > 0)
    {
      ig = ps_ignore_from_patterns ((const char *const *) excludes->v, excludes->n, err);
      if (ig == NULL)
        return ps_error_wrap (err, "excludes");
    }
  else
    {
      const char *candidates[] = { df_ignore, ".containerignore", ".dockerignore" };
      for (size_t i = 0; i < ARRAY_SIZE (candidates) && ig == NULL; i++)
        {
          if (candidates[i] == NULL || context_file (dir, candidates[i], NULL) != 1)
            continue;
          cleanup_free char *path = xasprintf ("%s/%s", dir, candidates[i]);
          cleanup_free char *text = NULL;
          size_t len = 0;
          if (ps_read_file (path, PS_MAX_IGNORE_FILE_BYTES, &text, &len, err) < 0)
            return ps_error_wrap (err, "read %s", candidates[i]);
          ig = ps_ignore_parse (text, len, err);
          if (ig == NULL)
            return ps_error_wrap (err, "%s", candidates[i]);
          ignore_name = candidates[i];
        }
    }
  if (ig == NULL)
    return 0;

  const char *keep[2];
  size_t nkeep = 0;
  if (dockerfile)
    keep[nkeep++] = dockerfile;
  if (ignore_name)
    keep[nkeep++] = ignore_name;
  long removed = context_prune (dir, ig, keep, nkeep, err);
  ps_ignore_free (ig);
  if (removed < 0)
    return ps_error_wrap (err, "apply ignore file");
  return 0;
}
