/* diffcopy.c — the FileSync/DiffCopy receiver (daemon side).
 *
 * An explicit state machine over the packets of buildkit-protocols.md §3.5
 * (checklist §10.2).  One function per event:
 *
 *   DC_LISTING      on_stat: validate, record (nothing touches the disk yet)
 *        | on_end_of_listing: reconcile dest_dir with the listing (remove
 *        |   what is gone, create dirs/symlinks/fifos, keep unchanged files),
 *        v   then REQ every new or changed regular file
 *   DC_TRANSFERRING on_data: append to that file's temporary; an empty DATA
 *        |   completes it (metadata applied, renamed into place)
 *        | when no requested file is open: finish (hard links, directory
 *        v   metadata last) and send FIN                        (§3.5 step 5)
 *   DC_FIN_SENT     on_fin: the sender echoed FIN               (§3.5 step 6)
 *        v
 *   DC_DRAINING     diffcopy_receiver_end: grpc-status 0 ends the transfer
 *        v
 *   DC_DONE         (any error on the way: diffcopy_receiver_fail, DC_FAILED,
 *                    temporaries removed, ERR sent, call cancelled — §3.5
 *                    step 7)
 *
 * The state machine knows nothing of gRPC: diffcopy_receive feeds it the
 * messages of the call and gives it call_send to answer through, and the
 * fuzzer (tests/fuzz/fuzz_diffcopy.c) drives the same functions directly.
 *
 * Requests are deferred until the end of the listing (the protocol allows
 * it, §3.5 step 3): the whole listing is then known, so stale entries can be
 * removed before any temporary file exists and the temporaries never need
 * telling apart from the client's own files.  The docker CLI sends its
 * listing as fast as it can stat, so this costs little.
 *
 * Paths are untrusted.  Every STAT path is checked like fsutil's Validator
 * (clean, relative, no "..", parent seen as a directory before the child,
 * names strictly increasing within a directory); because a child is only
 * accepted under a parent the listing declared a directory, and reconcile
 * replaces anything in dest_dir whose type differs from the listing, no path
 * we write ever goes through a symlink the client planted.  Symlink targets
 * are stored, never followed.
 */
#define _GNU_SOURCE
#include "session/diffcopy.h"
#include "session/fsutil_mode.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "schema/fsutil.pb-c.h"
#include "session/session_limits.h"
#include "common/dockerignore.h"

#define DIFFCOPY_METHOD "/moby.filesync.v1.FileSync/DiffCopy"


/* Prefix of our temporary files inside dest_dir. */
#define DC_TMP_PREFIX ".podsolve-diffcopy-"

enum dc_state
{
  DC_LISTING,
  DC_TRANSFERRING,
  DC_FIN_SENT,
  DC_DRAINING,
  DC_DONE,
  DC_FAILED,
};

enum dc_kind
{
  DC_DIR,
  DC_FILE,
  DC_HARDLINK,
  DC_SYMLINK,
  DC_FIFO,
  DC_DEVICE,
  DC_SKIPPED, /* excluded, or a type we do not create (socket, irregular) */
};

struct dc_xattr
{
  char *name;
  void *value;
  size_t len;
};

struct dc_entry
{
  char *path;
  enum dc_kind kind;
  mode_t perm; /* POSIX permission + setuid/setgid/sticky bits */
  uint32_t uid, gid;
  int64_t size;
  int64_t mtime; /* ns */
  char *linkname;
  dev_t rdev;
  bool char_dev;
  struct dc_xattr *xattrs;
  size_t n_xattrs;

  /* Transfer of a requested file. */
  bool requested;
  bool done;
  int fd;
  char *tmp; /* relative to dest, once created */
};

/* One open directory on the validation stack: entries of `dir` must come
   in increasing name order; `last` is the previous name seen in it. */
struct dc_parent
{
  const char *dir; /* "" for the root; points into an entry's path */
  size_t dirlen;
  const char *last;
};

struct diffcopy_receiver
{
  enum dc_state state;
  const char *who;
  const char *dest;
  int dest_fd;
  const struct diffcopy_opts *o;
  struct diffcopy_stats st;
  diffcopy_send_fn send; /* the transport: REQ, FIN and ERR to the sender */
  void *send_ud;
  ps_ignore *exclude;
  bool as_root;
  uint64_t max_bytes;
  size_t max_entries;

  struct dc_entry *e; /* index = file id = position in the STAT sequence */
  size_t n, cap;
  uint32_t *slots;    /* path hash -> index + 1 */
  size_t nslots;

  struct dc_parent *stack;
  size_t depth, stack_cap;

  size_t outstanding;  /* requested files not yet complete */
  uint32_t open_ids[PS_DIFFCOPY_MAX_OPEN_FILES];
  size_t n_open;
};

/* ---- path checks (§3.4, §3.5 "Validation") ------------------------------------ */

int
diffcopy_check_path (const char *path, ps_error **err)
{
  size_t len = path ? strlen (path) : 0;
  if (len == 0)
    return ps_error_set (err, 400, "empty path");
  if (len > PS_MAX_CONTEXT_PATH)
    return ps_error_set (err, 400, "path \"%.64s...\" is longer than %d bytes", path, PS_MAX_CONTEXT_PATH);
  if (path[0] == '/')
    return ps_error_set (err, 400, "absolute path \"%s\"", path);
  const char *p = path;
  for (;;)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      if (n == 2 && p[0] == '.' && p[1] == '.')
        return ps_error_set (err, 400, "path \"%s\" escapes the directory (\"..\")", path);
      if (n == 0 || (n == 1 && p[0] == '.'))
        return ps_error_set (err, 400, "unclean path \"%s\"", path);
      if (n > NAME_MAX)
        return ps_error_set (err, 400, "path \"%.64s...\" has a name longer than %d bytes", path, NAME_MAX);
      if (slash == NULL)
        break;
      p = slash + 1;
    }
  return 0;
}

/* ---- the path table --------------------------------------------------------------- */

static uint64_t
hash_str (const char *s)
{
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char) *s) * 1099511628211ULL;
  return h;
}

static void
table_insert (struct diffcopy_receiver *d, size_t idx)
{
  if ((d->n + 1) * 2 > d->nslots)
    {
      size_t nslots = d->nslots ? d->nslots * 2 : 1024;
      uint32_t *slots = xcalloc (nslots, sizeof *slots);
      for (size_t i = 0; i < d->nslots; i++)
        if (d->slots[i])
          {
            size_t j = hash_str (d->e[d->slots[i] - 1].path) & (nslots - 1);
            while (slots[j])
              j = (j + 1) & (nslots - 1);
            slots[j] = d->slots[i];
          }
      free (d->slots);
      d->slots = slots;
      d->nslots = nslots;
    }
  size_t j = hash_str (d->e[idx].path) & (d->nslots - 1);
  while (d->slots[j])
    j = (j + 1) & (d->nslots - 1);
  d->slots[j] = (uint32_t) idx + 1;
}

static struct dc_entry *
table_find (struct diffcopy_receiver *d, const char *path)
{
  if (d->nslots == 0)
    return NULL;
  size_t j = hash_str (path) & (d->nslots - 1);
  while (d->slots[j])
    {
      struct dc_entry *e = &d->e[d->slots[j] - 1];
      if (strcmp (e->path, path) == 0)
        return e;
      j = (j + 1) & (d->nslots - 1);
    }
  return NULL;
}

/* ---- small helpers ---------------------------------------------------------------- */

static mode_t
go_perm (uint32_t m)
{
  mode_t perm = m & 0777;
  if (m & GO_MODE_SETUID)
    perm |= S_ISUID;
  if (m & GO_MODE_SETGID)
    perm |= S_ISGID;
  if (m & GO_MODE_STICKY)
    perm |= S_ISVTX;
  return perm;
}

static const char *
kind_name (enum dc_kind k)
{
  static const char *const names[] = { "directory", "file", "hard link", "symlink", "fifo", "device", "skipped" };
  return names[k];
}

static struct timespec
ns_to_ts (int64_t ns)
{
  struct timespec ts = { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL };
  if (ts.tv_nsec < 0)
    {
      ts.tv_sec--;
      ts.tv_nsec += 1000000000L;
    }
  return ts;
}

static int64_t
st_mtime_ns (const struct stat *st)
{
  return (int64_t) st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

/* Only user xattrs and file capabilities are applied: the others
   (trusted.*, security.selinux, system.*) would let a client set
   host-level attributes on files in our cache. */
static bool
xattr_allowed (const char *name)
{
  return ps_str_has_prefix (name, "user.") || strcmp (name, "security.capability") == 0;
}

static void
apply_xattrs_fd (struct diffcopy_receiver *d, struct dc_entry *e, int fd)
{
  for (size_t i = 0; i < e->n_xattrs; i++)
    if (xattr_allowed (e->xattrs[i].name)
        && fsetxattr (fd, e->xattrs[i].name, e->xattrs[i].value, e->xattrs[i].len, 0) < 0)
      ps_debug ("diffcopy %s: %s: xattr %s not applied: %s", d->who, e->path, e->xattrs[i].name, strerror (errno));
}

static void
apply_xattrs_path (struct diffcopy_receiver *d, struct dc_entry *e)
{
  if (e->n_xattrs == 0)
    return;
  cleanup_free char *full = xasprintf ("%s/%s", d->dest, e->path);
  for (size_t i = 0; i < e->n_xattrs; i++)
    if (xattr_allowed (e->xattrs[i].name)
        && lsetxattr (full, e->xattrs[i].name, e->xattrs[i].value, e->xattrs[i].len, 0) < 0)
      ps_debug ("diffcopy %s: %s: xattr %s not applied: %s", d->who, e->path, e->xattrs[i].name, strerror (errno));
}

/* Owner, mode (not for symlinks), then times: chown clears setuid bits, so
   it goes first; times go last because the other two touch ctime only. */
static int
apply_meta_at (struct diffcopy_receiver *d, struct dc_entry *e, ps_error **err)
{
  if (d->as_root && fchownat (d->dest_fd, e->path, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", e->path);
  if (e->kind != DC_SYMLINK && fchmodat (d->dest_fd, e->path, e->perm, 0) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", e->path);
  if (e->kind != DC_SYMLINK)
    apply_xattrs_path (d, e);
  struct timespec ts[2] = { ns_to_ts (e->mtime), ns_to_ts (e->mtime) };
  if (utimensat (d->dest_fd, e->path, ts, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "set times of %s", e->path);
  return 0;
}

static int
send_packet (struct diffcopy_receiver *d, Fsutil__Types__Packet *p, bool final, ps_error **err)
{
  size_t len = fsutil__types__packet__get_packed_size (p);
  cleanup_free uint8_t *buf = xmalloc (len + 1);
  fsutil__types__packet__pack (p, buf);
  return d->send (d->send_ud, buf, len, final, err);
}

static int
send_req (struct diffcopy_receiver *d, uint32_t id, ps_error **err)
{
  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ;
  p.id = id;
  return send_packet (d, &p, false, err);
}

/* ---- event: STAT with a stat (§3.5 receiver step 2) --------------------------------- */

static int
validate_order (struct diffcopy_receiver *d, struct dc_entry *e, ps_error **err)
{
  const char *slash = strrchr (e->path, '/');
  size_t dirlen = slash ? (size_t) (slash - e->path) : 0;
  const char *base = slash ? slash + 1 : e->path;
  /* Close directories until the top of the stack is this entry's parent. */
  while (d->depth > 1
         && !(d->stack[d->depth - 1].dirlen == dirlen && memcmp (d->stack[d->depth - 1].dir, e->path, dirlen) == 0))
    d->depth--;
  struct dc_parent *top = &d->stack[d->depth - 1];
  if (!(top->dirlen == dirlen && memcmp (top->dir, e->path, dirlen) == 0))
    return ps_error_set (err, 400, "entry \"%s\" arrived without its parent directory (or out of order)", e->path);
  if (top->last && strcmp (base, top->last) <= 0)
    return ps_error_set (err, 400, "entries out of order: \"%s\" after \"%.*s%s%s\"", e->path, (int) dirlen,
                         e->path, dirlen ? "/" : "", top->last);
  top->last = base;
  if (e->kind == DC_DIR)
    {
      if (d->depth == d->stack_cap)
        {
          d->stack_cap *= 2;
          d->stack = xrealloc (d->stack, d->stack_cap * sizeof *d->stack);
        }
      d->stack[d->depth++] = (struct dc_parent) { .dir = e->path, .dirlen = strlen (e->path), .last = NULL };
    }
  return 0;
}

static int
on_stat (struct diffcopy_receiver *d, const Fsutil__Types__Stat *st, ps_error **err)
{
  if (d->state != DC_LISTING)
    return ps_error_set (err, 400, "STAT packet after the end of the listing");
  if (d->n >= d->max_entries)
    return ps_error_set (err, 413, "more than %zu entries", d->max_entries);
  if (diffcopy_check_path (st->path, err) < 0)
    return -1;
  if (strncmp (st->path, DC_TMP_PREFIX, strlen (DC_TMP_PREFIX)) == 0 && strchr (st->path, '/') == NULL)
    ps_debug ("diffcopy %s: the client sends a file named like our temporaries: %s", d->who, st->path);

  if (d->n == d->cap)
    {
      d->cap = d->cap ? d->cap * 2 : 256;
      d->e = xrealloc (d->e, d->cap * sizeof *d->e);
    }
  struct dc_entry *e = &d->e[d->n];
  memset (e, 0, sizeof *e);
  e->fd = -1;
  e->path = xstrdup (st->path);
  e->perm = go_perm (st->mode);
  e->uid = st->uid;
  e->gid = st->gid;
  e->size = st->size;
  e->mtime = st->modtime;
  const char *link = st->linkname ? st->linkname : "";
  uint32_t m = st->mode;
  if (m & GO_MODE_DIR)
    e->kind = DC_DIR;
  else if (m & GO_MODE_SYMLINK)
    e->kind = DC_SYMLINK;
  else if (m & GO_MODE_DEVICE)
    e->kind = DC_DEVICE;
  else if (m & GO_MODE_NAMED_PIPE)
    e->kind = DC_FIFO;
  else if (m & GO_MODE_TYPE)
    e->kind = DC_SKIPPED; /* socket, irregular: nothing to create */
  else
    e->kind = link[0] ? DC_HARDLINK : DC_FILE;
  d->n++; /* the entry is ours to free from here on */

  if (e->kind == DC_SYMLINK || e->kind == DC_HARDLINK)
    e->linkname = xstrdup (link);
  if (e->kind == DC_DEVICE)
    {
      e->rdev = makedev ((unsigned) st->devmajor, (unsigned) st->devminor);
      e->char_dev = (m & GO_MODE_CHAR_DEVICE) != 0;
    }
  if (st->n_xattrs)
    {
      e->xattrs = xcalloc (st->n_xattrs, sizeof *e->xattrs);
      for (size_t i = 0; i < st->n_xattrs; i++)
        {
          const Fsutil__Types__Stat__XattrsEntry *x = st->xattrs[i];
          e->xattrs[i].name = xstrdup (x->key ? x->key : "");
          e->xattrs[i].value = xmalloc (x->value.len + 1);
          if (x->value.len)
            memcpy (e->xattrs[i].value, x->value.data, x->value.len);
          e->xattrs[i].len = x->value.len;
        }
      e->n_xattrs = st->n_xattrs;
    }

  if (validate_order (d, e, err) < 0)
    return -1;
  if (e->kind == DC_SYMLINK && (e->linkname[0] == '\0' || strlen (e->linkname) >= PATH_MAX))
    return ps_error_set (err, 400, "symlink \"%s\" without a target or with one over %d bytes", e->path,
                         PATH_MAX - 1);
  if (e->kind == DC_HARDLINK)
    {
      /* fsutil's Hardlinks validator: the source must be an earlier regular
         file of this transfer (not itself a link). */
      struct dc_entry *target = table_find (d, e->linkname);
      if (target == NULL || (target->kind != DC_FILE && target->kind != DC_SKIPPED))
        return ps_error_set (err, 400, "invalid link \"%s\" to unknown path \"%s\"", e->path, e->linkname);
      if (target->kind == DC_SKIPPED)
        e->kind = DC_SKIPPED;
    }
  if (d->exclude && e->kind != DC_DIR && e->kind != DC_SKIPPED && ps_ignore_matches (d->exclude, e->path))
    {
      ps_debug ("diffcopy %s: %s is excluded; the client sent it anyway", d->who, e->path);
      e->kind = DC_SKIPPED;
    }
  table_insert (d, d->n - 1);
  d->st.entries++;
  return 0;
}

/* ---- event: end of listing (§3.5 receiver step 3) ----------------------------------- */

/* Remove whatever dest_dir holds that the listing does not (or holds with
   another type), recursively.  `rel` is the directory relative to dest
   ("" for dest itself), `fd` an open descriptor of it. */
static int
prune_dir (struct diffcopy_receiver *d, int fd, const char *rel, ps_error **err)
{
  int dupfd = dup (fd);
  if (dupfd < 0)
    return ps_error_set_errno (err, 500, errno, "dup");
  DIR *dir = fdopendir (dupfd);
  if (dir == NULL)
    {
      close (dupfd);
      return ps_error_set_errno (err, 500, errno, "opendir %s/%s", d->dest, rel);
    }
  rewinddir (dir); /* the duplicate shares the descriptor's offset */
  int ret = 0;
  struct dirent *de;
  while (ret == 0 && (errno = 0, de = readdir (dir)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      cleanup_free char *path = rel[0] ? xasprintf ("%s/%s", rel, de->d_name) : xstrdup (de->d_name);
      struct dc_entry *e = table_find (d, path);
      struct stat st;
      if (fstatat (fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          if (errno == ENOENT)
            continue;
          ret = ps_error_set_errno (err, 500, errno, "stat %s/%s", d->dest, path);
          break;
        }
      bool keep = e != NULL && e->kind != DC_SKIPPED;
      if (keep)
        {
          bool is_dir = S_ISDIR (st.st_mode);
          keep = (e->kind == DC_DIR) == is_dir;
          if (keep && e->kind == DC_SYMLINK)
            keep = S_ISLNK (st.st_mode);
          if (keep && (e->kind == DC_FILE || e->kind == DC_HARDLINK))
            keep = S_ISREG (st.st_mode);
        }
      if (!keep)
        {
          cleanup_free char *full = xasprintf ("%s/%s", d->dest, path);
          if (ps_rm_rf (full, err) < 0)
            {
              ret = ps_error_wrap (err, "remove stale %s", path);
              break;
            }
          if (e == NULL || e->kind == DC_SKIPPED)
            d->st.removed++;
          continue;
        }
      if (e->kind == DC_DIR)
        {
          /* We write into it; its real mode is applied when we finish. */
          if ((st.st_mode & 0700) != 0700 && fchmodat (fd, de->d_name, (st.st_mode & 07777) | 0700, 0) < 0)
            {
              ret = ps_error_set_errno (err, 500, errno, "chmod %s", path);
              break;
            }
          int sub = openat (fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub < 0)
            {
              ret = ps_error_set_errno (err, 500, errno, "open %s/%s", d->dest, path);
              break;
            }
          ret = prune_dir (d, sub, path, err);
          close (sub);
        }
    }
  if (ret == 0 && errno != 0 && de == NULL)
    ret = ps_error_set_errno (err, 500, errno, "readdir %s/%s", d->dest, rel);
  closedir (dir);
  return ret;
}

/* FIFOs and device nodes: created from the stat alone. */
static int
make_special (struct diffcopy_receiver *d, struct dc_entry *e, ps_error **err)
{
  mode_t type = e->kind == DC_FIFO ? S_IFIFO : e->char_dev ? S_IFCHR : S_IFBLK;
  struct stat st;
  if (fstatat (d->dest_fd, e->path, &st, AT_SYMLINK_NOFOLLOW) == 0)
    {
      if ((st.st_mode & S_IFMT) == type && (e->kind == DC_FIFO || st.st_rdev == e->rdev))
        return apply_meta_at (d, e, err);
      if (unlinkat (d->dest_fd, e->path, 0) < 0)
        return ps_error_set_errno (err, 500, errno, "remove %s", e->path);
    }
  if (mknodat (d->dest_fd, e->path, type | 0600, e->kind == DC_FIFO ? 0 : e->rdev) < 0)
    {
      if (e->kind == DC_DEVICE && (errno == EPERM || errno == EACCES))
        {
          /* Unprivileged: a device node in a build context is almost surely
             an accident (a copied /dev); leave it out rather than fail. */
          ps_warn ("diffcopy %s: device %s not created: %s", d->who, e->path, strerror (errno));
          e->kind = DC_SKIPPED;
          return 0;
        }
      return ps_error_set_errno (err, 500, errno, "mknod %s", e->path);
    }
  return apply_meta_at (d, e, err);
}

/* Bring one listed entry into dest_dir (except file contents and hard
   links); request the file when its contents may differ. */
static int
reconcile_entry (struct diffcopy_receiver *d, struct dc_entry *e, uint32_t id, ps_error **err)
{
  struct stat st;
  bool exists = fstatat (d->dest_fd, e->path, &st, AT_SYMLINK_NOFOLLOW) == 0;
  if (!exists && errno != ENOENT)
    return ps_error_set_errno (err, 500, errno, "stat %s", e->path);

  switch (e->kind)
    {
    case DC_DIR:
      if (!exists && mkdirat (d->dest_fd, e->path, 0700) < 0)
        return ps_error_set_errno (err, 500, errno, "mkdir %s", e->path);
      return 0; /* metadata when we finish: writing inside changes its mtime */

    case DC_FILE:
      if (exists && S_ISREG (st.st_mode) && st.st_size == e->size && st_mtime_ns (&st) == e->mtime)
        {
          /* Same size and mtime: unchanged (fsutil's test too); fix what
             metadata differs without moving the contents. */
          if (d->as_root && (st.st_uid != e->uid || st.st_gid != e->gid)
              && fchownat (d->dest_fd, e->path, e->uid, e->gid, AT_SYMLINK_NOFOLLOW) < 0)
            return ps_error_set_errno (err, 500, errno, "chown %s", e->path);
          if ((st.st_mode & 07777) != e->perm || (d->as_root && (st.st_uid != e->uid || st.st_gid != e->gid)))
            if (fchmodat (d->dest_fd, e->path, e->perm, 0) < 0)
              return ps_error_set_errno (err, 500, errno, "chmod %s", e->path);
          return 0;
        }
      e->requested = true;
      d->outstanding++;
      d->st.files_requested++;
      return send_req (d, id, err);

    case DC_SYMLINK:
      {
        if (exists && S_ISLNK (st.st_mode))
          {
            char target[PATH_MAX + 1];
            ssize_t n = readlinkat (d->dest_fd, e->path, target, sizeof target - 1);
            if (n >= 0 && (size_t) n == strlen (e->linkname) && memcmp (target, e->linkname, (size_t) n) == 0)
              return 0; /* owner and times when we finish */
            if (unlinkat (d->dest_fd, e->path, 0) < 0)
              return ps_error_set_errno (err, 500, errno, "remove %s", e->path);
          }
        if (symlinkat (e->linkname, d->dest_fd, e->path) < 0)
          return ps_error_set_errno (err, 500, errno, "symlink %s", e->path);
        return 0;
      }

    case DC_FIFO:
    case DC_DEVICE:
      return make_special (d, e, err);

    case DC_HARDLINK: /* when we finish: the source may still be on its way */
    case DC_SKIPPED:
      return 0;
    }
  return 0;
}

static int
on_end_of_listing (struct diffcopy_receiver *d, ps_error **err)
{
  if (d->state != DC_LISTING)
    return ps_error_set (err, 400, "a second end-of-listing packet");
  /* Stale entries go first, so nothing we create below is ever removed and
     no temporary file exists yet. */
  if (prune_dir (d, d->dest_fd, "", err) < 0)
    return -1;
  for (size_t i = 0; i < d->n; i++)
    {
      struct dc_entry *e = &d->e[i];
      if (reconcile_entry (d, e, (uint32_t) i, err) < 0)
        return ps_error_wrap (err, "%s \"%s\"", kind_name (e->kind), e->path);
    }
  d->state = DC_TRANSFERRING;
  ps_debug ("diffcopy %s: listing done: %zu entries, %zu requested, %zu removed", d->who, d->n,
            d->st.files_requested, d->st.removed);
  return 0;
}

/* ---- event: DATA (§3.5 receiver step 4) ------------------------------------------ */

static void
close_open_file (struct diffcopy_receiver *d, uint32_t id)
{
  struct dc_entry *e = &d->e[id];
  if (e->fd >= 0)
    {
      close (e->fd);
      e->fd = -1;
    }
  for (size_t i = 0; i < d->n_open; i++)
    if (d->open_ids[i] == id)
      {
        memmove (&d->open_ids[i], &d->open_ids[i + 1], (d->n_open - i - 1) * sizeof d->open_ids[0]);
        d->n_open--;
        break;
      }
}

/* The temporary of file `id`, open for appending. */
static int
open_tmp (struct diffcopy_receiver *d, uint32_t id, ps_error **err)
{
  struct dc_entry *e = &d->e[id];
  if (e->fd >= 0)
    return 0;
  if (d->n_open == PS_DIFFCOPY_MAX_OPEN_FILES)
    close_open_file (d, d->open_ids[0]);
  if (e->tmp == NULL)
    {
      const char *slash = strrchr (e->path, '/');
      char rnd[17];
      ps_random_hex (rnd, 8);
      e->tmp = slash ? xasprintf ("%.*s/" DC_TMP_PREFIX "%u-%s.tmp", (int) (slash - e->path), e->path, id, rnd)
                     : xasprintf (DC_TMP_PREFIX "%u-%s.tmp", id, rnd);
      e->fd = openat (d->dest_fd, e->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (e->fd < 0)
        {
          int saved = errno;
          free (e->tmp);
          e->tmp = NULL;
          return ps_error_set_errno (err, 500, saved, "create a temporary for %s", e->path);
        }
    }
  else
    {
      e->fd = openat (d->dest_fd, e->tmp, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
      if (e->fd < 0)
        return ps_error_set_errno (err, 500, errno, "reopen the temporary of %s", e->path);
    }
  d->open_ids[d->n_open++] = id;
  return 0;
}

/* The file is complete: metadata on the temporary, then rename it over the
   final name, so the final name only ever shows a complete file. */
static int
complete_file (struct diffcopy_receiver *d, uint32_t id, ps_error **err)
{
  struct dc_entry *e = &d->e[id];
  if (open_tmp (d, id, err) < 0)
    return -1;
  if (d->as_root && fchown (e->fd, e->uid, e->gid) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", e->path);
  if (fchmod (e->fd, e->perm) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", e->path);
  apply_xattrs_fd (d, e, e->fd);
  struct timespec ts[2] = { ns_to_ts (e->mtime), ns_to_ts (e->mtime) };
  if (futimens (e->fd, ts) < 0)
    return ps_error_set_errno (err, 500, errno, "set times of %s", e->path);
  close_open_file (d, id);
  if (renameat (d->dest_fd, e->tmp, d->dest_fd, e->path) < 0)
    return ps_error_set_errno (err, 500, errno, "rename into %s", e->path);
  free (e->tmp);
  e->tmp = NULL;
  e->done = true;
  d->outstanding--;
  return 0;
}

static int
on_data (struct diffcopy_receiver *d, uint32_t id, const uint8_t *data, size_t len, ps_error **err)
{
  /* fsutil: "invalid file request" for an id it did not ask for. */
  if (d->state != DC_TRANSFERRING || id >= d->n || !d->e[id].requested || d->e[id].done)
    return ps_error_set (err, 400, "invalid file request %u: DATA for a file that was not requested", id);
  struct dc_entry *e = &d->e[id];
  if (len == 0)
    return complete_file (d, id, err);
  if (d->st.file_bytes + len > d->max_bytes)
    return ps_error_set (err, 413, "the directory is larger than %llu bytes", (unsigned long long) d->max_bytes);
  if (open_tmp (d, id, err) < 0)
    return -1;
  while (len > 0)
    {
      ssize_t w = write (e->fd, data, len);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return ps_error_set_errno (err, ps_write_errno_status (errno), errno, "write %s", e->path);
        }
      data += w;
      len -= (size_t) w;
      d->st.file_bytes += (uint64_t) w;
    }
  return 0;
}

/* ---- after each event: finish when everything arrived (§3.5 step 5) --------------------- */

static int
finish (struct diffcopy_receiver *d, ps_error **err)
{
  /* Hard links: their sources are complete now. */
  for (size_t i = 0; i < d->n; i++)
    {
      struct dc_entry *e = &d->e[i];
      if (e->kind != DC_HARDLINK)
        continue;
      struct stat a, b;
      if (fstatat (d->dest_fd, e->linkname, &a, AT_SYMLINK_NOFOLLOW) < 0)
        return ps_error_set_errno (err, 500, errno, "hard link %s: source %s", e->path, e->linkname);
      if (fstatat (d->dest_fd, e->path, &b, AT_SYMLINK_NOFOLLOW) == 0)
        {
          if (a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            continue;
          if (unlinkat (d->dest_fd, e->path, 0) < 0)
            return ps_error_set_errno (err, 500, errno, "remove %s", e->path);
        }
      if (linkat (d->dest_fd, e->linkname, d->dest_fd, e->path, 0) < 0)
        return ps_error_set_errno (err, 500, errno, "hard link %s to %s", e->path, e->linkname);
    }
  /* Symlinks, then directories deepest first: every change inside a
     directory is done before its times are set. */
  for (size_t i = d->n; i-- > 0;)
    {
      struct dc_entry *e = &d->e[i];
      if ((e->kind == DC_SYMLINK || e->kind == DC_DIR) && apply_meta_at (d, e, err) < 0)
        return -1;
    }
  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN;
  if (send_packet (d, &p, false, err) < 0)
    return -1;
  d->state = DC_FIN_SENT;
  return 0;
}

static int
after_event (struct diffcopy_receiver *d, ps_error **err)
{
  if (d->state == DC_TRANSFERRING && d->outstanding == 0)
    return finish (d, err);
  return 0;
}

/* ---- failure (§3.5 step 7) ------------------------------------------------------- */

void
diffcopy_receiver_fail (struct diffcopy_receiver *d, const char *msg)
{
  for (size_t i = 0; i < d->n; i++)
    {
      struct dc_entry *e = &d->e[i];
      if (e->fd >= 0)
        {
          close (e->fd);
          e->fd = -1;
        }
      if (e->tmp)
        {
          if (unlinkat (d->dest_fd, e->tmp, 0) < 0 && errno != ENOENT)
            ps_warn ("diffcopy %s: cannot remove %s/%s: %s", d->who, d->dest, e->tmp, strerror (errno));
          free (e->tmp);
          e->tmp = NULL;
        }
    }
  d->n_open = 0;
  if (d->state != DC_FAILED)
    {
      /* Tell the sender why; it ends its side on ERR ("error from receiver"). */
      Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
      p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR;
      p.data.data = (uint8_t *) msg;
      p.data.len = strlen (msg);
      cleanup_error ps_error *ignored = NULL;
      send_packet (d, &p, true, &ignored);
    }
  d->state = DC_FAILED;
}

/* ---- the loop ----------------------------------------------------------------------- */

/* One packet from the sender: dispatch on its type. */
int
diffcopy_receiver_packet (struct diffcopy_receiver *d, const void *msg, size_t len, ps_error **err)
{
  if (d->state == DC_DONE || d->state == DC_FAILED)
    return ps_error_set (err, 400, "a packet after the transfer ended");
  d->st.bytes += len;
  Fsutil__Types__Packet *p = fsutil__types__packet__unpack (NULL, len, msg);
  if (p == NULL)
    return ps_error_set (err, 400, "undecodable fsutil packet (%zu bytes)", len);
  int r = 0;
  switch (p->type)
    {
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_STAT:
      if (p->stat)
        r = on_stat (d, p->stat, err);
      else
        r = on_end_of_listing (d, err);
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA:
      r = on_data (d, p->id, p->data.data, p->data.len, err);
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN:
      if (d->state != DC_FIN_SENT)
        r = ps_error_set (err, 400, "the client sent FIN before the transfer was complete");
      else
        d->state = DC_DRAINING;
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR:
      r = ps_error_set (err, 502, "error from sender: %.*s", (int) (p->data.len < 4096 ? p->data.len : 4096),
                        p->data.data ? (const char *) p->data.data : "");
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ:
      r = ps_error_set (err, 400, "the client sent REQ: it is the sender here");
      break;
    default:
      r = ps_error_set (err, 400, "unknown fsutil packet type %d", (int) p->type);
      break;
    }
  fsutil__types__packet__free_unpacked (p, NULL);
  if (r == 0)
    r = after_event (d, err);
  return r;
}

/* The call ended with grpc-status 0 (§3.5 step 6). */
int
diffcopy_receiver_end (struct diffcopy_receiver *d, ps_error **err)
{
  if (d->state == DC_DRAINING || d->state == DC_FIN_SENT)
    {
      d->state = DC_DONE;
      return 0;
    }
  return ps_error_set (err, 502, "the client ended the transfer early (%s)",
                       d->state == DC_LISTING ? "during the listing" : "with files outstanding");
}

void
diffcopy_receiver_stats (const struct diffcopy_receiver *d, struct diffcopy_stats *st)
{
  *st = d->st;
}

struct diffcopy_receiver *
diffcopy_receiver_new (const char *who, const char *dest_dir, const struct diffcopy_opts *o, diffcopy_send_fn send,
                       void *send_ud, ps_error **err)
{
  if (o->dir_name == NULL || o->dir_name[0] == '\0')
    return ps_error_set (err, 500, "diffcopy: no dir-name"), NULL;
  struct diffcopy_receiver *d = xcalloc (1, sizeof *d);
  d->state = DC_LISTING;
  d->who = xstrdup (who);
  d->dest = xstrdup (dest_dir);
  d->dest_fd = -1;
  d->o = o;
  d->send = send;
  d->send_ud = send_ud;
  d->as_root = geteuid () == 0;
  d->max_bytes = o->max_bytes ? o->max_bytes : PS_DEFAULT_MAX_CONTEXT_BYTES;
  d->max_entries = o->max_entries ? o->max_entries : PS_MAX_CONTEXT_ENTRIES;
  d->stack_cap = 16;
  d->stack = xcalloc (d->stack_cap, sizeof *d->stack);
  d->stack[0] = (struct dc_parent) { .dir = "", .dirlen = 0, .last = NULL };
  d->depth = 1;
  if (o->n_exclude)
    {
      d->exclude = ps_ignore_from_patterns (o->exclude_patterns, o->n_exclude, err);
      if (d->exclude == NULL)
        goto fail;
    }
  if (ps_mkdir_p (dest_dir, 0700, err) < 0)
    goto fail;
  d->dest_fd = open (dest_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d->dest_fd < 0)
    {
      ps_error_set_errno (err, 500, errno, "open %s", dest_dir);
      goto fail;
    }
  return d;
fail:
  diffcopy_receiver_free (d);
  return NULL;
}

void
diffcopy_receiver_free (struct diffcopy_receiver *d)
{
  if (d == NULL)
    return;
  for (size_t i = 0; i < d->n; i++)
    {
      struct dc_entry *e = &d->e[i];
      if (e->fd >= 0)
        close (e->fd);
      free (e->path);
      free (e->linkname);
      free (e->tmp);
      for (size_t j = 0; j < e->n_xattrs; j++)
        {
          free (e->xattrs[j].name);
          free (e->xattrs[j].value);
        }
      free (e->xattrs);
    }
  free (d->e);
  free (d->slots);
  free (d->stack);
  if (d->exclude)
    ps_ignore_free (d->exclude);
  if (d->dest_fd >= 0)
    close (d->dest_fd);
  free ((char *) d->who);
  free ((char *) d->dest);
  free (d);
}

/* ---- the transport: a gRPC call on the session -------------------------------- */

struct call_transport
{
  grpc_call *call; /* NULL until the call is started */
};

/* diffcopy_send_fn over the call. */
static int
call_send (void *ud, const void *packet, size_t len, bool final, ps_error **err)
{
  struct call_transport *t = ud;
  if (t->call == NULL)
    return final ? 0 : ps_error_set (err, 500, "diffcopy: no call");
  /* Once the sender has ended the call, what it sent before (an ERR
     packet, typically) and its status explain the end better than a
     failed send, and the loop reads them next. */
  if (grpc_call_status (t->call) >= 0)
    return 0;
  cleanup_error ps_error *serr = NULL;
  if (final)
    {
      /* The ERR of a failing transfer: never wait on a peer that reads
         nothing (the send buffer is full only then).  ERR, half-close, and
         a moment for both to leave before the cancel (RST_STREAM would
         overtake queued DATA). */
      if (grpc_call_flush (t->call, 200) && grpc_call_send (t->call, packet, len, &serr) == 0)
        {
          grpc_call_close_send (t->call, &serr);
          grpc_call_flush (t->call, 1000);
        }
      grpc_call_cancel (t->call);
      return 0;
    }
  if (grpc_call_send (t->call, packet, len, &serr) == 0 || grpc_call_status (t->call) >= 0)
    return 0;
  *err = steal_pointer (&serr);
  return -1;
}

/* --session-transfer-timeout; set once at start-up, before any build. */
static int default_idle_ms = PS_DIFFCOPY_IDLE_TIMEOUT_MS;

void
diffcopy_set_idle_timeout (int ms)
{
  default_idle_ms = ms > 0 ? ms : PS_DIFFCOPY_IDLE_TIMEOUT_MS;
}

static int
run (struct diffcopy_receiver *d, grpc_conn *conn, struct call_transport *t, ps_error **err)
{
  const struct diffcopy_opts *o = d->o;
  /* §3.2 metadata. */
  size_t n_md = 1 + o->n_include + o->n_exclude + o->n_follow;
  cleanup_free struct grpc_metadata *md = xcalloc (n_md, sizeof *md);
  size_t k = 0;
  md[k++] = (struct grpc_metadata) { "dir-name", o->dir_name };
  for (size_t i = 0; i < o->n_include; i++)
    md[k++] = (struct grpc_metadata) { "include-patterns", o->include_patterns[i] };
  for (size_t i = 0; i < o->n_exclude; i++)
    md[k++] = (struct grpc_metadata) { "exclude-patterns", o->exclude_patterns[i] };
  for (size_t i = 0; i < o->n_follow; i++)
    md[k++] = (struct grpc_metadata) { "followpaths", o->follow_paths[i] };

  t->call = grpc_call_start (conn, DIFFCOPY_METHOD, md, k, err);
  if (t->call == NULL)
    return -1;

  int idle_ms = o->idle_timeout_ms > 0 ? o->idle_timeout_ms : default_idle_ms;
  int64_t last = ps_monotonic_ns ();
  /* The sender talks first (§3.5 step 1): just read. */
  for (;;)
    {
      int slice = o->cancelled ? 250 : idle_ms;
      void *msg = NULL;
      size_t len = 0;
      cleanup_error ps_error *rerr = NULL;
      int r = grpc_call_recv (t->call, &msg, &len, slice, &rerr);
      if (r < 0 && grpc_call_status (t->call) < 0 && rerr && rerr->status == 504)
        {
          /* A recv slice timed out: the call itself is still running. */
          if (o->cancelled && o->cancelled (o->cancel_ud))
            return ps_error_set (err, 500, "cancelled");
          if (ps_monotonic_ns () - last >= (int64_t) idle_ms * 1000000)
            return idle_ms % 1000 ? ps_error_set (err, 504, "no packet from the client for %d ms", idle_ms)
                                  : ps_error_set (err, 504, "no packet from the client for %d s", idle_ms / 1000);
          continue;
        }
      if (r < 0)
        {
          *err = steal_pointer (&rerr);
          return -1;
        }
      if (r == 0)
        return diffcopy_receiver_end (d, err);
      last = ps_monotonic_ns ();
      int pr = diffcopy_receiver_packet (d, msg, len, err);
      free (msg);
      if (pr < 0)
        return -1;
      if (o->progress)
        o->progress (o->progress_ud, d->st.bytes);
    }
}

int
diffcopy_receive (grpc_conn *conn, const char *who, const char *dest_dir, const struct diffcopy_opts *o,
                  struct diffcopy_stats *st, ps_error **err)
{
  struct call_transport t = { NULL };
  cleanup_error ps_error *lerr = NULL;
  struct diffcopy_receiver *d = diffcopy_receiver_new (who, dest_dir, o, call_send, &t, &lerr);
  int ret = -1;
  if (d != NULL)
    {
      ret = run (d, conn, &t, &lerr);
      if (ret < 0)
        diffcopy_receiver_fail (d, lerr->msg);
      else
        {
          /* §3.5 step 6: half-close our side if the sender has not reset it. */
          cleanup_error ps_error *ignored = NULL;
          grpc_call_close_send (t.call, &ignored);
        }
    }
  struct diffcopy_stats stats = { 0 };
  if (d)
    diffcopy_receiver_stats (d, &stats);
  if (ret < 0)
    {
      ps_error_wrap (&lerr, "transfer %s from %s", o->dir_name ? o->dir_name : "?", who);
      if (err)
        *err = steal_pointer (&lerr);
    }
  else
    ps_info ("diffcopy %s: %s: %zu entries, %zu files requested (%llu bytes), %zu removed", who, o->dir_name,
             stats.entries, stats.files_requested, (unsigned long long) stats.file_bytes, stats.removed);
  if (st)
    *st = stats;
  diffcopy_receiver_free (d);
  grpc_call_free (t.call);
  return ret;
}

int
session_diffcopy (ps_session *s, const char *dest_dir, const struct diffcopy_opts *o, struct diffcopy_stats *st,
                  ps_error **err)
{
  cleanup_free char *who = xasprintf ("session %s", session_uuid (s));
  if (!session_has_method (s, DIFFCOPY_METHOD))
    return ps_error_set (err, 400,
                         "transfer %s from %s: the client does not serve FileSync/DiffCopy (not listed in "
                         "X-Docker-Expose-Session-Grpc-Method)",
                         o->dir_name ? o->dir_name : "?", who);
  return diffcopy_receive (session_conn (s), who, dest_dir, o, st, err);
}
