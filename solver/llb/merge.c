/* llb_merge.c — MergeOp and DiffOp on buildah-mounted rootfs (see
 * llb_merge.h for the meaning).  All tree work goes through directory
 * fds: an entry is opened, created or examined relative to its parent's
 * fd with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW, so a symlink in an input can
 * never point the walk outside the rootfs it belongs to. */
#define _GNU_SOURCE
#include "solver/llb/merge.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/log.h"
#include "solver/llb/wc.h"

/* First line of a whiteout record; the paths follow, each NUL-terminated
   (a path may hold any byte but NUL). */
#define WHITEOUTS_MAGIC "podsolve-llb-whiteouts-v1\n"

/* Bytes read at a time when copying or comparing file contents. */
#define TREE_CHUNK (128 * 1024)

/* SELinux labels come from each container's mount context, not from the
   image: copying them would be refused, comparing them would call every
   file of two containers different. */
static bool
xattr_ignored (const char *name)
{
  /* ... and overlayfs's own (opaque directories, redirects) are how an
     upper directory says things, not the files' attributes. */
  return strcmp (name, "security.selinux") == 0 || strncmp (name, "trusted.overlay.", 16) == 0;
}

/* ---- inode maps (hard links, compared contents) ------------------------------------ */

struct ino_key
{
  uint64_t a, b, c, d;
};

struct ino_slot
{
  bool used;
  struct ino_key k;
  char *path; /* links: the first copy's path below the destination root */
  bool same;  /* compared: the contents were equal */
};

struct ino_map
{
  struct ino_slot *s;
  size_t cap, n; /* cap a power of two, at most half full */
};

static size_t
ino_hash (const struct ino_key *k)
{
  uint64_t h = k->a * 0x9e3779b97f4a7c15ULL;
  h = (h ^ k->b ^ (h >> 29)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ k->c ^ (h >> 32)) * 0x94d049bb133111ebULL;
  h = (h ^ k->d ^ (h >> 31)) * 0x9e3779b97f4a7c15ULL;
  return (size_t) (h ^ (h >> 29));
}

static bool
ino_eq (const struct ino_key *x, const struct ino_key *y)
{
  return x->a == y->a && x->b == y->b && x->c == y->c && x->d == y->d;
}

/* The slot of `k`; with `insert` a new empty one when absent (valid
   until the next insert), else NULL when absent. */
static struct ino_slot *
ino_find (struct ino_map *m, const struct ino_key *k, bool insert)
{
  if (insert && (m->n + 1) * 2 > m->cap)
    {
      struct ino_map g = { xcalloc (m->cap ? m->cap * 2 : 64, sizeof (struct ino_slot)), m->cap ? m->cap * 2 : 64,
                           m->n };
      for (size_t i = 0; i < m->cap; i++)
        if (m->s[i].used)
          {
            size_t j = ino_hash (&m->s[i].k) & (g.cap - 1);
            while (g.s[j].used)
              j = (j + 1) & (g.cap - 1);
            g.s[j] = m->s[i];
          }
      free (m->s);
      *m = g;
    }
  if (m->cap == 0)
    return NULL;
  size_t i = ino_hash (k) & (m->cap - 1);
  while (m->s[i].used)
    {
      if (ino_eq (&m->s[i].k, k))
        return &m->s[i];
      i = (i + 1) & (m->cap - 1);
    }
  if (!insert)
    return NULL;
  m->s[i].used = true;
  m->s[i].k = *k;
  m->n++;
  return &m->s[i];
}

static void
ino_map_free (struct ino_map *m)
{
  for (size_t i = 0; i < m->cap; i++)
    free (m->s[i].path);
  free (m->s);
  m->s = NULL;
  m->cap = m->n = 0;
}

/* ---- one tree walk's state ------------------------------------------------------ */

struct tree_ctx
{
  int dst_root;         /* root of the tree being written */
  struct ino_map links; /* source (dev, ino) of a multiply-linked file -> its first copy */
  struct ino_map same;  /* diff: (lower dev, ino, upper dev, ino) -> contents equal */
  const char *who;      /* names the op in log lines */
  char *buf_a, *buf_b;  /* TREE_CHUNK each */
  bool upper;           /* the source is an overlay upper directory (llb_tree_apply_upper) */
};

static void
tree_ctx_init (struct tree_ctx *c, int dst_root, const char *who)
{
  memset (c, 0, sizeof *c);
  c->dst_root = dst_root;
  c->who = who ? who : "llb";
  c->buf_a = xmalloc (TREE_CHUNK);
  c->buf_b = xmalloc (TREE_CHUNK);
}

static void
tree_ctx_free (struct tree_ctx *c)
{
  ino_map_free (&c->links);
  ino_map_free (&c->same);
  free (c->buf_a);
  free (c->buf_b);
}

static char *
join (const char *rel, const char *name)
{
  return *rel ? xasprintf ("%s/%s", rel, name) : xstrdup (name);
}

/* A path by which the l*xattr calls reach `name` of the directory `dirfd`
   without following it: the fd's magic link, then the name ("." for the
   directory itself). */
static char *
fd_path (int dirfd, const char *name)
{
  return xasprintf ("/proc/self/fd/%d/%s", dirfd, name);
}

static int
open_dir_at (int dirfd, const char *name)
{
  return openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* A DIR stream over a directory fd that stays the caller's. */
static DIR *
dir_stream (int fd)
{
  int own = fcntl (fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0)
    return NULL;
  DIR *d = fdopendir (own);
  if (d == NULL)
    close (own);
  else
    rewinddir (d);
  return d;
}

static bool
dot_or_dotdot (const char *name)
{
  return strcmp (name, ".") == 0 || strcmp (name, "..") == 0;
}

/* ---- xattrs (best effort: "if cheap") --------------------------------------------- */

static ssize_t
xattr_list (const char *path, char **out)
{
  *out = NULL;
  for (;;)
    {
      ssize_t n = llistxattr (path, NULL, 0);
      if (n <= 0)
        return n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP) ? 0 : n;
      char *b = xmalloc ((size_t) n);
      ssize_t got = llistxattr (path, b, (size_t) n);
      if (got >= 0)
        {
          *out = b;
          return got;
        }
      free (b);
      if (errno != ERANGE)
        return -1;
    }
}

static ssize_t
xattr_get (const char *path, const char *name, char **out)
{
  *out = NULL;
  for (;;)
    {
      ssize_t n = lgetxattr (path, name, NULL, 0);
      if (n < 0)
        return -1;
      char *b = xmalloc ((size_t) n + 1);
      ssize_t got = lgetxattr (path, name, b, (size_t) n);
      if (got >= 0)
        {
          *out = b;
          return got;
        }
      free (b);
      if (errno != ERANGE)
        return -1;
    }
}

static void
xattrs_copy (const char *src, const char *dst, const char *who)
{
  cleanup_free char *names = NULL;
  ssize_t n = xattr_list (src, &names);
  for (ssize_t off = 0; off < n; off += (ssize_t) strlen (names + off) + 1)
    {
      const char *name = names + off;
      cleanup_free char *val = NULL;
      ssize_t len;
      if (xattr_ignored (name) || (len = xattr_get (src, name, &val)) < 0)
        continue;
      if (lsetxattr (dst, name, val, (size_t) len, 0) < 0)
        ps_debug ("%s: xattr %s not copied to %s: %s", who, name, dst, strerror (errno));
    }
}

/* Do the two entries have the same xattrs (names and values)? */
static bool
xattrs_equal (const char *a, const char *b)
{
  cleanup_free char *na = NULL, *nb = NULL;
  ssize_t la = xattr_list (a, &na), lb = xattr_list (b, &nb);
  if (la < 0 || lb < 0)
    return la < 0 && lb < 0;
  size_t count_a = 0, count_b = 0;
  for (ssize_t off = 0; off < lb; off += (ssize_t) strlen (nb + off) + 1)
    count_b += !xattr_ignored (nb + off);
  for (ssize_t off = 0; off < la; off += (ssize_t) strlen (na + off) + 1)
    {
      const char *name = na + off;
      if (xattr_ignored (name))
        continue;
      count_a++;
      cleanup_free char *va = NULL, *vb = NULL;
      ssize_t lva = xattr_get (a, name, &va), lvb = xattr_get (b, name, &vb);
      if (lva != lvb || (lva > 0 && memcmp (va, vb, (size_t) lva) != 0))
        return false;
    }
  return count_a == count_b;
}

/* ---- copying ------------------------------------------------------------------------- */

/* Give `name` in `dirfd` the owner, mode and times of `st` and the xattrs
   of `xsrc`.  The entry was made by us, so it is a symlink only when st
   says so (fchmodat follows, and must not meet one). */
static int
set_meta (int dirfd, const char *name, const struct stat *st, const char *xsrc, const char *who, ps_error **err)
{
  /* Owner first: chown clears set-id bits and file capabilities. */
  if (fchownat (dirfd, name, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", name);
  if (!S_ISLNK (st->st_mode) && fchmodat (dirfd, name, st->st_mode & 07777, 0) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", name);
  if (xsrc)
    {
      cleanup_free char *dst = fd_path (dirfd, name);
      xattrs_copy (xsrc, dst, who);
    }
  struct timespec t[2] = { st->st_atim, st->st_mtim };
  if (utimensat (dirfd, name, t, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "set times of %s", name);
  return 0;
}

static int
copy_data (struct tree_ctx *c, int in, int out, const char *rel, ps_error **err)
{
  for (;;)
    {
      ssize_t r = read (in, c->buf_a, TREE_CHUNK);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return ps_error_set_errno (err, 500, errno, "read /%s", rel);
      if (r == 0)
        return 0;
      for (ssize_t off = 0; off < r;)
        {
          ssize_t w = write (out, c->buf_a + off, (size_t) (r - off));
          if (w < 0 && errno == EINTR)
            continue;
          if (w < 0)
            return ps_error_set_errno (err, 500, errno, "write /%s", rel);
          off += w;
        }
    }
}

static int copy_dir (struct tree_ctx *c, int sdir, int ddir, const char *rel, ps_error **err);

/* An overlay upper directory's directory that hides what lies below it
   (made anew over a deleted one). */
static bool
opaque_dir (int dirfd, const char *name)
{
  cleanup_free char *p = fd_path (dirfd, name);
  char v[2];
  return lgetxattr (p, "trusted.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y';
}

/* Copy the entry `name` (stat `st`) of the directory `sdir` into `ddir`:
   a directory merges into a directory, anything else replaces what is
   there.  `rel` is its path below both roots. */
static int
copy_entry (struct tree_ctx *c, int sdir, int ddir, const char *name, const char *rel, const struct stat *st,
            ps_error **err)
{
  mode_t type = st->st_mode & S_IFMT;
  if (c->upper && type == S_IFCHR && st->st_rdev == 0)
    return ps_rm_rf_at (ddir, name, err); /* overlay's whiteout: the entry was deleted */
  if (type != S_IFDIR && type != S_IFREG && type != S_IFLNK && type != S_IFIFO)
    {
      ps_warn ("%s: /%s skipped: a %s is not copied (a container gets its devices at run time)", c->who, rel,
               type == S_IFSOCK ? "socket" : "device node");
      return 0;
    }
  struct stat dt;
  bool exists = fstatat (ddir, name, &dt, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT)
    return ps_error_set_errno (err, 500, errno, "stat /%s", rel);
  if (exists && !(S_ISDIR (dt.st_mode) && type == S_IFDIR && !(c->upper && opaque_dir (sdir, name))))
    {
      if (ps_rm_rf_at (ddir, name, err) < 0)
        return -1;
      exists = false;
    }
  switch (type)
    {
    case S_IFDIR:
      {
        if (!exists && mkdirat (ddir, name, 0700) < 0)
          return ps_error_set_errno (err, 500, errno, "mkdir /%s", rel);
        cleanup_close int s = open_dir_at (sdir, name);
        cleanup_close int d = open_dir_at (ddir, name);
        if (s < 0 || d < 0)
          return ps_error_set_errno (err, 500, errno, "open /%s", rel);
        if (copy_dir (c, s, d, rel, err) < 0)
          return -1;
        break;
      }
    case S_IFREG:
      {
        if (st->st_nlink > 1)
          {
            struct ino_key k = { st->st_dev, st->st_ino, 0, 0 };
            struct ino_slot *slot = ino_find (&c->links, &k, true);
            /* Every directory on the first copy's path was made or
               checked to be a real directory earlier in this walk, so
               linkat resolves it inside the destination. */
            if (slot->path && linkat (c->dst_root, slot->path, ddir, name, 0) == 0)
              return 0;
            if (slot->path == NULL)
              slot->path = xstrdup (rel);
          }
        cleanup_close int in = openat (sdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (in < 0)
          return ps_error_set_errno (err, 500, errno, "open /%s", rel);
        cleanup_close int out = openat (ddir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (out < 0)
          return ps_error_set_errno (err, 500, errno, "create /%s", rel);
        if (copy_data (c, in, out, rel, err) < 0)
          return -1;
        break;
      }
    case S_IFLNK:
      {
        char target[PATH_MAX];
        ssize_t l = readlinkat (sdir, name, target, sizeof target - 1);
        if (l < 0)
          return ps_error_set_errno (err, 500, errno, "readlink /%s", rel);
        target[l] = '\0';
        if (symlinkat (target, ddir, name) < 0)
          return ps_error_set_errno (err, 500, errno, "symlink /%s", rel);
        break;
      }
    default: /* S_IFIFO */
      if (mknodat (ddir, name, S_IFIFO | 0600, 0) < 0)
        return ps_error_set_errno (err, 500, errno, "mkfifo /%s", rel);
    }
  cleanup_free char *xsrc = fd_path (sdir, name);
  return set_meta (ddir, name, st, xsrc, c->who, err);
}

static int
copy_dir (struct tree_ctx *c, int sdir, int ddir, const char *rel, ps_error **err)
{
  DIR *d = dir_stream (sdir);
  if (d == NULL)
    return ps_error_set_errno (err, 500, errno, "read /%s", rel);
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && (errno = 0, de = readdir (d)) != NULL)
    {
      if (dot_or_dotdot (de->d_name))
        continue;
      cleanup_free char *child = join (rel, de->d_name);
      struct stat st;
      if (fstatat (sdir, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        ret = ps_error_set_errno (err, 500, errno, "stat /%s", child);
      else
        ret = copy_entry (c, sdir, ddir, de->d_name, child, &st, err);
    }
  if (ret == 0 && errno != 0)
    ret = ps_error_set_errno (err, 500, errno, "read /%s", rel);
  closedir (d);
  return ret;
}

static int
open_root (const char *path, ps_error **err)
{
  int fd = open (path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    ps_error_set_errno (err, 500, errno, "open %s", path);
  return fd;
}

static int tree_apply (const char *dst, const char *src, const char *who, bool upper, ps_error **err);

int
llb_tree_apply (const char *dst, const char *src, const char *who, ps_error **err)
{
  return tree_apply (dst, src, who, false, err);
}

int
llb_tree_apply_upper (const char *dst, const char *src, const char *who, ps_error **err)
{
  return tree_apply (dst, src, who, true, err);
}

static int
tree_apply (const char *dst, const char *src, const char *who, bool upper, ps_error **err)
{
  cleanup_close int s = open_root (src, err);
  if (s < 0)
    return -1;
  cleanup_close int d = open_root (dst, err);
  if (d < 0)
    return -1;
  struct stat st;
  if (fstat (s, &st) < 0)
    return ps_error_set_errno (err, 500, errno, "stat %s", src);
  struct tree_ctx c;
  tree_ctx_init (&c, d, who);
  c.upper = upper;
  int ret = copy_dir (&c, s, d, "", err);
  /* The root is a directory merging into a directory: the later one's
     metadata wins, as for any other. */
  cleanup_free char *xsrc = fd_path (s, ".");
  if (ret == 0)
    ret = set_meta (d, ".", &st, xsrc, c.who, err);
  tree_ctx_free (&c);
  return ret;
}

/* ---- whiteouts ------------------------------------------------------------------------ */

static bool
whiteout_ok (const char *p)
{
  if (*p == '\0' || *p == '/' || strlen (p) >= PATH_MAX)
    return false;
  for (const char *s = p; *s;)
    {
      size_t n = strcspn (s, "/");
      if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
      s += n;
      if (*s == '/')
        s++;
      if (*s == '\0' && s[-1] == '/')
        return false;
    }
  return true;
}

/* Open the directory holding `rel` (a whiteout path) below root_fd,
   following no symlink; *last = its final component.  -1 with errno set
   (ENOENT, ENOTDIR, ELOOP: the path is not there) otherwise. */
static int
open_parent (int root_fd, const char *rel, const char **last)
{
  const char *slash = strrchr (rel, '/');
  *last = slash ? slash + 1 : rel;
  int fd = fcntl (root_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0 || slash == NULL)
    return fd;
  cleanup_free char *dirs = xstrndup (rel, (size_t) (slash - rel));
  char *save = NULL;
  for (char *comp = strtok_r (dirs, "/", &save); comp; comp = strtok_r (NULL, "/", &save))
    {
      int next = open_dir_at (fd, comp);
      int e = errno;
      close (fd);
      if (next < 0)
        {
          errno = e;
          return -1;
        }
      fd = next;
    }
  return fd;
}

static bool
errno_means_absent (int e)
{
  return e == ENOENT || e == ENOTDIR || e == ELOOP;
}

int
llb_tree_delete (const char *root, const ps_strv *w, ps_error **err)
{
  cleanup_close int r = open_root (root, err);
  if (r < 0)
    return -1;
  for (size_t i = 0; i < w->n; i++)
    {
      const char *last;
      cleanup_close int p = open_parent (r, w->v[i], &last);
      if (p < 0)
        {
          if (errno_means_absent (errno))
            continue;
          return ps_error_set_errno (err, 500, errno, "delete /%s", w->v[i]);
        }
      if (ps_rm_rf_at (p, last, err) < 0)
        return ps_error_wrap (err, "delete /%s", w->v[i]);
    }
  return 0;
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
llb_whiteouts_absent (const char *root, const ps_strv *w, ps_strv *out, ps_error **err)
{
  cleanup_close int r = open_root (root, err);
  if (r < 0)
    return -1;
  cleanup_free char **sorted = xcalloc (w->n + 1, sizeof *sorted);
  memcpy (sorted, w->v, w->n * sizeof *sorted);
  qsort (sorted, w->n, sizeof *sorted, cmp_str);
  for (size_t i = 0; i < w->n; i++)
    {
      if (i > 0 && strcmp (sorted[i], sorted[i - 1]) == 0)
        continue;
      const char *last;
      cleanup_close int p = open_parent (r, sorted[i], &last);
      struct stat st;
      if (p >= 0 && fstatat (p, last, &st, AT_SYMLINK_NOFOLLOW) == 0)
        continue;
      if (!errno_means_absent (errno))
        return ps_error_set_errno (err, 500, errno, "stat /%s", sorted[i]);
      ps_strv_push (out, sorted[i]);
    }
  return 0;
}

static bool
image_id_ok (const char *id)
{
  return strlen (id) == 64 && strspn (id, "0123456789abcdef") == 64;
}

static char *
whiteouts_path (const char *state_dir, const char *image)
{
  return xasprintf ("%s/llb-whiteouts/%s", state_dir, image);
}

int
llb_whiteouts_read (const char *state_dir, const char *image, ps_strv *out, ps_error **err)
{
  if (!image_id_ok (image))
    return ps_error_set (err, 500, "whiteouts of \"%s\": not an image id", image);
  cleanup_free char *path = whiteouts_path (state_dir, image);
  cleanup_free char *data = NULL;
  size_t len = 0;
  ps_error *e = NULL;
  if (ps_read_file (path, LLB_WHITEOUTS_MAX_BYTES, &data, &len, &e) < 0)
    {
      if (e->status == 404)
        {
          ps_error_free (e);
          return 0;
        }
      *err = e;
      return ps_error_wrap (err, "whiteouts of %.12s", image);
    }
  size_t m = strlen (WHITEOUTS_MAGIC);
  if (len < m || memcmp (data, WHITEOUTS_MAGIC, m) != 0 || (len > m && data[len - 1] != '\0'))
    return ps_error_set (err, 500, "whiteout record %s is corrupt", path);
  for (size_t off = m; off < len; off += strlen (data + off) + 1)
    {
      if (!whiteout_ok (data + off))
        return ps_error_set (err, 500, "whiteout record %s is corrupt: bad path \"%s\"", path, data + off);
      ps_strv_push (out, data + off);
    }
  return 0;
}

int
llb_whiteouts_write (const char *state_dir, const char *image, const ps_strv *w, ps_error **err)
{
  if (!image_id_ok (image))
    return ps_error_set (err, 500, "whiteouts of \"%s\": not an image id", image);
  cleanup_free char *path = whiteouts_path (state_dir, image);
  if (w->n == 0)
    {
      if (unlink (path) < 0 && errno != ENOENT)
        return ps_error_set_errno (err, 500, errno, "remove %s", path);
      return 0;
    }
  ps_buf b = { 0 };
  ps_buf_puts (&b, WHITEOUTS_MAGIC);
  for (size_t i = 0; i < w->n; i++)
    {
      if (!whiteout_ok (w->v[i]))
        {
          ps_buf_free (&b);
          return ps_error_set (err, 500, "whiteout \"%s\" is not a contained relative path", w->v[i]);
        }
      ps_buf_append (&b, w->v[i], strlen (w->v[i]) + 1);
    }
  cleanup_free char *dir = xasprintf ("%s/llb-whiteouts", state_dir);
  char rnd[17];
  ps_random_hex (rnd, 8); /* several threads may write records at once */
  cleanup_free char *tmp = xasprintf ("%s.tmp-%s", path, rnd);
  int ret = 0;
  if (ps_mkdir_p (dir, 0700, err) < 0 || ps_write_file (tmp, b.data, b.len, 0600, err) < 0)
    ret = -1;
  else if (rename (tmp, path) < 0)
    ret = ps_error_set_errno (err, 500, errno, "rename %s", tmp);
  if (ret < 0)
    unlink (tmp);
  ps_buf_free (&b);
  return ret;
}

/* ---- diff ----------------------------------------------------------------------------- */

static int
same_content (struct tree_ctx *c, int ldir, int udir, const char *name, const char *rel, bool *same, ps_error **err)
{
  cleanup_close int a = openat (ldir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  cleanup_close int b = openat (udir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (a < 0 || b < 0)
    return ps_error_set_errno (err, 500, errno, "open /%s", rel);
  for (;;)
    {
      ssize_t ra = ps_read_full (a, c->buf_a, TREE_CHUNK);
      ssize_t rb = ps_read_full (b, c->buf_b, TREE_CHUNK);
      if (ra < 0 || rb < 0)
        return ps_error_set_errno (err, 500, errno, "read /%s", rel);
      *same = ra == rb && memcmp (c->buf_a, c->buf_b, (size_t) ra) == 0;
      if (!*same || ra < TREE_CHUNK)
        return 0;
    }
}

/* Is the upper entry the lower one unchanged?  Type, mode, owner, mtime
   (atime and ctime do not count, as in BuildKit), link target or device
   number, xattrs, size and content.  Times compare as containerd's differ
   does (continuity's sameFile): a tar round trip drops the nanoseconds,
   so the same second with 0 ns on either side may be the same time, and
   then only the content can tell; equal nanosecond times with equal
   metadata and size mean the same file, unread. */
static int
same_entry (struct tree_ctx *c, int ldir, int udir, const char *name, const char *rel, const struct stat *ls,
            const struct stat *us, bool *same, ps_error **err)
{
  *same = false;
  bool truncated = ls->st_mtim.tv_nsec == 0 || us->st_mtim.tv_nsec == 0;
  if (((ls->st_mode ^ us->st_mode) & (S_IFMT | 07777)) != 0 || ls->st_uid != us->st_uid || ls->st_gid != us->st_gid
      || ls->st_mtim.tv_sec != us->st_mtim.tv_sec || (!truncated && ls->st_mtim.tv_nsec != us->st_mtim.tv_nsec))
    return 0;
  if (S_ISLNK (us->st_mode))
    {
      char ta[PATH_MAX], tb[PATH_MAX];
      ssize_t la = readlinkat (ldir, name, ta, sizeof ta), lb = readlinkat (udir, name, tb, sizeof tb);
      if (la < 0 || lb < 0)
        return ps_error_set_errno (err, 500, errno, "readlink /%s", rel);
      if (la != lb || memcmp (ta, tb, (size_t) la) != 0)
        return 0;
    }
  else if ((S_ISCHR (us->st_mode) || S_ISBLK (us->st_mode)) && ls->st_rdev != us->st_rdev)
    return 0;
  else if (S_ISREG (us->st_mode) && ls->st_size != us->st_size)
    return 0;
  cleanup_free char *xa = fd_path (ldir, name);
  cleanup_free char *xb = fd_path (udir, name);
  if (!xattrs_equal (xa, xb))
    return 0;
  if (S_ISREG (us->st_mode) && truncated && us->st_size > 0)
    {
      /* The links of one file (busybox's hundreds) are compared once. */
      struct ino_key k = { ls->st_dev, ls->st_ino, us->st_dev, us->st_ino };
      bool linked = ls->st_nlink > 1 || us->st_nlink > 1;
      struct ino_slot *known = linked ? ino_find (&c->same, &k, false) : NULL;
      bool eq;
      if (known)
        eq = known->same;
      else
        {
          if (same_content (c, ldir, udir, name, rel, &eq, err) < 0)
            return -1;
          if (linked)
            ino_find (&c->same, &k, true)->same = eq;
        }
      if (!eq)
        return 0;
    }
  *same = true;
  return 0;
}

/* Diff the directories `l` (-1: none) and `u` (-1: none) at `rel` into the
   empty directory `o`, appending deletions to *w.  *kept says whether `o`
   must stay: something was written into it or deleted below it. */
static int
diff_dir (struct tree_ctx *c, int l, int u, int o, const char *rel, ps_strv *w, bool *kept, ps_error **err)
{
  *kept = false;
  int ret = 0;
  struct dirent *de;
  DIR *d = u >= 0 ? dir_stream (u) : NULL;
  if (u >= 0 && d == NULL)
    return ps_error_set_errno (err, 500, errno, "read /%s", rel);
  while (d && ret == 0 && (errno = 0, de = readdir (d)) != NULL)
    {
      const char *name = de->d_name;
      if (dot_or_dotdot (name))
        continue;
      cleanup_free char *child = join (rel, name);
      struct stat us, ls;
      bool have_l = false;
      if (fstatat (u, name, &us, AT_SYMLINK_NOFOLLOW) < 0)
        {
          ret = ps_error_set_errno (err, 500, errno, "stat /%s", child);
          break;
        }
      if (l >= 0)
        {
          have_l = fstatat (l, name, &ls, AT_SYMLINK_NOFOLLOW) == 0;
          if (!have_l && errno != ENOENT)
            {
              ret = ps_error_set_errno (err, 500, errno, "stat /%s", child);
              break;
            }
        }
      bool same = false;
      if (have_l && S_ISDIR (ls.st_mode) && S_ISDIR (us.st_mode))
        {
          /* Both directories: the output holds the directory when it
             changed itself or anything below it did. */
          if (mkdirat (o, name, 0700) < 0)
            {
              ret = ps_error_set_errno (err, 500, errno, "mkdir /%s", child);
              break;
            }
          cleanup_close int lc = open_dir_at (l, name);
          cleanup_close int uc = open_dir_at (u, name);
          cleanup_close int oc = open_dir_at (o, name);
          bool child_kept = false;
          if (lc < 0 || uc < 0 || oc < 0)
            ret = ps_error_set_errno (err, 500, errno, "open /%s", child);
          else
            ret = diff_dir (c, lc, uc, oc, child, w, &child_kept, err);
          if (ret == 0)
            ret = same_entry (c, l, u, name, child, &ls, &us, &same, err);
          if (ret < 0)
            break;
          if (child_kept || !same)
            {
              cleanup_free char *xsrc = fd_path (u, name);
              ret = set_meta (o, name, &us, xsrc, c->who, err);
              *kept = true;
            }
          else if (unlinkat (o, name, AT_REMOVEDIR) < 0)
            ret = ps_error_set_errno (err, 500, errno, "rmdir /%s", child);
          continue;
        }
      /* Anything else is either unchanged or taken whole from upper (a
         directory replacing a file brings all of its contents). */
      if (have_l && same_entry (c, l, u, name, child, &ls, &us, &same, err) < 0)
        {
          ret = -1;
          break;
        }
      if (!same)
        {
          ret = copy_entry (c, u, o, name, child, &us, err);
          *kept = true;
        }
    }
  if (d && ret == 0 && errno != 0)
    ret = ps_error_set_errno (err, 500, errno, "read /%s", rel);
  if (d)
    closedir (d);
  if (ret < 0 || l < 0)
    return ret;

  /* What lower has and upper lacks is a deletion.  A directory deleted
     whole is one whiteout; its contents need none. */
  d = dir_stream (l);
  if (d == NULL)
    return ps_error_set_errno (err, 500, errno, "read /%s", rel);
  while (ret == 0 && (errno = 0, de = readdir (d)) != NULL)
    {
      if (dot_or_dotdot (de->d_name))
        continue;
      struct stat st;
      if (u >= 0 && fstatat (u, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        continue;
      if (u >= 0 && errno != ENOENT)
        {
          ret = ps_error_set_errno (err, 500, errno, "stat /%s/%s", rel, de->d_name);
          break;
        }
      cleanup_free char *gone = join (rel, de->d_name);
      ps_strv_push (w, gone);
      *kept = true;
    }
  if (ret == 0 && errno != 0)
    ret = ps_error_set_errno (err, 500, errno, "read /%s", rel);
  closedir (d);
  return ret;
}

int
llb_tree_diff (const char *lower, const char *upper, const char *out, ps_strv *w, const char *who, ps_error **err)
{
  cleanup_close int l = lower ? open_root (lower, err) : -1;
  if (lower && l < 0)
    return -1;
  cleanup_close int u = upper ? open_root (upper, err) : -1;
  if (upper && u < 0)
    return -1;
  cleanup_close int o = open_root (out, err);
  if (o < 0)
    return -1;
  struct tree_ctx c;
  tree_ctx_init (&c, o, who);
  bool kept = false;
  int ret = diff_dir (&c, l, u, o, "", w, &kept, err);
  /* The root always holds the changes; it takes upper's metadata. */
  struct stat st;
  if (ret == 0 && u >= 0)
    {
      if (fstat (u, &st) < 0)
        ret = ps_error_set_errno (err, 500, errno, "stat %s", upper);
      else
        {
          cleanup_free char *xsrc = fd_path (u, ".");
          ret = set_meta (o, ".", &st, xsrc, c.who, err);
        }
    }
  tree_ctx_free (&c);
  return ret;
}

/* ---- the ops on buildah ------------------------------------------------------------ */

/* A new image with nothing in it: the result of merging or diffing
   nothing, as BuildKit's empty ref. */
static int
empty_image (char **image, ps_error **err)
{
  struct buildah_wc w;
  if (llb_wc_from (NULL, false, &w, err) < 0)
    return -1;
  int ret = llb_wc_commit_rm (&w, image, err);
  llb_wc_remove (&w);
  return ret;
}

/* Commit `w` and record `whiteouts` for the new image. */
static int
commit_with_whiteouts (struct buildah_wc *w, const char *state_dir, const ps_strv *whiteouts, char **image,
                       ps_error **err)
{
  cleanup_free char *id = NULL;
  if (llb_wc_commit (w, &id, err) < 0 || llb_whiteouts_write (state_dir, id, whiteouts, err) < 0)
    return -1;
  *image = steal_pointer (&id);
  return 0;
}

int
llb_merge_run (const struct llb_vertex *v, const char *const *inputs, const char *state_dir, char **image,
               ps_error **err)
{
  const Pb__MergeOp *m = v->op->merge;
  /* Scratch inputs add nothing (BuildKit drops them too). */
  cleanup_free size_t *layer = xcalloc (m->n_inputs + 1, sizeof *layer);
  size_t n = 0;
  for (size_t i = 0; i < m->n_inputs; i++)
    if (inputs[m->inputs[i]->input] != NULL)
      layer[n++] = i;
  if (n == 0)
    return empty_image (image, err);
  if (n == 1)
    {
      *image = xstrdup (inputs[m->inputs[layer[0]]->input]);
      return 0;
    }

  /* The first input is the base as it is (its layers are reused); the
     others are applied over it in order, each one's deletions first. */
  const char *first = inputs[m->inputs[layer[0]]->input];
  struct buildah_wc dst = { 0 };
  ps_strv w = { 0 }, keep = { 0 };
  int ret = llb_wc_from (first, true, &dst, err);
  if (ret == 0)
    ret = llb_whiteouts_read (state_dir, first, &w, err);
  for (size_t k = 1; ret == 0 && k < n; k++)
    {
      const char *img = inputs[m->inputs[layer[k]]->input];
      struct buildah_wc src = { 0 };
      size_t from = w.n;
      ret = llb_whiteouts_read (state_dir, img, &w, err);
      if (ret == 0)
        {
          ps_strv mine = { w.v + from, w.n - from, 0 };
          ret = llb_tree_delete (dst.mnt, &mine, err);
        }
      if (ret == 0)
        ret = llb_wc_from (img, true, &src, err);
      if (ret == 0)
        ret = llb_tree_apply (dst.mnt, src.mnt, v->digest, err);
      llb_wc_remove (&src);
      if (ret < 0)
        ps_error_wrap (err, "merge input %zu (%.12s)", layer[k], img);
    }
  /* A deletion stays part of the result while its path is still absent:
     merged again over something else, the result deletes it there too. */
  if (ret == 0)
    ret = llb_whiteouts_absent (dst.mnt, &w, &keep, err);
  if (ret == 0)
    ret = commit_with_whiteouts (&dst, state_dir, &keep, image, err);
  llb_wc_remove (&dst);
  ps_strv_free (&w);
  ps_strv_free (&keep);
  return ret;
}

int
llb_diff_run (const struct llb_vertex *v, const char *lower, const char *upper, const char *state_dir, char **image,
              ps_error **err)
{
  if (lower == NULL && upper == NULL)
    return empty_image (image, err);
  if (lower == NULL)
    {
      *image = xstrdup (upper); /* nothing to subtract: upper, deletions and all */
      return 0;
    }
  if (upper && strcmp (lower, upper) == 0)
    return empty_image (image, err);

  struct buildah_wc l = { 0 }, u = { 0 }, out = { 0 };
  ps_strv w = { 0 };
  int ret = llb_wc_from (lower, true, &l, err);
  if (ret == 0 && upper)
    ret = llb_wc_from (upper, true, &u, err);
  if (ret == 0)
    ret = llb_wc_from (NULL, true, &out, err);
  if (ret == 0)
    ret = llb_tree_diff (l.mnt, upper ? u.mnt : NULL, out.mnt, &w, v->digest, err);
  if (ret == 0)
    ret = commit_with_whiteouts (&out, state_dir, &w, image, err);
  llb_wc_remove (&out);
  llb_wc_remove (&u);
  llb_wc_remove (&l);
  ps_strv_free (&w);
  return ret;
}
