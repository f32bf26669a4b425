/* filesend.c — FileSend/DiffCopy: the build's output to the client.
 *
 * A file (§3.7, type=tar): BytesMessage chunks, half-close, then wait for
 * the client to end the call — it does so (grpc-status 0) only after it
 * has written the last chunk, so a 0 here means the file is on its disk.
 * BuildKit's daemon does the same (filesync.CopyFileWriter).
 *
 * A tree (§3.7, type=local): the fsutil *sender* of §3.5, as an explicit
 * state machine.  One function per event:
 *
 *   FS_LISTING   walk root depth-first, entries of each directory sorted by
 *       |        byte value, a directory before its children; one STAT per
 *       |        entry (its index in this sequence is its file id); then the
 *       v        empty STAT that ends the listing            (§3.5 sender 1–2)
 *   FS_SERVING   on_req: validate the id, send the file as DATA chunks and an
 *       |          empty DATA                                 (§3.5 sender 3)
 *       |        on_fin: answer FIN and half-close
 *       v        on_err: fail with "error from receiver: ..."
 *   FS_FIN_SENT  on_call_end: grpc-status 0 — the client has merged the tree
 *       v
 *   FS_DONE      (any failure: FS_FAILED; our own errors go to the
 *                 receiver as ERR before the call is cancelled)
 *
 * The listing is sent in full before any REQ is read: fsutil allows
 * requests at any time, the client's receiver keeps reading while its
 * REQs wait in our receive window (PS_GRPC_STREAM_WINDOW holds hundreds
 * of thousands of them), and the code stays single-threaded.  Files are
 * sent one at a time in the order requested; fsutil's 4 workers would
 * interleave them, which no receiver relies on.
 *
 * The tree is ours (an exported root file system), but it is read as if
 * it could change under us: directories are opened with O_NOFOLLOW below
 * the root, symlinks are read, never followed, and a file is sent only if
 * it is still the inode that was listed, with the size that was listed —
 * otherwise the STAT the receiver already applied would lie.
 */
#define _GNU_SOURCE
#include "session/filesend.h"
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

#include "common/log.h"
#include "schema/filesync.pb-c.h"
#include "schema/fsutil.pb-c.h"
#include "session/session_limits.h"

#define FILESEND_METHOD "/moby.filesync.v1.FileSend/DiffCopy"

/* Limits of this file (candidates for session_limits.h). */
#ifndef PS_FILESEND_FILE_CHUNK
/* Bytes per BytesMessage of a file output: BuildKit splits at 3 MiB to stay
   clear of the client's 4 MiB gRPC receive limit with the framing. */
#define PS_FILESEND_FILE_CHUNK (3 * 1024 * 1024)
#endif
#ifndef PS_FILESEND_DATA_CHUNK
/* Bytes per DATA packet of a tree output: fsutil's sender buffer (32 KiB). */
#define PS_FILESEND_DATA_CHUNK (32 * 1024)
#endif
#ifndef PS_FILESEND_IDLE_TIMEOUT_MS
/* How long we wait for the client's next packet, or for it to end the call
   once everything is sent.  It answers as fast as it can write to its disk;
   silence this long means it is stuck, and the build must not hang on it. */
#define PS_FILESEND_IDLE_TIMEOUT_MS (120 * 1000)
#endif
#ifndef PS_FILESEND_MAX_DEPTH
/* Directory nesting we walk: one descriptor per level stays open on the
   way down.  Image trees are a few dozen levels deep; far deeper nesting
   is a hostile build and would exhaust the daemon's descriptors. */
#define PS_FILESEND_MAX_DEPTH 256
#endif


/* Go's os.Lstat on Linux (os/stat_linux.go fillFileStatFromSys): the 9
   permission bits, one type bit (none for a regular file), then setuid,
   setgid and sticky as their own bits.  diffcopy.c's go_perm and kind
   decoding are the inverse. */
uint32_t
filesend_go_mode (mode_t st_mode)
{
  uint32_t m = st_mode & 0777;
  switch (st_mode & S_IFMT)
    {
    case S_IFBLK:
      m |= GO_MODE_DEVICE;
      break;
    case S_IFCHR:
      m |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE;
      break;
    case S_IFDIR:
      m |= GO_MODE_DIR;
      break;
    case S_IFIFO:
      m |= GO_MODE_NAMED_PIPE;
      break;
    case S_IFLNK:
      m |= GO_MODE_SYMLINK;
      break;
    case S_IFSOCK:
      m |= GO_MODE_SOCKET;
      break;
    default:
      break;
    }
  if (st_mode & S_ISUID)
    m |= GO_MODE_SETUID;
  if (st_mode & S_ISGID)
    m |= GO_MODE_SETGID;
  if (st_mode & S_ISVTX)
    m |= GO_MODE_STICKY;
  return m;
}

/* ---- shared: the end of the call ------------------------------------------------------ */

/* A failed call's error, in the words a user needs: ALREADY_EXISTS is
   the client declining the target (it exists and it will not replace it). */
static int
call_error (grpc_call *call, ps_error **err)
{
  if (call && grpc_call_status (call) == GRPC_STATUS_ALREADY_EXISTS && *err)
    {
      (*err)->status = 409;
      return ps_error_wrap (err, "the client declined the output");
    }
  return -1;
}

/* Wait for the client to end the call after we half-closed (or after it
   refused a message).  Messages it still sends are dropped: the file
   receiver sends none. */
static int
wait_call_end (grpc_call *call, ps_error **err)
{
  for (;;)
    {
      void *msg = NULL;
      size_t len = 0;
      cleanup_error ps_error *rerr = NULL;
      int r = grpc_call_recv (call, &msg, &len, PS_FILESEND_IDLE_TIMEOUT_MS, &rerr);
      if (r == 0)
        return 0;
      if (r < 0)
        {
          if (grpc_call_status (call) < 0 && rerr->status == 504)
            return ps_error_set (err, 504, "the client did not finish the transfer within %d s",
                                 PS_FILESEND_IDLE_TIMEOUT_MS / 1000);
          *err = steal_pointer (&rerr);
          return -1;
        }
      free (msg);
    }
}

/* ---- a file (type=tar) ---------------------------------------------------------------- */

static int
send_file_contents (grpc_call *call, int fd, const char *path, void (*progress) (void *, uint64_t), void *ud,
                    ps_error **err)
{
  cleanup_free uint8_t *chunk = xmalloc (PS_FILESEND_FILE_CHUNK);
  cleanup_free uint8_t *msg = xmalloc (PS_FILESEND_FILE_CHUNK + 16);
  uint64_t sent = 0;
  for (;;)
    {
      ssize_t n = ps_read_full (fd, chunk, PS_FILESEND_FILE_CHUNK);
      if (n < 0)
        return ps_error_set_errno (err, 500, errno, "read %s", path);
      if (n == 0)
        return 0;
      Moby__Filesync__V1__BytesMessage bm = MOBY__FILESYNC__V1__BYTES_MESSAGE__INIT;
      bm.data.data = chunk;
      bm.data.len = (size_t) n;
      size_t len = moby__filesync__v1__bytes_message__pack (&bm, msg);
      if (grpc_call_send (call, msg, len, err) < 0)
        {
          /* The client ended the call: its status says why (ALREADY_EXISTS
             for a declined target), better than the failed send. */
          if (grpc_call_status (call) >= 0)
            {
              ps_error_free (*err);
              *err = NULL;
              if (wait_call_end (call, err) == 0)
                return ps_error_set (err, 502, "the client ended the transfer after %llu of the bytes",
                                     (unsigned long long) sent);
            }
          return -1;
        }
      sent += (uint64_t) n;
      if (progress)
        progress (ud, sent);
    }
}

int
filesend_file (grpc_conn *conn, const char *who, const char *path, void (*progress) (void *ud, uint64_t bytes),
               void *ud, ps_error **err)
{
  cleanup_error ps_error *lerr = NULL;
  grpc_call *call = NULL;
  int ret = -1;
  /* O_NONBLOCK: a FIFO in its place must not hang the build in open(). */
  cleanup_close int fd = open (path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  struct stat st;
  if (fd < 0)
    ps_error_set_errno (&lerr, 500, errno, "open %s", path);
  else if (fstat (fd, &st) < 0)
    ps_error_set_errno (&lerr, 500, errno, "stat %s", path);
  else if (!S_ISREG (st.st_mode))
    ps_error_set (&lerr, 500, "%s is not a regular file", path);
  else if ((call = grpc_call_start (conn, FILESEND_METHOD, NULL, 0, &lerr)) != NULL
           && send_file_contents (call, fd, path, progress, ud, &lerr) == 0)
    {
      /* §3.7: half-close, then the client ends the call once written. */
      if (grpc_call_close_send (call, &lerr) == 0 && wait_call_end (call, &lerr) == 0)
        ret = 0;
    }
  if (ret < 0)
    {
      call_error (call, &lerr);
      ps_error_wrap (&lerr, "send the output to %s", who);
      if (err)
        *err = steal_pointer (&lerr);
    }
  else
    ps_info ("filesend %s: sent %s (%lld bytes)", who, path, (long long) st.st_size);
  grpc_call_free (call); /* cancels the call if it has not ended */
  return ret;
}

/* ---- a tree (type=local) ------------------------------------------------------------------ */

enum fs_state
{
  FS_LISTING,
  FS_SERVING,
  FS_FIN_SENT,
  FS_DONE,
  FS_FAILED,
};

/* One listed entry, indexed by its file id.  `path` is kept only for
   requestable entries (regular files, hard links included, as fsutil's
   sender keeps them); the others need nothing after their STAT. */
struct fs_entry
{
  char *path;
  dev_t dev;
  ino_t ino;
  int64_t size;
  bool sent;
};

/* First path of a hard-linked inode: (dev, ino) -> entry index. */
struct fs_link
{
  dev_t dev;
  ino_t ino;
  uint32_t idx1; /* index + 1; 0 = empty slot */
};

struct fs
{
  enum fs_state state;
  const char *who;
  const char *root;
  int root_fd;
  grpc_call *call;
  void (*progress) (void *ud, uint64_t bytes);
  void *ud;
  uint64_t bytes; /* packet bytes sent */
  bool peer_failed; /* the receiver ended or failed the call: no ERR back */

  struct fs_entry *e;
  size_t n, cap;
  struct fs_link *links;
  size_t nlinks, links_cap;

  uint8_t *chunk; /* PS_FILESEND_DATA_CHUNK */
  char *xattr_names, *xattr_value; /* XATTR_LIST_MAX / XATTR_SIZE_MAX */
};

/* The receiver's packets while we wait for something else (our send
   failed because it ended the call): its ERR text or its status. */
static int
peer_outcome (struct fs *f, ps_error **err)
{
  f->peer_failed = true;
  for (;;)
    {
      void *msg = NULL;
      size_t len = 0;
      int r = grpc_call_recv (f->call, &msg, &len, 1000, err);
      if (r < 0)
        return -1;
      if (r == 0)
        return ps_error_set (err, 502, "the client ended the transfer early");
      Fsutil__Types__Packet *p = fsutil__types__packet__unpack (NULL, len, msg);
      free (msg);
      if (p && p->type == FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR)
        {
          ps_error_set (err, 502, "error from receiver: %.*s", (int) (p->data.len < 4096 ? p->data.len : 4096),
                        p->data.data ? (const char *) p->data.data : "");
          fsutil__types__packet__free_unpacked (p, NULL);
          return -1;
        }
      if (p)
        fsutil__types__packet__free_unpacked (p, NULL);
    }
}

static int
send_packet (struct fs *f, const Fsutil__Types__Packet *p, ps_error **err)
{
  size_t len = fsutil__types__packet__get_packed_size (p);
  cleanup_free uint8_t *buf = xmalloc (len + 1);
  fsutil__types__packet__pack (p, buf);
  cleanup_error ps_error *serr = NULL;
  if (grpc_call_send (f->call, buf, len, &serr) < 0)
    {
      if (grpc_call_status (f->call) >= 0)
        return peer_outcome (f, err);
      *err = steal_pointer (&serr);
      return -1;
    }
  f->bytes += len;
  if (f->progress && len > 0) /* the end of the listing is 0 bytes */
    f->progress (f->ud, f->bytes);
  return 0;
}

/* ---- FS_LISTING: the walk (§3.5 sender steps 1–2) ------------------------------------------- */

static uint64_t
hash_inode (dev_t dev, ino_t ino)
{
  uint64_t h = (uint64_t) ino * 0x9E3779B97F4A7C15ULL;
  return h ^ ((uint64_t) dev * 0xC2B2AE3D27D4EB4FULL);
}

/* The first path listed for (dev, ino), or NULL (then this one is first). */
static const char *
hardlink_source (struct fs *f, const struct stat *st, uint32_t idx)
{
  if (f->nlinks * 2 >= f->links_cap)
    {
      size_t cap = f->links_cap ? f->links_cap * 2 : 256;
      struct fs_link *links = xcalloc (cap, sizeof *links);
      for (size_t i = 0; i < f->links_cap; i++)
        if (f->links[i].idx1)
          {
            size_t j = hash_inode (f->links[i].dev, f->links[i].ino) & (cap - 1);
            while (links[j].idx1)
              j = (j + 1) & (cap - 1);
            links[j] = f->links[i];
          }
      free (f->links);
      f->links = links;
      f->links_cap = cap;
    }
  size_t j = hash_inode (st->st_dev, st->st_ino) & (f->links_cap - 1);
  for (; f->links[j].idx1; j = (j + 1) & (f->links_cap - 1))
    if (f->links[j].dev == st->st_dev && f->links[j].ino == st->st_ino)
      return f->e[f->links[j].idx1 - 1].path;
  f->links[j] = (struct fs_link) { .dev = st->st_dev, .ino = st->st_ino, .idx1 = idx + 1 };
  f->nlinks++;
  return NULL;
}

/* Most extended attributes sent per entry: XATTR_LIST_MAX (64 KiB) of
   names allows thousands, real files carry a handful. */
#define FS_MAX_XATTRS 64

/* Extended attributes of `name` in directory `dirfd`, as fsutil's
   loadXattr sends them (all of them; the receiver applies what it may).
   Read through /proc/self/fd so a deep path never meets PATH_MAX, with the
   l* calls so a symlink's own attributes are read.  Entries are added to
   `st`; names and values point into f's buffers and `store`. */
static void
load_xattrs (struct fs *f, int dirfd, const char *name, const char *path, Fsutil__Types__Stat *st, ps_buf *store,
             Fsutil__Types__Stat__XattrsEntry *entries[FS_MAX_XATTRS],
             Fsutil__Types__Stat__XattrsEntry storage[FS_MAX_XATTRS])
{
  char proc[64 + NAME_MAX];
  snprintf (proc, sizeof proc, "/proc/self/fd/%d/%s", dirfd, name);
  ssize_t n = llistxattr (proc, f->xattr_names, XATTR_LIST_MAX);
  if (n <= 0)
    {
      if (n < 0 && errno != ENOTSUP && errno != ENODATA)
        ps_debug ("filesend %s: %s: xattrs not read: %s", f->who, path, strerror (errno));
      return;
    }
  /* Values are copied into `store`; record offsets first, pointers once it
     stops growing. */
  size_t count = 0;
  size_t offs[FS_MAX_XATTRS], lens[FS_MAX_XATTRS];
  const char *names[FS_MAX_XATTRS];
  for (const char *k = f->xattr_names; k < f->xattr_names + n && count < FS_MAX_XATTRS; k += strlen (k) + 1)
    {
      ssize_t v = lgetxattr (proc, k, f->xattr_value, XATTR_SIZE_MAX);
      if (v < 0)
        continue; /* removed meanwhile, or not readable: fsutil skips it too */
      names[count] = k;
      offs[count] = store->len;
      lens[count] = (size_t) v;
      ps_buf_append (store, f->xattr_value, (size_t) v);
      count++;
    }
  for (size_t i = 0; i < count; i++)
    {
      Fsutil__Types__Stat__XattrsEntry *x = &storage[i];
      fsutil__types__stat__xattrs_entry__init (x);
      x->key = (char *) names[i];
      x->value.data = (uint8_t *) store->data + offs[i];
      x->value.len = lens[i];
      entries[i] = x;
    }
  st->xattrs = entries;
  st->n_xattrs = count;
}

/* One STAT: the entry gets the next index (its file id). */
static int
on_entry (struct fs *f, int dirfd, const char *name, const char *path, const struct stat *st, ps_error **err)
{
  if (f->n >= UINT32_MAX)
    return ps_error_set (err, 413, "more than %u entries", UINT32_MAX);
  uint32_t idx = (uint32_t) f->n;
  if (f->n == f->cap)
    {
      f->cap = f->cap ? f->cap * 2 : 1024;
      f->e = xrealloc (f->e, f->cap * sizeof *f->e);
    }
  struct fs_entry *e = &f->e[f->n++];
  memset (e, 0, sizeof *e);

  Fsutil__Types__Stat s = FSUTIL__TYPES__STAT__INIT;
  s.path = (char *) path;
  s.mode = filesend_go_mode (st->st_mode);
  s.uid = st->st_uid;
  s.gid = st->st_gid;
  s.modtime = (int64_t) st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
  if (!S_ISDIR (st->st_mode))
    s.size = st->st_size; /* for a symlink, Go reports the target's length */
  char target[PATH_MAX + 1];
  if (S_ISLNK (st->st_mode))
    {
      ssize_t n = readlinkat (dirfd, name, target, sizeof target);
      if (n < 0)
        return ps_error_set_errno (err, 500, errno, "readlink %s", path);
      if ((size_t) n >= sizeof target)
        return ps_error_set (err, 500, "symlink %s: target longer than %d bytes", path, PATH_MAX);
      target[n] = '\0';
      s.linkname = target;
    }
  if (S_ISCHR (st->st_mode) || S_ISBLK (st->st_mode))
    {
      s.devmajor = major (st->st_rdev);
      s.devminor = minor (st->st_rdev);
    }
  if (S_ISREG (st->st_mode))
    {
      /* Requestable (fsutil: mode without type bits), hard links too. */
      e->path = xstrdup (path);
      e->dev = st->st_dev;
      e->ino = st->st_ino;
      e->size = st->st_size;
      const char *source = st->st_nlink > 1 ? hardlink_source (f, st, idx) : NULL;
      if (source)
        s.linkname = (char *) source;
    }

  ps_buf store = { 0 };
  Fsutil__Types__Stat__XattrsEntry *xe[FS_MAX_XATTRS];
  Fsutil__Types__Stat__XattrsEntry xs[FS_MAX_XATTRS];
  load_xattrs (f, dirfd, name, path, &s, &store, xe, xs);

  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  p.stat = &s;
  int r = send_packet (f, &p, err);
  ps_buf_free (&store);
  return r;
}

/* List directory `dirfd` (`rel` below root, "" for root) and everything
   below it. */
static int
walk_dir (struct fs *f, int dirfd, const char *rel, size_t depth, ps_error **err)
{
  if (depth > PS_FILESEND_MAX_DEPTH)
    return ps_error_set (err, 500, "%s: directories nested deeper than %d levels", rel, PS_FILESEND_MAX_DEPTH);
  ps_strv names = { 0 };
  const char *step;
  if (ps_list_dir_at (dirfd, true, &names, &step) < 0)
    {
      int saved = errno;
      ps_strv_free (&names);
      return ps_error_set_errno (err, 500, saved, "%s directory %s/%s", strcmp (step, "readdir") == 0 ? "read" : "open",
                                 f->root, rel);
    }

  int ret = 0;
  for (size_t i = 0; i < names.n && ret == 0; i++)
    {
      const char *name = names.v[i];
      cleanup_free char *path = rel[0] ? xasprintf ("%s/%s", rel, name) : xstrdup (name);
      struct stat st;
      if (fstatat (dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        {
          if (errno == ENOENT)
            continue; /* gone since readdir: fsutil's walker skips it too */
          ret = ps_error_set_errno (err, 500, errno, "stat %s", path);
          break;
        }
      if (S_ISSOCK (st.st_mode))
        continue; /* a socket is not content */
      if (on_entry (f, dirfd, name, path, &st, err) < 0)
        {
          ret = -1;
          break;
        }
      if (!S_ISDIR (st.st_mode))
        continue;
      int sub = openat (dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0)
        {
          ret = ps_error_set_errno (err, 500, errno, "open directory %s", path);
          break;
        }
      ret = walk_dir (f, sub, path, depth + 1, err);
      close (sub);
    }
  ps_strv_free (&names);
  return ret;
}

static int
on_listing (struct fs *f, ps_error **err)
{
  if (walk_dir (f, f->root_fd, "", 1, err) < 0)
    return -1;
  Fsutil__Types__Packet end = FSUTIL__TYPES__PACKET__INIT; /* STAT without a stat */
  if (send_packet (f, &end, err) < 0)
    return -1;
  f->state = FS_SERVING;
  ps_debug ("filesend %s: listed %zu entries", f->who, f->n);
  return 0;
}

/* ---- FS_SERVING: the receiver's packets (§3.5 sender step 3) --------------------------------- */

static int
send_data (struct fs *f, uint32_t id, const uint8_t *data, size_t len, ps_error **err)
{
  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA;
  p.id = id;
  p.data.data = (uint8_t *) data;
  p.data.len = len;
  return send_packet (f, &p, err);
}

/* REQ(id): the file's contents, then an empty DATA to end it. */
static int
on_req (struct fs *f, uint32_t id, ps_error **err)
{
  /* fsutil: "invalid file id" for anything but a listed regular file not
     requested before. */
  if (id >= f->n || f->e[id].path == NULL || f->e[id].sent)
    return ps_error_set (err, 400, "invalid file id %u%s", id,
                         id >= f->n            ? " (past the listing)"
                         : f->e[id].path == NULL ? " (not a regular file)"
                                                 : " (requested twice)");
  struct fs_entry *e = &f->e[id];
  e->sent = true;
  /* O_NONBLOCK: if a FIFO took the file's place, open must not wait for a
     writer; the inode check below refuses it. */
  cleanup_close int fd = openat (f->root_fd, e->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", e->path);
  struct stat st;
  if (fstat (fd, &st) < 0)
    return ps_error_set_errno (err, 500, errno, "stat %s", e->path);
  if (!S_ISREG (st.st_mode) || st.st_dev != e->dev || st.st_ino != e->ino)
    return ps_error_set (err, 500, "%s was replaced while the output was being sent", e->path);
  uint64_t total = 0;
  for (;;)
    {
      ssize_t n = read (fd, f->chunk, PS_FILESEND_DATA_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        return ps_error_set_errno (err, 500, errno, "read %s", e->path);
      if (n == 0)
        break;
      total += (uint64_t) n;
      if (total > (uint64_t) e->size)
        return ps_error_set (err, 500, "%s grew while the output was being sent (listed with %lld bytes)", e->path,
                             (long long) e->size);
      if (send_data (f, id, f->chunk, (size_t) n, err) < 0)
        return -1;
    }
  if (total < (uint64_t) e->size)
    return ps_error_set (err, 500, "%s shrank while the output was being sent (%llu of the %lld bytes listed)",
                         e->path, (unsigned long long) total, (long long) e->size);
  return send_data (f, id, NULL, 0, err);
}

/* FIN: the receiver has everything; answer FIN and half-close, then the
   client ends the call (§3.5 receiver steps 5–6, seen from this side). */
static int
on_fin (struct fs *f, ps_error **err)
{
  Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
  p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN;
  if (send_packet (f, &p, err) < 0 || grpc_call_close_send (f->call, err) < 0)
    return -1;
  f->state = FS_FIN_SENT;
  return 0;
}

static int
on_packet (struct fs *f, const void *msg, size_t len, ps_error **err)
{
  Fsutil__Types__Packet *p = fsutil__types__packet__unpack (NULL, len, msg);
  if (p == NULL)
    return ps_error_set (err, 400, "undecodable fsutil packet (%zu bytes)", len);
  int r = 0;
  if (f->state == FS_FIN_SENT)
    ; /* after FIN the receiver only drains; nothing it sends matters */
  else
    switch (p->type)
      {
      case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ:
        r = on_req (f, p->id, err);
        break;
      case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN:
        r = on_fin (f, err);
        break;
      case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR:
        f->peer_failed = true;
        r = ps_error_set (err, 502, "error from receiver: %.*s", (int) (p->data.len < 4096 ? p->data.len : 4096),
                          p->data.data ? (const char *) p->data.data : "");
        break;
      case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_STAT:
      case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA:
        r = ps_error_set (err, 400, "the client sent %s: it is the receiver here",
                          p->type == FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_STAT ? "STAT" : "DATA");
        break;
      default:
        r = ps_error_set (err, 400, "unknown fsutil packet type %d", (int) p->type);
        break;
      }
  fsutil__types__packet__free_unpacked (p, NULL);
  return r;
}

/* The call ended with grpc-status 0. */
static int
on_call_end (struct fs *f, ps_error **err)
{
  f->peer_failed = true;
  if (f->state == FS_FIN_SENT)
    {
      f->state = FS_DONE;
      return 0;
    }
  return ps_error_set (err, 502, "the client ended the transfer before FIN");
}

/* ---- failure -------------------------------------------------------------------------------- */

static void
fail (struct fs *f, const char *msg)
{
  if (f->call && !f->peer_failed && grpc_call_status (f->call) < 0)
    {
      /* Tell the receiver why (best effort: never wait on a peer that
         reads nothing), half-close, give both a moment to leave before
         RST_STREAM overtakes them. */
      if (grpc_call_flush (f->call, 200))
        {
          Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
          p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR;
          p.data.data = (uint8_t *) msg;
          p.data.len = strlen (msg);
          size_t len = fsutil__types__packet__get_packed_size (&p);
          cleanup_free uint8_t *buf = xmalloc (len + 1);
          fsutil__types__packet__pack (&p, buf);
          cleanup_error ps_error *ignored = NULL;
          if (grpc_call_send (f->call, buf, len, &ignored) == 0)
            {
              grpc_call_close_send (f->call, &ignored);
              grpc_call_flush (f->call, 1000);
            }
        }
    }
  if (f->call)
    grpc_call_cancel (f->call);
  f->state = FS_FAILED;
}

/* ---- the loop --------------------------------------------------------------------------------- */

static int
run (struct fs *f, grpc_conn *conn, ps_error **err)
{
  f->call = grpc_call_start (conn, FILESEND_METHOD, NULL, 0, err);
  if (f->call == NULL)
    return -1;
  if (on_listing (f, err) < 0)
    return -1;
  while (f->state != FS_DONE)
    {
      void *msg = NULL;
      size_t len = 0;
      cleanup_error ps_error *rerr = NULL;
      int r = grpc_call_recv (f->call, &msg, &len, PS_FILESEND_IDLE_TIMEOUT_MS, &rerr);
      if (r < 0)
        {
          if (grpc_call_status (f->call) < 0 && rerr->status == 504)
            return ps_error_set (err, 504, "no packet from the client for %d s", PS_FILESEND_IDLE_TIMEOUT_MS / 1000);
          f->peer_failed = true;
          *err = steal_pointer (&rerr);
          return -1;
        }
      if (r == 0)
        return on_call_end (f, err);
      int pr = on_packet (f, msg, len, err);
      free (msg);
      if (pr < 0)
        return -1;
    }
  return 0;
}

int
filesend_dir (grpc_conn *conn, const char *who, const char *root, void (*progress) (void *ud, uint64_t bytes),
              void *ud, ps_error **err)
{
  struct fs f = {
    .state = FS_LISTING,
    .who = who,
    .root = root,
    .progress = progress,
    .ud = ud,
  };
  cleanup_error ps_error *lerr = NULL;
  int ret = -1;
  f.root_fd = open (root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (f.root_fd < 0)
    ps_error_set_errno (&lerr, 500, errno, "open %s", root);
  else
    {
      f.chunk = xmalloc (PS_FILESEND_DATA_CHUNK);
      f.xattr_names = xmalloc (XATTR_LIST_MAX);
      f.xattr_value = xmalloc (XATTR_SIZE_MAX);
      ret = run (&f, conn, &lerr);
      if (ret < 0)
        {
          call_error (f.call, &lerr);
          fail (&f, lerr->msg);
        }
    }
  if (ret < 0)
    {
      ps_error_wrap (&lerr, "send the output to %s", who);
      if (err)
        *err = steal_pointer (&lerr);
    }
  else
    {
      size_t files = 0;
      for (size_t i = 0; i < f.n; i++)
        files += f.e[i].sent;
      ps_info ("filesend %s: sent %s: %zu entries, %zu files, %llu bytes", who, root, f.n, files,
               (unsigned long long) f.bytes);
    }
  for (size_t i = 0; i < f.n; i++)
    free (f.e[i].path);
  free (f.e);
  free (f.links);
  free (f.chunk);
  free (f.xattr_names);
  free (f.xattr_value);
  if (f.root_fd >= 0)
    close (f.root_fd);
  grpc_call_free (f.call);
  return ret;
}

/* ---- with a session ------------------------------------------------------------------------- */

static int
check_exposed (ps_session *s, ps_error **err)
{
  if (session_has_method (s, FILESEND_METHOD))
    return 0;
  return ps_error_set (err, 400,
                       "send the output to session %s: the client did not ask for an output over the session "
                       "(FileSend/DiffCopy is not listed in X-Docker-Expose-Session-Grpc-Method)",
                       session_uuid (s));
}

int
session_filesend_file (ps_session *s, const char *path, void (*progress) (void *ud, uint64_t bytes), void *ud,
                       ps_error **err)
{
  if (check_exposed (s, err) < 0)
    return -1;
  cleanup_free char *who = xasprintf ("session %s", session_uuid (s));
  return filesend_file (session_conn (s), who, path, progress, ud, err);
}

int
session_filesend_dir (ps_session *s, const char *root, void (*progress) (void *ud, uint64_t bytes), void *ud,
                      ps_error **err)
{
  if (check_exposed (s, err) < 0)
    return -1;
  cleanup_free char *who = xasprintf ("session %s", session_uuid (s));
  return filesend_dir (session_conn (s), who, root, progress, ud, err);
}
