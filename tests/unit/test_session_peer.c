/* test_session_peer.c — the fake BuildKit client of the session tests.
 *
 * A single-threaded nghttp2 server over one end of a socketpair.  It plays
 * the docker CLI's side of /session: FileSync/DiffCopy as fsutil's sender
 * (walk in lexicographic depth-first order, STAT for every entry, the
 * empty STAT, DATA chunks for each REQ interleaved round-robin like
 * fsutil's 4 workers, FIN on FIN), FileSend/DiffCopy as the receiver of
 * --output (a tar written from BytesMessages, or fsutil's receiver for
 * type=local: REQ every file after the listing, write, FIN, drain to EOF),
 * Auth/Credentials, Secrets/GetSecret, Health/Check, and /test.Echo/...
 * methods exercising the gRPC client. */
#define _GNU_SOURCE
#include "tests/unit/test_session_peer.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "schema/auth.pb-c.h"
#include "schema/filesync.pb-c.h"
#include "schema/fsutil.pb-c.h"
#include "schema/health.pb-c.h"
#include "schema/secrets.pb-c.h"
#include "common/dockerignore.h"

#define GO_DIR 0x80000000u
#define GO_SYMLINK 0x08000000u
#define GO_NAMED_PIPE 0x02000000u

struct fentry
{
  char *rel;
  struct stat st;
  char *linkname;
};

struct pending_file
{
  uint32_t id;
  int fd;
};

struct fstream
{
  int32_t id;
  char path[256];
  ps_strv md; /* key, value, key, value... */
  ps_buf in;
  ps_buf out;
  size_t out_off;
  bool responded;
  bool deferred;
  bool trailers_ready;
  bool trailers_sent;
  bool end_without_trailers;
  int status;
  char *message;
  bool finished;

  /* DiffCopy sender */
  bool diffcopy;
  char *root;
  struct fentry *entries;
  size_t n;
  bool *requestable;
  bool *requested;
  struct pending_file pending[64];
  size_t n_pending, rr;
  bool first_chunk_sent;

  /* FileSend receiver */
  bool filesend;
  int out_fd; /* tar: the output file */
  struct rentry *rx;
  size_t rx_n;
  size_t rx_outstanding;
  bool rx_fin_sent;

  struct fstream *next;
};

struct fake_peer
{
  int fd;
  int stop[2];
  pthread_t th;
  struct fake_config cfg;
  nghttp2_session *h2;
  ps_buf wbuf;
  size_t wbuf_off;
  struct fstream *streams;
  bool close_pending;

  pthread_mutex_t mu;
  size_t reqs;
  ps_strv requested;
  ps_strv last_md;
  char *err_received;
  size_t resets;
  size_t ping_acks;
  struct fake_filesend_stats fs; /* paths and problem stay NULL here */
  ps_buf fs_paths;
  char *fs_problem;
};

/* ---- responses ---------------------------------------------------------------- */

static ssize_t
read_out (nghttp2_session *h2, int32_t id, uint8_t *buf, size_t length, uint32_t *flags, nghttp2_data_source *src,
          void *ud)
{
  struct fstream *s = src->ptr;
  size_t avail = s->out.len - s->out_off;
  size_t n = avail < length ? avail : length;
  if (n)
    memcpy (buf, s->out.data + s->out_off, n);
  s->out_off += n;
  if (s->out_off == s->out.len)
    {
      ps_buf_reset (&s->out);
      s->out_off = 0;
    }
  if (n > 0)
    return (ssize_t) n;
  if (s->end_without_trailers && s->trailers_ready)
    {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      s->trailers_sent = true;
      return 0;
    }
  if (s->trailers_ready && !s->trailers_sent)
    {
      char code[16];
      snprintf (code, sizeof code, "%d", s->status);
      nghttp2_nv nv[2] = {
        { (uint8_t *) "grpc-status", (uint8_t *) code, 11, strlen (code), NGHTTP2_NV_FLAG_NONE },
        { (uint8_t *) "grpc-message", (uint8_t *) (s->message ? s->message : ""), 12,
          s->message ? strlen (s->message) : 0, NGHTTP2_NV_FLAG_NONE },
      };
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer (h2, id, nv, s->message ? 2 : 1);
      s->trailers_sent = true;
      return 0;
    }
  s->deferred = true;
  return NGHTTP2_ERR_DEFERRED;
}

static void
respond (struct fake_peer *p, struct fstream *s)
{
  if (s->responded)
    return;
  nghttp2_nv nv[2] = {
    { (uint8_t *) ":status", (uint8_t *) "200", 7, 3, NGHTTP2_NV_FLAG_NONE },
    { (uint8_t *) "content-type", (uint8_t *) "application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE },
  };
  nghttp2_data_provider prd = { .source.ptr = s, .read_callback = read_out };
  nghttp2_submit_response (p->h2, s->id, nv, 2, &prd);
  s->responded = true;
}

static void
send_msg (struct fake_peer *p, struct fstream *s, const void *data, size_t len)
{
  respond (p, s);
  unsigned char prefix[5] = { 0, (unsigned char) (len >> 24), (unsigned char) (len >> 16),
                              (unsigned char) (len >> 8), (unsigned char) len };
  ps_buf_append (&s->out, prefix, 5);
  ps_buf_append (&s->out, data, len);
}

static void
finish (struct fake_peer *p, struct fstream *s, int status, const char *message)
{
  if (s->finished)
    return;
  respond (p, s);
  s->finished = true;
  s->trailers_ready = true;
  s->status = status;
  s->message = message ? xstrdup (message) : NULL;
}

static void
trailers_only (struct fake_peer *p, struct fstream *s, int status, const char *message)
{
  char code[16];
  snprintf (code, sizeof code, "%d", status);
  nghttp2_nv nv[4] = {
    { (uint8_t *) ":status", (uint8_t *) "200", 7, 3, NGHTTP2_NV_FLAG_NONE },
    { (uint8_t *) "content-type", (uint8_t *) "application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE },
    { (uint8_t *) "grpc-status", (uint8_t *) code, 11, strlen (code), NGHTTP2_NV_FLAG_NONE },
    { (uint8_t *) "grpc-message", (uint8_t *) message, 12, strlen (message), NGHTTP2_NV_FLAG_NONE },
  };
  nghttp2_submit_response (p->h2, s->id, nv, 4, NULL);
  s->responded = true;
  s->finished = true;
}

static void
send_packet (struct fake_peer *p, struct fstream *s, Fsutil__Types__Packet *pk)
{
  size_t len = fsutil__types__packet__get_packed_size (pk);
  uint8_t *buf = xmalloc (len + 1);
  fsutil__types__packet__pack (pk, buf);
  send_msg (p, s, buf, len);
  free (buf);
}

/* ---- DiffCopy: fsutil's sender ----------------------------------------------------- */

static uint32_t
go_mode (const struct stat *st)
{
  uint32_t m = st->st_mode & 0777;
  if (st->st_mode & S_ISUID)
    m |= 0x00800000u;
  if (st->st_mode & S_ISGID)
    m |= 0x00400000u;
  if (st->st_mode & S_ISVTX)
    m |= 0x00100000u;
  if (S_ISDIR (st->st_mode))
    m |= GO_DIR;
  else if (S_ISLNK (st->st_mode))
    m |= GO_SYMLINK;
  else if (S_ISFIFO (st->st_mode))
    m |= GO_NAMED_PIPE;
  return m;
}

static int
cmp_str (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

static const char *
md_get (struct fstream *s, const char *key)
{
  for (size_t i = 0; i + 1 < s->md.n; i += 2)
    if (strcmp (s->md.v[i], key) == 0)
      return s->md.v[i + 1];
  return NULL;
}

static bool
followed (struct fstream *s, const char *rel)
{
  bool any = false;
  for (size_t i = 0; i + 1 < s->md.n; i += 2)
    {
      if (strcmp (s->md.v[i], "followpaths") != 0)
        continue;
      any = true;
      const char *f = s->md.v[i + 1];
      size_t n = strlen (rel);
      if (strcmp (f, rel) == 0 || (strncmp (f, rel, n) == 0 && f[n] == '/'))
        return true;
    }
  return !any;
}

static void
walk (struct fstream *s, ps_ignore *ig, const char *root, const char *rel, ps_strv *hl_keys, ps_strv *hl_paths)
{
  char *dirpath = rel[0] ? xasprintf ("%s/%s", root, rel) : xstrdup (root);
  DIR *d = opendir (dirpath);
  ck_assert_msg (d != NULL, "opendir %s", dirpath);
  ps_strv names = { 0 };
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, ".."))
      ps_strv_push (&names, de->d_name);
  closedir (d);
  if (names.n)
    qsort (names.v, names.n, sizeof *names.v, cmp_str);
  for (size_t i = 0; i < names.n; i++)
    {
      char *r = rel[0] ? xasprintf ("%s/%s", rel, names.v[i]) : xstrdup (names.v[i]);
      char *full = xasprintf ("%s/%s", root, r);
      struct stat st;
      ck_assert (lstat (full, &st) == 0);
      if ((ig && ps_ignore_matches (ig, r)) || !followed (s, r))
        {
          free (r);
          free (full);
          continue;
        }
      s->entries = xrealloc (s->entries, (s->n + 1) * sizeof *s->entries);
      struct fentry *e = &s->entries[s->n++];
      e->rel = r;
      e->st = st;
      e->linkname = NULL;
      if (S_ISLNK (st.st_mode))
        {
          char buf[4096];
          ssize_t n = readlink (full, buf, sizeof buf - 1);
          ck_assert (n >= 0);
          buf[n] = '\0';
          e->linkname = xstrdup (buf);
        }
      else if (S_ISREG (st.st_mode) && st.st_nlink > 1)
        {
          char key[64];
          snprintf (key, sizeof key, "%llu:%llu", (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
          for (size_t k = 0; k < hl_keys->n; k++)
            if (strcmp (hl_keys->v[k], key) == 0)
              e->linkname = xstrdup (hl_paths->v[k]);
          if (e->linkname == NULL)
            {
              ps_strv_push (hl_keys, key);
              ps_strv_push (hl_paths, r);
            }
        }
      if (S_ISDIR (st.st_mode))
        walk (s, ig, root, r, hl_keys, hl_paths);
      free (full);
    }
  ps_strv_free (&names);
  free (dirpath);
}

static void
stat_packet (struct fake_peer *p, struct fstream *s, const char *path, uint32_t mode, int64_t size, int64_t mtime,
             const char *linkname, uint32_t uid, uint32_t gid)
{
  Fsutil__Types__Stat st = FSUTIL__TYPES__STAT__INIT;
  st.path = (char *) path;
  st.mode = mode;
  st.size = size;
  st.modtime = mtime;
  st.uid = uid;
  st.gid = gid;
  if (linkname)
    st.linkname = (char *) linkname;
  Fsutil__Types__Packet pk = FSUTIL__TYPES__PACKET__INIT;
  pk.stat = &st;
  send_packet (p, s, &pk);
}

static void
diffcopy_start (struct fake_peer *p, struct fstream *s)
{
  const char *name = md_get (s, "dir-name");
  pthread_mutex_lock (&p->mu);
  ps_strv_free (&p->last_md);
  for (size_t i = 0; i < s->md.n; i++)
    ps_strv_push (&p->last_md, s->md.v[i]);
  pthread_mutex_unlock (&p->mu);
  const char *root = NULL;
  for (size_t i = 0; i < ARRAY_SIZE (p->cfg.dirs); i++)
    if (name && p->cfg.dirs[i].name && strcmp (p->cfg.dirs[i].name, name) == 0)
      root = p->cfg.dirs[i].path;
  if (root == NULL)
    {
      char *msg = xasprintf ("no access allowed to dir \"%s\"", name ? name : "");
      trailers_only (p, s, 5, msg);
      free (msg);
      return;
    }
  s->diffcopy = true;
  s->root = xstrdup (root);
  respond (p, s);

  if (p->cfg.mode == FAKE_HUGE_MESSAGE)
    {
      unsigned char prefix[5] = { 0, 0, 0x50, 0, 0 }; /* 5 MiB */
      ps_buf_append (&s->out, prefix, 5);
      char zeros[8192] = { 0 };
      ps_buf_append (&s->out, zeros, sizeof zeros);
      return;
    }

  ps_strv ex = { 0 };
  for (size_t i = 0; i + 1 < s->md.n; i += 2)
    if (strcmp (s->md.v[i], "exclude-patterns") == 0)
      ps_strv_push (&ex, s->md.v[i + 1]);
  ps_ignore *ig = NULL;
  if (ex.n && p->cfg.mode != FAKE_IGNORE_EXCLUDES)
    ig = ps_ignore_from_patterns ((const char *const *) ex.v, ex.n, NULL);
  ps_strv_free (&ex);
  ps_strv hk = { 0 }, hp = { 0 };
  walk (s, ig, root, "", &hk, &hp);
  ps_strv_free (&hk);
  ps_strv_free (&hp);
  if (ig)
    ps_ignore_free (ig);

  switch (p->cfg.mode)
    {
    case FAKE_STAT_DOTDOT:
      stat_packet (p, s, "../x", 0644, 1, 1, NULL, 0, 0);
      break;
    case FAKE_STAT_ABSOLUTE:
      stat_packet (p, s, "/abs", 0644, 1, 1, NULL, 0, 0);
      break;
    case FAKE_STAT_NO_PARENT:
      stat_packet (p, s, "missing/child", 0644, 1, 1, NULL, 0, 0);
      break;
    case FAKE_STAT_UNORDERED:
      stat_packet (p, s, "b", 0644, 1, 1, NULL, 0, 0);
      stat_packet (p, s, "a", 0644, 1, 1, NULL, 0, 0);
      break;
    case FAKE_HARDLINK_UNKNOWN:
      stat_packet (p, s, "zz-link", 0644, 1, 1, "nowhere", 0, 0);
      break;
    default:
      break;
    }
  if (p->cfg.mode >= FAKE_STAT_DOTDOT && p->cfg.mode <= FAKE_HARDLINK_UNKNOWN)
    {
      Fsutil__Types__Packet end = FSUTIL__TYPES__PACKET__INIT;
      send_packet (p, s, &end);
      return;
    }

  s->requestable = xcalloc (s->n + 1, sizeof (bool));
  s->requested = xcalloc (s->n + 1, sizeof (bool));
  for (size_t i = 0; i < s->n; i++)
    {
      struct fentry *e = &s->entries[i];
      int64_t mtime = (int64_t) e->st.st_mtim.tv_sec * 1000000000LL + e->st.st_mtim.tv_nsec;
      bool dir = S_ISDIR (e->st.st_mode);
      stat_packet (p, s, e->rel, go_mode (&e->st), dir ? 0 : (int64_t) e->st.st_size, mtime, e->linkname,
                   e->st.st_uid, e->st.st_gid);
      s->requestable[i] = S_ISREG (e->st.st_mode);
    }
  Fsutil__Types__Packet end = FSUTIL__TYPES__PACKET__INIT;
  send_packet (p, s, &end);

  if (p->cfg.mode == FAKE_DATA_UNREQUESTED)
    {
      Fsutil__Types__Packet d = FSUTIL__TYPES__PACKET__INIT;
      d.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA;
      d.id = 0;
      d.data.data = (uint8_t *) "surprise";
      d.data.len = 8;
      send_packet (p, s, &d);
    }
  if (p->cfg.mode == FAKE_ERR_PACKET)
    {
      Fsutil__Types__Packet e = FSUTIL__TYPES__PACKET__INIT;
      e.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR;
      e.data.data = (uint8_t *) "boom";
      e.data.len = 4;
      send_packet (p, s, &e);
      finish (p, s, 2, "boom");
    }
}

static void
diffcopy_msg (struct fake_peer *p, struct fstream *s, const void *msg, size_t len)
{
  Fsutil__Types__Packet *pk = fsutil__types__packet__unpack (NULL, len, msg);
  ck_assert (pk != NULL);
  switch (pk->type)
    {
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ:
      {
        uint32_t id = pk->id;
        pthread_mutex_lock (&p->mu);
        p->reqs++;
        if (id < s->n)
          ps_strv_push (&p->requested, s->entries[id].rel);
        pthread_mutex_unlock (&p->mu);
        if (id >= s->n || !s->requestable[id] || s->requested[id])
          {
            char *m = xasprintf ("invalid file id %u", id);
            finish (p, s, 2, m);
            free (m);
            break;
          }
        s->requested[id] = true;
        char *full = xasprintf ("%s/%s", s->root, s->entries[id].rel);
        ck_assert (s->n_pending < ARRAY_SIZE (s->pending));
        s->pending[s->n_pending++] = (struct pending_file) { id, open (full, O_RDONLY) };
        free (full);
        break;
      }
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN:
      if (p->cfg.mode == FAKE_NO_FIN)
        finish (p, s, 0, NULL);
      else
        {
          Fsutil__Types__Packet fin = FSUTIL__TYPES__PACKET__INIT;
          fin.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN;
          send_packet (p, s, &fin);
          finish (p, s, 0, NULL);
        }
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR:
      pthread_mutex_lock (&p->mu);
      free (p->err_received);
      p->err_received = xstrndup ((const char *) pk->data.data, pk->data.len);
      pthread_mutex_unlock (&p->mu);
      finish (p, s, 2, "error from receiver");
      break;
    default:
      break;
    }
  fsutil__types__packet__free_unpacked (pk, NULL);
}

/* Stream DATA for the requested files, round-robin one chunk each. */
static void
diffcopy_pump (struct fake_peer *p, struct fstream *s)
{
  size_t chunk = p->cfg.chunk ? p->cfg.chunk : 32 * 1024;
  char *buf = xmalloc (chunk);
  while (s->n_pending > 0 && s->out.len - s->out_off < 256 * 1024 && !s->finished && !p->close_pending)
    {
      if (s->rr >= s->n_pending)
        s->rr = 0;
      struct pending_file *f = &s->pending[s->rr];
      ssize_t n = f->fd >= 0 ? read (f->fd, buf, chunk) : 0;
      Fsutil__Types__Packet d = FSUTIL__TYPES__PACKET__INIT;
      d.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA;
      d.id = f->id;
      if (n > 0)
        {
          d.data.data = (uint8_t *) buf;
          d.data.len = (size_t) n;
          send_packet (p, s, &d);
          s->rr++;
          if (p->cfg.mode == FAKE_CLOSE_MID_FILE && !s->first_chunk_sent)
            p->close_pending = true;
          s->first_chunk_sent = true;
          continue;
        }
      send_packet (p, s, &d); /* empty DATA: end of this file */
      if (f->fd >= 0)
        close (f->fd);
      memmove (f, f + 1, (s->n_pending - s->rr - 1) * sizeof *f);
      s->n_pending--;
    }
  free (buf);
}

/* ---- FileSend: the docker CLI's receiver of --output --------------------------------------- */

/* One entry the sender listed (type=local). */
struct rentry
{
  char *path;
  uint32_t mode;
  int64_t mtime;
  char *linkname;
  Fsutil__Types__Stat *stat; /* for its xattrs */
  bool requested;
  bool done;
};

static void
filesend_problem (struct fake_peer *p, struct fstream *s, const char *msg)
{
  pthread_mutex_lock (&p->mu);
  if (p->fs_problem == NULL)
    p->fs_problem = xstrdup (msg);
  pthread_mutex_unlock (&p->mu);
  finish (p, s, 2, msg);
}

static void
filesend_start (struct fake_peer *p, struct fstream *s)
{
  pthread_mutex_lock (&p->mu);
  p->fs.calls++;
  pthread_mutex_unlock (&p->mu);
  s->out_fd = -1;
  if (p->cfg.mode == FAKE_FS_DECLINE || p->cfg.filesend_dest == NULL)
    {
      /* BuildKit's fsSyncTarget: a nil writer means "target already exists". */
      trailers_only (p, s, 6, "target already exists");
      return;
    }
  s->filesend = true;
  if (p->cfg.filesend_local)
    mkdir (p->cfg.filesend_dest, 0755);
  else
    {
      s->out_fd = open (p->cfg.filesend_dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      ck_assert_int_ge (s->out_fd, 0);
    }
  respond (p, s);
}

static char *
rx_full (struct fake_peer *p, const char *rel)
{
  return xasprintf ("%s/%s", p->cfg.filesend_dest, rel);
}

static void
rx_req (struct fake_peer *p, struct fstream *s, uint32_t id)
{
  Fsutil__Types__Packet r = FSUTIL__TYPES__PACKET__INIT;
  r.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ;
  r.id = id;
  send_packet (p, s, &r);
  pthread_mutex_lock (&p->mu);
  p->fs.reqs++;
  pthread_mutex_unlock (&p->mu);
}

/* Everything requested arrived: hard links, then modes and times (children
   before their directory), then FIN (fsutil's receiver, §3.5 step 5). */
static void
rx_complete (struct fake_peer *p, struct fstream *s)
{
  for (size_t i = 0; i < s->rx_n; i++)
    {
      struct rentry *e = &s->rx[i];
      if ((e->mode & 0x8F280000u) == 0 && e->linkname)
        {
          char *from = rx_full (p, e->linkname), *to = rx_full (p, e->path);
          ck_assert_msg (link (from, to) == 0, "link %s %s", from, to);
          free (from);
          free (to);
        }
    }
  for (size_t i = s->rx_n; i-- > 0;)
    {
      struct rentry *e = &s->rx[i];
      char *full = rx_full (p, e->path);
      if (!(e->mode & GO_SYMLINK))
        {
          mode_t perm = e->mode & 0777;
          if (e->mode & 0x00800000u)
            perm |= S_ISUID;
          if (e->mode & 0x00400000u)
            perm |= S_ISGID;
          if (e->mode & 0x00100000u)
            perm |= S_ISVTX;
          ck_assert (chmod (full, perm) == 0);
        }
      /* Errors ignored, as fsutil's receiver does. */
      for (size_t k = 0; e->stat && k < e->stat->n_xattrs; k++)
        (void) !lsetxattr (full, e->stat->xattrs[k]->key, e->stat->xattrs[k]->value.data,
                           e->stat->xattrs[k]->value.len, 0);
      struct timespec ts[2] = { { e->mtime / 1000000000LL, e->mtime % 1000000000LL },
                                { e->mtime / 1000000000LL, e->mtime % 1000000000LL } };
      ck_assert (utimensat (AT_FDCWD, full, ts, AT_SYMLINK_NOFOLLOW) == 0);
      free (full);
    }
  Fsutil__Types__Packet fin = FSUTIL__TYPES__PACKET__INIT;
  fin.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN;
  send_packet (p, s, &fin);
  s->rx_fin_sent = true;
}

static void
rx_stat (struct fake_peer *p, struct fstream *s, const Fsutil__Types__Stat *st)
{
  pthread_mutex_lock (&p->mu);
  p->fs.stats++;
  if (p->fs_paths.len)
    ps_buf_puts (&p->fs_paths, "|");
  ps_buf_puts (&p->fs_paths, st->path);
  pthread_mutex_unlock (&p->mu);
  s->rx = xrealloc (s->rx, (s->rx_n + 1) * sizeof *s->rx);
  struct rentry *e = &s->rx[s->rx_n++];
  *e = (struct rentry) { .path = xstrdup (st->path), .mode = st->mode, .mtime = st->modtime };
  if (st->n_xattrs)
    {
      /* Keep a copy: applied with the other metadata at the end. */
      size_t n = fsutil__types__stat__get_packed_size (st);
      uint8_t *buf = xmalloc (n + 1);
      fsutil__types__stat__pack (st, buf);
      e->stat = fsutil__types__stat__unpack (NULL, n, buf);
      free (buf);
    }
  if (st->linkname && st->linkname[0])
    e->linkname = xstrdup (st->linkname);
  char *full = rx_full (p, st->path);
  if (st->mode & GO_DIR)
    ck_assert_msg (mkdir (full, 0700) == 0, "mkdir %s", full);
  else if (st->mode & GO_SYMLINK)
    ck_assert (symlink (e->linkname, full) == 0);
  else if (st->mode & GO_NAMED_PIPE)
    ck_assert (mkfifo (full, 0600) == 0);
  else if ((st->mode & 0x8F280000u) == 0 && e->linkname == NULL)
    {
      int fd = open (full, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      ck_assert_int_ge (fd, 0);
      close (fd);
    }
  free (full);
}

static void
rx_end_of_listing (struct fake_peer *p, struct fstream *s)
{
  uint32_t first_dir = UINT32_MAX, first_file = UINT32_MAX;
  for (size_t i = 0; i < s->rx_n; i++)
    {
      if ((s->rx[i].mode & GO_DIR) && first_dir == UINT32_MAX)
        first_dir = (uint32_t) i;
      if ((s->rx[i].mode & 0x8F280000u) == 0 && s->rx[i].linkname == NULL && first_file == UINT32_MAX)
        first_file = (uint32_t) i;
    }
  switch (p->cfg.mode)
    {
    case FAKE_FS_REQ_DIR:
      rx_req (p, s, first_dir);
      return;
    case FAKE_FS_REQ_PAST:
      rx_req (p, s, (uint32_t) s->rx_n + 5);
      return;
    case FAKE_FS_ERR:
      {
        Fsutil__Types__Packet e = FSUTIL__TYPES__PACKET__INIT;
        e.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR;
        e.data.data = (uint8_t *) "no space left on device";
        e.data.len = strlen ("no space left on device");
        send_packet (p, s, &e);
        finish (p, s, 2, "no space left on device");
        return;
      }
    case FAKE_FS_REQ_TWICE:
      rx_req (p, s, first_file);
      break;
    default:
      break;
    }
  for (size_t i = 0; i < s->rx_n; i++)
    if ((s->rx[i].mode & 0x8F280000u) == 0 && s->rx[i].linkname == NULL)
      {
        s->rx[i].requested = true;
        s->rx_outstanding++;
        rx_req (p, s, (uint32_t) i);
      }
  if (s->rx_outstanding == 0)
    rx_complete (p, s);
}

static void
rx_data (struct fake_peer *p, struct fstream *s, uint32_t id, const uint8_t *data, size_t len)
{
  if (id >= s->rx_n || !s->rx[id].requested || s->rx[id].done)
    {
      char *m = xasprintf ("invalid file request %u", id);
      filesend_problem (p, s, m);
      free (m);
      return;
    }
  struct rentry *e = &s->rx[id];
  if (len == 0)
    {
      e->done = true;
      if (--s->rx_outstanding == 0)
        rx_complete (p, s);
      return;
    }
  char *full = rx_full (p, e->path);
  int fd = open (full, O_WRONLY | O_APPEND | O_CLOEXEC);
  ck_assert_int_ge (fd, 0);
  ck_assert_int_eq (write (fd, data, len), (ssize_t) len);
  close (fd);
  free (full);
  pthread_mutex_lock (&p->mu);
  p->fs.bytes += len;
  pthread_mutex_unlock (&p->mu);
  if (p->cfg.mode == FAKE_FS_HANGUP)
    p->close_pending = true;
}

static void
filesend_msg (struct fake_peer *p, struct fstream *s, const void *msg, size_t len)
{
  if (!p->cfg.filesend_local)
    {
      /* type=tar: BuildKit's writeTargetFile. */
      Moby__Filesync__V1__BytesMessage *bm = moby__filesync__v1__bytes_message__unpack (NULL, len, msg);
      ck_assert (bm != NULL);
      ck_assert_int_eq (write (s->out_fd, bm->data.data, bm->data.len), (ssize_t) bm->data.len);
      pthread_mutex_lock (&p->mu);
      p->fs.messages++;
      if (len > p->fs.max_message)
        p->fs.max_message = len;
      p->fs.bytes += bm->data.len;
      pthread_mutex_unlock (&p->mu);
      moby__filesync__v1__bytes_message__free_unpacked (bm, NULL);
      if (p->cfg.mode == FAKE_FS_HANGUP)
        p->close_pending = true;
      return;
    }
  Fsutil__Types__Packet *pk = fsutil__types__packet__unpack (NULL, len, msg);
  ck_assert (pk != NULL);
  switch (pk->type)
    {
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_STAT:
      if (pk->stat)
        rx_stat (p, s, pk->stat);
      else
        rx_end_of_listing (p, s);
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA:
      rx_data (p, s, pk->id, pk->data.data, pk->data.len);
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN:
      if (!s->rx_fin_sent)
        filesend_problem (p, s, "FIN from the sender before ours");
      pthread_mutex_lock (&p->mu);
      p->fs.fin_received = true;
      pthread_mutex_unlock (&p->mu);
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR:
      pthread_mutex_lock (&p->mu);
      free (p->err_received);
      p->err_received = xstrndup ((const char *) pk->data.data, pk->data.len);
      pthread_mutex_unlock (&p->mu);
      finish (p, s, 2, "error from sender");
      break;
    default:
      filesend_problem (p, s, "unexpected packet type from the sender");
      break;
    }
  fsutil__types__packet__free_unpacked (pk, NULL);
}

/* The daemon half-closed: the tar is complete; a local transfer is
   complete if the FIN exchange happened (the receiver drains to EOF). */
static void
filesend_eof (struct fake_peer *p, struct fstream *s)
{
  if (s->finished)
    return;
  pthread_mutex_lock (&p->mu);
  p->fs.half_closed = true;
  bool ok = !p->cfg.filesend_local || p->fs.fin_received;
  if (ok)
    p->fs.ok = true;
  pthread_mutex_unlock (&p->mu);
  if (s->out_fd >= 0)
    {
      close (s->out_fd);
      s->out_fd = -1;
    }
  if (ok)
    finish (p, s, 0, NULL);
  else
    filesend_problem (p, s, "EOF before the FIN exchange");
}

void
fake_peer_filesend_stats (struct fake_peer *p, struct fake_filesend_stats *out)
{
  pthread_mutex_lock (&p->mu);
  *out = p->fs;
  out->paths = xstrdup (p->fs_paths.data ? p->fs_paths.data : "");
  out->problem = p->fs_problem ? xstrdup (p->fs_problem) : NULL;
  pthread_mutex_unlock (&p->mu);
}

/* ---- the other services --------------------------------------------------------------- */

static void
unary_msg (struct fake_peer *p, struct fstream *s, const void *msg, size_t len)
{
  if (strcmp (s->path, "/moby.filesync.v1.Auth/Credentials") == 0)
    {
      Moby__Filesync__V1__CredentialsRequest *rq = moby__filesync__v1__credentials_request__unpack (NULL, len, msg);
      ck_assert (rq != NULL);
      Moby__Filesync__V1__CredentialsResponse rs = MOBY__FILESYNC__V1__CREDENTIALS_RESPONSE__INIT;
      if (p->cfg.auth_host && strcmp (rq->host, p->cfg.auth_host) == 0)
        {
          rs.username = (char *) p->cfg.auth_user;
          rs.secret = (char *) p->cfg.auth_secret;
        }
      moby__filesync__v1__credentials_request__free_unpacked (rq, NULL);
      uint8_t buf[1024];
      size_t n = moby__filesync__v1__credentials_response__pack (&rs, buf);
      send_msg (p, s, buf, n);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/moby.buildkit.secrets.v1.Secrets/GetSecret") == 0)
    {
      Moby__Buildkit__Secrets__V1__GetSecretRequest *rq
          = moby__buildkit__secrets__v1__get_secret_request__unpack (NULL, len, msg);
      ck_assert (rq != NULL);
      bool known = p->cfg.secret_id && strcmp (rq->id, p->cfg.secret_id) == 0;
      moby__buildkit__secrets__v1__get_secret_request__free_unpacked (rq, NULL);
      if (!known)
        {
          trailers_only (p, s, 5, "secret not found");
          return;
        }
      Moby__Buildkit__Secrets__V1__GetSecretResponse rs = MOBY__BUILDKIT__SECRETS__V1__GET_SECRET_RESPONSE__INIT;
      rs.data.data = (uint8_t *) p->cfg.secret_value;
      rs.data.len = strlen (p->cfg.secret_value);
      uint8_t buf[4096];
      size_t n = moby__buildkit__secrets__v1__get_secret_response__pack (&rs, buf);
      send_msg (p, s, buf, n);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/grpc.health.v1.Health/Check") == 0)
    {
      Grpc__Health__V1__HealthCheckResponse rs = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
      rs.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
      uint8_t buf[16];
      size_t n = grpc__health__v1__health_check_response__pack (&rs, buf);
      send_msg (p, s, buf, n);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/test.Echo/Unary") == 0)
    {
      send_msg (p, s, msg, len);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/test.Echo/Stream") == 0)
    send_msg (p, s, msg, len);
  else if (strcmp (s->path, "/test.Echo/Batch") == 0)
    {
      /* Several messages in one write: they share DATA frames. */
      int n = atoi (msg);
      for (int i = 0; i < n; i++)
        {
          char m[32];
          int l = snprintf (m, sizeof m, "m%d", i);
          send_msg (p, s, m, (size_t) l);
        }
      send_msg (p, s, "", 0);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/test.Echo/Big") == 0)
    {
      size_t n = (size_t) atol (msg);
      char *big = xmalloc (n + 1);
      for (size_t i = 0; i < n; i++)
        big[i] = (char) ('a' + i % 26);
      send_msg (p, s, big, n);
      free (big);
      finish (p, s, 0, NULL);
    }
}

static void
stream_start (struct fake_peer *p, struct fstream *s)
{
  if (p->cfg.mode == FAKE_SILENT || strcmp (s->path, "/test.Echo/Silent") == 0)
    return;
  if (strcmp (s->path, "/moby.filesync.v1.FileSync/DiffCopy") == 0)
    diffcopy_start (p, s);
  else if (strcmp (s->path, "/moby.filesync.v1.FileSend/DiffCopy") == 0)
    filesend_start (p, s);
  else if (p->cfg.auth_unimplemented && strcmp (s->path, "/moby.filesync.v1.Auth/Credentials") == 0)
    trailers_only (p, s, 12, "unknown method Credentials");
  else if (strcmp (s->path, "/test.Echo/Fail") == 0)
    trailers_only (p, s, 3, "bad%20request%3A%20%E2%9C%93%25done");
  else if (strcmp (s->path, "/test.Echo/FailAfter") == 0)
    {
      send_msg (p, s, "one", 3);
      finish (p, s, 13, "boom after one");
    }
  else if (strcmp (s->path, "/test.Echo/NoStatus") == 0)
    {
      send_msg (p, s, "one", 3);
      s->end_without_trailers = true;
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/test.Echo/GoAway") == 0)
    {
      /* Graceful GOAWAY: this stream is the last one served. */
      nghttp2_submit_goaway (p->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR, (const uint8_t *) "bye", 3);
      send_msg (p, s, "served", 6);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/test.Echo/Reset") == 0)
    nghttp2_submit_rst_stream (p->h2, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
  else if (strcmp (s->path, "/test.Echo/Huge") == 0)
    {
      respond (p, s);
      unsigned char prefix[5] = { 0, 0, 0x40, 0, 1 }; /* 4 MiB + 1 */
      ps_buf_append (&s->out, prefix, 5);
      char zeros[4096] = { 0 };
      ps_buf_append (&s->out, zeros, sizeof zeros);
    }
  else if (strcmp (s->path, "/test.Echo/Metadata") == 0)
    {
      ps_buf b = { 0 };
      for (size_t i = 0; i + 1 < s->md.n; i += 2)
        if (ps_str_has_prefix (s->md.v[i], "x-"))
          ps_buf_printf (&b, "%s=%s;", s->md.v[i], s->md.v[i + 1]);
      send_msg (p, s, b.data ? b.data : "", b.len);
      ps_buf_free (&b);
      finish (p, s, 0, NULL);
    }
  else if (strcmp (s->path, "/test.Echo/Stream") == 0)
    respond (p, s);
  else if (strncmp (s->path, "/test.Echo/", 11) == 0 || strcmp (s->path, "/moby.filesync.v1.Auth/Credentials") == 0
           || strcmp (s->path, "/moby.buildkit.secrets.v1.Secrets/GetSecret") == 0
           || strcmp (s->path, "/grpc.health.v1.Health/Check") == 0)
    ; /* answered on the request message */
  else
    {
      char *m = xasprintf ("unknown service %s", s->path);
      trailers_only (p, s, 12, m);
      free (m);
    }
}

/* ---- nghttp2 plumbing ------------------------------------------------------------------ */

static struct fstream *
find_stream (struct fake_peer *p, int32_t id)
{
  for (struct fstream *s = p->streams; s; s = s->next)
    if (s->id == id)
      return s;
  return NULL;
}

static int
on_begin_headers (nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
  struct fake_peer *p = ud;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  struct fstream *s = xcalloc (1, sizeof *s);
  s->id = f->hd.stream_id;
  s->next = p->streams;
  p->streams = s;
  return 0;
}

static int
on_header (nghttp2_session *h2, const nghttp2_frame *f, const uint8_t *name, size_t namelen, const uint8_t *value,
           size_t valuelen, uint8_t flags, void *ud)
{
  struct fake_peer *p = ud;
  struct fstream *s = find_stream (p, f->hd.stream_id);
  if (s == NULL)
    return 0;
  if (namelen == 5 && memcmp (name, ":path", 5) == 0)
    snprintf (s->path, sizeof s->path, "%.*s", (int) valuelen, value);
  else if (name[0] != ':')
    {
      char *k = xstrndup ((const char *) name, namelen);
      char *v = xstrndup ((const char *) value, valuelen);
      ps_strv_push (&s->md, k);
      ps_strv_push (&s->md, v);
      free (k);
      free (v);
    }
  return 0;
}

static void
stream_msg (struct fake_peer *p, struct fstream *s, const char *msg, size_t len)
{
  if (s->finished || p->cfg.mode == FAKE_SILENT)
    return;
  if (s->diffcopy)
    diffcopy_msg (p, s, msg, len);
  else if (s->filesend)
    filesend_msg (p, s, msg, len);
  else
    unary_msg (p, s, msg, len);
}

static int
on_data_chunk (nghttp2_session *h2, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
  struct fake_peer *p = ud;
  struct fstream *s = find_stream (p, id);
  if (s == NULL)
    return 0;
  ps_buf_append (&s->in, data, len);
  for (;;)
    {
      if (s->in.len < 5)
        break;
      const unsigned char *b = (const unsigned char *) s->in.data;
      size_t mlen = (size_t) b[1] << 24 | (size_t) b[2] << 16 | (size_t) b[3] << 8 | b[4];
      if (s->in.len < 5 + mlen)
        break;
      /* Binary-safe copy (file contents hold NUL bytes), NUL-terminated
         for the text messages of the Echo methods. */
      char *m = xmalloc (mlen + 1);
      memcpy (m, s->in.data + 5, mlen);
      m[mlen] = '\0';
      memmove (s->in.data, s->in.data + 5 + mlen, s->in.len - 5 - mlen);
      s->in.len -= 5 + mlen;
      stream_msg (p, s, m, mlen);
      free (m);
    }
  return 0;
}

static int
on_frame_recv (nghttp2_session *h2, const nghttp2_frame *f, void *ud)
{
  struct fake_peer *p = ud;
  if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK))
    {
      pthread_mutex_lock (&p->mu);
      p->ping_acks++;
      pthread_mutex_unlock (&p->mu);
    }
  struct fstream *s = find_stream (p, f->hd.stream_id);
  if (s == NULL)
    return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
    stream_start (p, s);
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      && strcmp (s->path, "/test.Echo/Stream") == 0)
    finish (p, s, 0, NULL);
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      && s->filesend)
    filesend_eof (p, s);
  return 0;
}

static void
stream_free (struct fstream *s)
{
  ps_strv_free (&s->md);
  ps_buf_free (&s->in);
  ps_buf_free (&s->out);
  free (s->message);
  free (s->root);
  for (size_t i = 0; i < s->n; i++)
    {
      free (s->entries[i].rel);
      free (s->entries[i].linkname);
    }
  free (s->entries);
  free (s->requestable);
  free (s->requested);
  for (size_t i = 0; i < s->n_pending; i++)
    if (s->pending[i].fd >= 0)
      close (s->pending[i].fd);
  if (s->filesend && s->out_fd >= 0)
    close (s->out_fd);
  for (size_t i = 0; i < s->rx_n; i++)
    {
      free (s->rx[i].path);
      free (s->rx[i].linkname);
      if (s->rx[i].stat)
        fsutil__types__stat__free_unpacked (s->rx[i].stat, NULL);
    }
  free (s->rx);
  free (s);
}

static int
on_stream_close (nghttp2_session *h2, int32_t id, uint32_t code, void *ud)
{
  struct fake_peer *p = ud;
  if (code == NGHTTP2_CANCEL)
    {
      pthread_mutex_lock (&p->mu);
      p->resets++;
      pthread_mutex_unlock (&p->mu);
    }
  for (struct fstream **pp = &p->streams; *pp; pp = &(*pp)->next)
    if ((*pp)->id == id)
      {
        struct fstream *s = *pp;
        *pp = s->next;
        stream_free (s);
        break;
      }
  return 0;
}

static bool
flush_all (struct fake_peer *p)
{
  while (p->wbuf_off < p->wbuf.len)
    {
      ssize_t w = send (p->fd, p->wbuf.data + p->wbuf_off, p->wbuf.len - p->wbuf_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0)
        return errno == EAGAIN || errno == EINTR;
      p->wbuf_off += (size_t) w;
    }
  ps_buf_reset (&p->wbuf);
  p->wbuf_off = 0;
  return true;
}

static void *
peer_main (void *arg)
{
  struct fake_peer *p = arg;
  if (p->cfg.mode == FAKE_GARBAGE)
    {
      const char junk[] = "HTTP/1.1 200 OK\r\nthis is not HTTP/2\r\n\r\n";
      ssize_t w = send (p->fd, junk, sizeof junk - 1, MSG_NOSIGNAL);
      (void) w;
      char buf[4096];
      struct pollfd pf[2] = { { p->fd, POLLIN, 0 }, { p->stop[0], POLLIN, 0 } };
      while (poll (pf, 2, -1) > 0 && !(pf[1].revents & POLLIN))
        if (read (p->fd, buf, sizeof buf) <= 0)
          break;
      return NULL;
    }

  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new (&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback (cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback (cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback (cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback (cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback (cb, on_stream_close);
  nghttp2_session_server_new (&p->h2, cb, p);
  nghttp2_session_callbacks_del (cb);
  /* Go's http2 server settings as captured (wire-capture.txt). */
  nghttp2_settings_entry iv[] = {
    { NGHTTP2_SETTINGS_MAX_FRAME_SIZE, 1048576 },
    { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 250 },
    { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1048576 },
  };
  nghttp2_submit_settings (p->h2, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE (iv));
  nghttp2_submit_ping (p->h2, NGHTTP2_FLAG_NONE, (const uint8_t *) "podsolve");

  char buf[65536];
  for (;;)
    {
      for (struct fstream *s = p->streams; s; s = s->next)
        {
          if (s->diffcopy)
            diffcopy_pump (p, s);
          if (s->deferred && (s->out.len > s->out_off || s->trailers_ready))
            {
              s->deferred = false;
              nghttp2_session_resume_data (p->h2, s->id);
            }
        }
      const uint8_t *data;
      ssize_t n;
      while (p->wbuf.len < 1024 * 1024 && (n = nghttp2_session_mem_send (p->h2, &data)) > 0)
        ps_buf_append (&p->wbuf, data, (size_t) n);
      if (!flush_all (p))
        break;
      if (p->close_pending && p->wbuf.len == 0)
        break;
      bool more = p->wbuf.len || nghttp2_session_want_write (p->h2);
      struct pollfd pf[2] = { { p->fd, POLLIN | (more ? POLLOUT : 0), 0 }, { p->stop[0], POLLIN, 0 } };
      if (poll (pf, 2, -1) < 0)
        continue;
      if (pf[1].revents & POLLIN)
        break;
      if (pf[0].revents & (POLLIN | POLLHUP | POLLERR))
        {
          ssize_t r = read (p->fd, buf, sizeof buf);
          if (r < 0 && errno == EAGAIN)
            continue;
          if (r <= 0)
            break;
          if (nghttp2_session_mem_recv (p->h2, (const uint8_t *) buf, (size_t) r) < 0)
            break;
        }
    }
  /* Closing the socket is what the client sees. */
  shutdown (p->fd, SHUT_RDWR);
  return NULL;
}

struct fake_peer *
fake_peer_start (int fd, const struct fake_config *cfg)
{
  struct fake_peer *p = xcalloc (1, sizeof *p);
  p->fd = fd;
  p->cfg = *cfg;
  pthread_mutex_init (&p->mu, NULL);
  ck_assert (pipe2 (p->stop, O_CLOEXEC) == 0);
  fcntl (fd, F_SETFL, fcntl (fd, F_GETFL) | O_NONBLOCK);
  ck_assert (pthread_create (&p->th, NULL, peer_main, p) == 0);
  return p;
}

void
fake_peer_hangup (struct fake_peer *p)
{
  shutdown (p->fd, SHUT_RDWR);
}

void
fake_peer_stop (struct fake_peer *p)
{
  ssize_t w = write (p->stop[1], "x", 1);
  (void) w;
  pthread_join (p->th, NULL);
  while (p->streams)
    {
      struct fstream *s = p->streams;
      p->streams = s->next;
      stream_free (s);
    }
  if (p->h2)
    nghttp2_session_del (p->h2);
  close (p->fd);
  close (p->stop[0]);
  close (p->stop[1]);
  ps_buf_free (&p->wbuf);
  ps_strv_free (&p->requested);
  ps_strv_free (&p->last_md);
  free (p->err_received);
  ps_buf_free (&p->fs_paths);
  free (p->fs_problem);
  pthread_mutex_destroy (&p->mu);
  free (p);
}

size_t
fake_peer_reqs (struct fake_peer *p)
{
  pthread_mutex_lock (&p->mu);
  size_t n = p->reqs;
  pthread_mutex_unlock (&p->mu);
  return n;
}

bool
fake_peer_requested (struct fake_peer *p, const char *path)
{
  pthread_mutex_lock (&p->mu);
  bool found = false;
  for (size_t i = 0; i < p->requested.n; i++)
    found = found || strcmp (p->requested.v[i], path) == 0;
  pthread_mutex_unlock (&p->mu);
  return found;
}

char *
fake_peer_metadata (struct fake_peer *p, const char *key)
{
  ps_buf b = { 0 };
  pthread_mutex_lock (&p->mu);
  for (size_t i = 0; i + 1 < p->last_md.n; i += 2)
    if (strcmp (p->last_md.v[i], key) == 0)
      {
        if (b.len)
          ps_buf_puts (&b, "|");
        ps_buf_puts (&b, p->last_md.v[i + 1]);
      }
  pthread_mutex_unlock (&p->mu);
  return ps_buf_steal (&b);
}

char *
fake_peer_err_received (struct fake_peer *p)
{
  pthread_mutex_lock (&p->mu);
  char *e = p->err_received ? xstrdup (p->err_received) : NULL;
  pthread_mutex_unlock (&p->mu);
  return e;
}

size_t
fake_peer_ping_acks (struct fake_peer *p)
{
  pthread_mutex_lock (&p->mu);
  size_t n = p->ping_acks;
  pthread_mutex_unlock (&p->mu);
  return n;
}

size_t
fake_peer_resets (struct fake_peer *p)
{
  pthread_mutex_lock (&p->mu);
  size_t n = p->resets;
  pthread_mutex_unlock (&p->mu);
  return n;
}

/* ---- pairs ------------------------------------------------------------------------------- */

static void *
io_main (void *arg)
{
  struct peer_pair *pp = arg;
  ps_error *err = NULL;
  pp->io_result = pp->session ? session_run (pp->session, &err) : grpc_conn_run (pp->conn, &err);
  if (err)
    {
      pp->io_error = xstrdup (err->msg);
      ps_error_free (err);
    }
  return NULL;
}

static void
pair_connect (struct peer_pair *pp, const struct fake_config *cfg, int sv[2])
{
  memset (pp, 0, sizeof *pp);
  ck_assert (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  pp->fd = sv[0];
  pp->peer = fake_peer_start (sv[1], cfg);
}

void
pair_start (struct peer_pair *pp, const struct fake_config *cfg)
{
  int sv[2];
  pair_connect (pp, cfg, sv);
  ps_error *err = NULL;
  pp->conn = grpc_conn_new (pp->fd, NULL, 0, "test", &err);
  ck_assert_ptr_nonnull (pp->conn);
  ck_assert (pthread_create (&pp->io, NULL, io_main, pp) == 0);
}

static const char *const all_methods[] = {
  "/grpc.health.v1.Health/Check",
  "/grpc.health.v1.Health/Watch",
  "/moby.filesync.v1.FileSync/DiffCopy",
  "/moby.filesync.v1.FileSync/TarStream",
  "/moby.filesync.v1.Auth/Credentials",
  "/moby.filesync.v1.Auth/FetchToken",
  "/moby.buildkit.secrets.v1.Secrets/GetSecret",
};

void
pair_start_session (struct peer_pair *pp, const struct fake_config *cfg, const char *uuid, const char *const *methods,
                    size_t n_methods)
{
  int sv[2];
  pair_connect (pp, cfg, sv);
  if (methods == NULL)
    {
      methods = all_methods;
      n_methods = ARRAY_SIZE (all_methods);
    }
  struct session_info info = { .uuid = uuid, .shared_key = "k3y", .name = "ctx", .methods = methods,
                               .n_methods = n_methods };
  ps_error *err = NULL;
  pp->session = session_new (pp->fd, NULL, 0, &info, &err);
  ck_assert_msg (pp->session != NULL, "%s", err ? err->msg : "");
  ck_assert (pthread_create (&pp->io, NULL, io_main, pp) == 0);
}

void
pair_stop (struct peer_pair *pp)
{
  if (pp->session)
    session_close (pp->session);
  else
    grpc_conn_shutdown (pp->conn);
  if (!pp->joined)
    pthread_join (pp->io, NULL);
  fake_peer_stop (pp->peer);
  if (pp->session)
    session_unref (pp->session);
  else
    grpc_conn_free (pp->conn);
  close (pp->fd);
  free (pp->io_error);
}

/* ---- files ----------------------------------------------------------------------------- */

char *
test_mkdtemp (void)
{
  char *t = xstrdup ("/tmp/podsolve-test-XXXXXX");
  ck_assert_ptr_nonnull (mkdtemp (t));
  return t;
}

void
test_rm_tree (char **dir)
{
  if (*dir == NULL)
    return;
  ps_error *err = NULL;
  if (ps_rm_rf (*dir, &err) < 0)
    ps_error_free (err);
  free (*dir);
  *dir = NULL;
}

void
test_write (const char *dir, const char *rel, const char *content, mode_t mode, int64_t mtime_ns)
{
  char *full = xasprintf ("%s/%s", dir, rel);
  ck_assert_int_eq (ps_write_file (full, content, strlen (content), mode, NULL), 0);
  chmod (full, mode);
  if (mtime_ns)
    {
      struct timespec ts[2] = { { mtime_ns / 1000000000LL, mtime_ns % 1000000000LL },
                                { mtime_ns / 1000000000LL, mtime_ns % 1000000000LL } };
      ck_assert (utimensat (AT_FDCWD, full, ts, AT_SYMLINK_NOFOLLOW) == 0);
    }
  free (full);
}

char *
test_read (const char *dir, const char *rel)
{
  char *full = xasprintf ("%s/%s", dir, rel);
  char *out = NULL;
  if (ps_read_file (full, 64 * 1024 * 1024, &out, NULL, NULL) < 0)
    out = NULL;
  free (full);
  return out;
}

bool
test_exists (const char *dir, const char *rel)
{
  char *full = xasprintf ("%s/%s", dir, rel);
  struct stat st;
  bool ok = lstat (full, &st) == 0;
  free (full);
  return ok;
}

size_t
test_count_temporaries (const char *dir)
{
  DIR *d = opendir (dir);
  if (d == NULL)
    return 0;
  size_t n = 0;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
        continue;
      if (ps_str_has_prefix (de->d_name, ".podsolve-diffcopy-"))
        n++;
      if (de->d_type == DT_DIR)
        {
          char *sub = xasprintf ("%s/%s", dir, de->d_name);
          n += test_count_temporaries (sub);
          free (sub);
        }
    }
  closedir (d);
  return n;
}

void
test_rm_rf (const char *dir)
{
  ps_rm_rf (dir, NULL);
}
