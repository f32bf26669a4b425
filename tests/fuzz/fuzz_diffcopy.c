/* fuzz_diffcopy — the DiffCopy receiver state machine fed fsutil packets as
 * a hostile sender would send them, writing into a temporary directory.
 *
 * The input is a program of operations (STAT entries built from a small
 * vocabulary of names, modes and link targets; end of listing; DATA for
 * the ids the receiver requested or for any id; FIN, ERR, REQ, unknown
 * types; raw protobuf bytes; ending the call; a failing transport), run as
 * one or more transfers into the same directory, so later transfers meet
 * what earlier ones left (the context cache between builds).
 *
 * After every transfer: nothing exists beside the destination but an
 * "outside" directory whose canary file and own metadata are unchanged;
 * no temporary file remains; after a successful transfer the destination
 * holds only entries the listing named.  Link targets and paths that would
 * lexically leave the scratch directory are rewritten to point at the
 * canary, so a receiver bug shows up there instead of on the host. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.pb-c.h"
#include "common/log.h"
#include "session/diffcopy.h"
#include "session/fsutil_mode.h"


static char parent[] = "/tmp/podsolve-fuzz-dc-XXXXXX";
static char *dest, *outside, *canary;
static struct stat canary_st, outside_st;
static bool verbose;

static void
die (const char *what, const char *detail)
{
  fprintf (stderr, "fuzz_diffcopy: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  abort ();
}

/* ---- the input ---------------------------------------------------------------- */

struct in
{
  const uint8_t *p;
  size_t n;
};

static uint8_t
u8 (struct in *in)
{
  if (in->n == 0)
    return 0;
  in->n--;
  return *in->p++;
}

static uint32_t
u16 (struct in *in)
{
  return (uint32_t) u8 (in) << 8 | u8 (in);
}

static const uint8_t *
take (struct in *in, size_t *len)
{
  if (*len > in->n)
    *len = in->n;
  const uint8_t *p = in->p;
  in->p += *len;
  in->n -= *len;
  return p;
}

/* ---- the vocabulary ---------------------------------------------------------------- */

static const char *const names[] = {
  "a", "b", "c", "Dockerfile", "dir", "z", ".dockerignore", ".podsolve-diffcopy-0-00.tmp", "keep.log", "..", ".", "",
  "x/y", "/abs", "a b", "\xff",
};

static const char *targets[] = {
  "a", "b", "a/b", "dir", "Dockerfile", "", "../outside", "../outside/canary", "../../outside/canary", "c/../a",
  NULL, /* the canary by absolute path, set at start */
};

static const char *const xattr_names[] = { "user.x", "user.y", "security.capability", "trusted.x", "security.selinux" };

static const char *const excl_none[] = { NULL };
static const char *const excl_logs[] = { "*.log", NULL };
static const char *const excl_dir[] = { "dir", "!dir/keep.log", NULL };

/* ---- keeping the host safe -------------------------------------------------------- */

/* True when `path`, taken relative to a directory `depth` levels below the
   scratch directory, lexically stays inside the scratch directory. */
static bool
stays_inside (const char *path, int depth)
{
  if (path[0] == '/')
    return strncmp (path, parent, strlen (parent)) == 0 && path[strlen (parent)] == '/' && strstr (path, "..") == NULL;
  const char *p = path;
  while (*p)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      if (n == 2 && p[0] == '.' && p[1] == '.')
        {
          if (--depth < 0)
            return false;
        }
      else if (n > 0 && !(n == 1 && p[0] == '.'))
        depth++;
      if (!slash)
        break;
      p = slash + 1;
    }
  return true;
}

static int
depth_of (const char *path)
{
  int d = 1; /* dest itself */
  for (const char *p = path; *p; p++)
    d += *p == '/';
  return d;
}

/* Rewrite what a buggy receiver could turn into a write on the host:
   paths and link targets that leave the scratch directory, and device
   numbers other than /dev/null's. */
static void
sanitize (Fsutil__Types__Stat *st)
{
  if (st->path && !stays_inside (st->path, 1))
    st->path = (char *) "../outside/canary";
  if (st->linkname && st->linkname[0] && !stays_inside (st->linkname, st->path ? depth_of (st->path) : 1))
    st->linkname = (char *) "../outside/canary";
  if (st->mode & GO_MODE_DEVICE)
    {
      st->mode |= GO_MODE_CHAR_DEVICE;
      st->devmajor = 1;
      st->devminor = 3;
    }
}

/* ---- the transport ------------------------------------------------------------ */

struct transfer
{
  uint32_t reqs[4096];
  size_t n_reqs;
  bool fin_sent, err_sent;
  bool fail_next_send;
  /* What the listing named, when every STAT came from the vocabulary. */
  char *listed[1024];
  size_t n_listed;
  bool listing_known;
};

static int
on_send (void *ud, const void *packet, size_t len, bool final, ps_error **err)
{
  struct transfer *t = ud;
  Fsutil__Types__Packet *p = fsutil__types__packet__unpack (NULL, len, packet);
  if (p == NULL)
    die ("the receiver sent an undecodable packet", NULL);
  switch (p->type)
    {
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ:
      if (t->n_reqs < 4096)
        t->reqs[t->n_reqs++] = p->id;
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN:
      t->fin_sent = true;
      break;
    case FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR:
      if (!final)
        die ("ERR not marked final", NULL);
      t->err_sent = true;
      break;
    default:
      die ("the receiver sent a packet of a sender's type", NULL);
    }
  fsutil__types__packet__free_unpacked (p, NULL);
  if (t->fail_next_send && !final)
    {
      t->fail_next_send = false;
      return ps_error_set (err, 502, "transport failed");
    }
  return 0;
}

/* ---- checks ------------------------------------------------------------------- */

static bool
same_meta (const struct stat *a, const struct stat *b)
{
  return a->st_mode == b->st_mode && a->st_uid == b->st_uid && a->st_gid == b->st_gid && a->st_size == b->st_size
         && a->st_nlink == b->st_nlink && a->st_mtim.tv_sec == b->st_mtim.tv_sec
         && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ino == b->st_ino;
}

static void
check_outside (void)
{
  DIR *d = opendir (parent);
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, "..") && strcmp (de->d_name, "dest")
        && strcmp (de->d_name, "outside"))
      die ("an entry appeared beside the destination", de->d_name);
  closedir (d);
  d = opendir (outside);
  if (d == NULL)
    die ("the outside directory is gone", NULL);
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, "..") && strcmp (de->d_name, "canary"))
      die ("an entry appeared outside", de->d_name);
  closedir (d);
  struct stat st;
  if (lstat (canary, &st) < 0 || !same_meta (&st, &canary_st))
    die ("the canary changed", NULL);
  if (lstat (outside, &st) < 0 || !same_meta (&st, &outside_st))
    die ("the outside directory changed", NULL);
}

/* The receiver's temporaries: .podsolve-diffcopy-<id>-<16 hex>.tmp (the
   vocabulary's look-alike has 2 hex digits). */
static bool
is_temporary (const char *name)
{
  if (strncmp (name, ".podsolve-diffcopy-", 19) != 0)
    return false;
  const char *p = name + 19;
  if (*p < '0' || *p > '9')
    return false;
  while (*p >= '0' && *p <= '9')
    p++;
  if (*p++ != '-')
    return false;
  for (int i = 0; i < 16; i++, p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return false;
  return strcmp (p, ".tmp") == 0;
}

/* Walk dest: no temporaries anywhere; with a known listing, every entry
   is one it named. */
static void
walk (const char *rel, const struct transfer *t, bool check_listed)
{
  char *full = rel[0] ? NULL : strdup (dest);
  if (full == NULL && asprintf (&full, "%s/%s", dest, rel) < 0)
    abort ();
  DIR *d = opendir (full);
  free (full);
  if (d == NULL)
    return;
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    {
      if (!strcmp (de->d_name, ".") || !strcmp (de->d_name, ".."))
        continue;
      char *path;
      if (asprintf (&path, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) < 0)
        abort ();
      if (is_temporary (de->d_name))
        die ("a temporary file was left behind", path);
      if (check_listed)
        {
          bool listed = false;
          for (size_t i = 0; i < t->n_listed && !listed; i++)
            listed = strcmp (t->listed[i], path) == 0;
          if (!listed)
            die ("after a successful transfer the destination holds an entry the listing did not name", path);
        }
      if (de->d_type == DT_DIR)
        walk (path, t, check_listed);
      free (path);
    }
  closedir (d);
}

/* ---- one transfer ---------------------------------------------------------------- */

static void
add_listed (struct transfer *t, const char *path)
{
  if (t->n_listed < 1024)
    t->listed[t->n_listed++] = strdup (path);
  else
    t->listing_known = false;
}

static void
build_stat (struct in *in, Fsutil__Types__Stat *st, char *pathbuf, size_t pathlen,
            Fsutil__Types__Stat__XattrsEntry *x, Fsutil__Types__Stat__XattrsEntry **xp, uint8_t *xval)
{
  size_t ncomp = 1 + u8 (in) % 3;
  pathbuf[0] = '\0';
  for (size_t i = 0; i < ncomp; i++)
    {
      if (i)
        strncat (pathbuf, "/", pathlen - strlen (pathbuf) - 1);
      strncat (pathbuf, names[u8 (in) % (sizeof names / sizeof names[0])], pathlen - strlen (pathbuf) - 1);
    }
  st->path = pathbuf;
  uint32_t perm = u16 (in) & 0777;
  uint32_t mode;
  switch (u8 (in) % 10)
    {
    case 0:
    case 1:
      mode = GO_MODE_DIR | perm;
      break;
    case 2:
      mode = GO_MODE_SYMLINK | 0777;
      break;
    case 3:
      mode = GO_MODE_NAMED_PIPE | perm;
      break;
    case 4:
      mode = GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE | perm;
      break;
    case 5:
      mode = GO_MODE_SOCKET | perm;
      break;
    case 6:
      mode = GO_MODE_IRREGULAR | perm;
      break;
    case 7:
      mode = perm | GO_MODE_SETUID | GO_MODE_SETGID | GO_MODE_STICKY;
      break;
    default:
      mode = perm;
      break;
    }
  st->mode = mode;
  static const uint32_t ids[] = { 0, 1000, 65534 };
  st->uid = ids[u8 (in) % 3];
  st->gid = ids[u8 (in) % 3];
  st->size = u8 (in);
  st->modtime = (int64_t) u8 (in) * 1000000000LL;
  uint8_t l = u8 (in);
  st->linkname = l & 0x80 ? (char *) targets[(l & 0x7f) % (sizeof targets / sizeof targets[0])] : (char *) "";
  if (u8 (in) & 1)
    {
      x->key = (char *) xattr_names[u8 (in) % (sizeof xattr_names / sizeof xattr_names[0])];
      size_t vl = u8 (in) % 8;
      memset (xval, 'v', vl);
      x->value.data = xval;
      x->value.len = vl;
      *xp = x;
      st->xattrs = xp;
      st->n_xattrs = 1;
    }
}

/* Feed one packet; false once the transfer is over (failed). */
static bool
feed (diffcopy_receiver *r, struct transfer *t, Fsutil__Types__Packet *p)
{
  size_t len = fsutil__types__packet__get_packed_size (p);
  uint8_t *buf = malloc (len + 1);
  fsutil__types__packet__pack (p, buf);
  ps_error *err = NULL;
  int ret = diffcopy_receiver_packet (r, buf, len, &err);
  free (buf);
  if (ret < 0)
    {
      if (err == NULL || err->status < 400 || err->status > 599)
        die ("failure without an error status", NULL);
      if (verbose)
        fprintf (stderr, "packet refused: %d %s\n", err->status, err->msg);
      diffcopy_receiver_fail (r, err->msg);
      ps_error_free (err);
      return false;
    }
  if (err != NULL)
    die ("an error set on success", err->msg);
  return true;
}

/* Run one transfer from the input; returns when it ended. */
static void
one_transfer (struct in *in)
{
  struct transfer *t = calloc (1, sizeof *t);
  t->listing_known = true;
  uint8_t setup = u8 (in);
  const char *const *excl = (setup & 3) == 1 ? excl_logs : (setup & 3) == 2 ? excl_dir : excl_none;
  size_t n_excl = 0;
  while (excl[n_excl])
    n_excl++;
  struct diffcopy_opts o = {
    .dir_name = "context",
    .exclude_patterns = excl,
    .n_exclude = n_excl,
    .max_bytes = setup & 4 ? 300 : 0,
  };
  ps_error *err = NULL;
  diffcopy_receiver *r = diffcopy_receiver_new ("fuzz", dest, &o, on_send, t, &err);
  if (r == NULL)
    die ("cannot create the receiver", err ? err->msg : NULL);
  bool over = false, ok = false;
  while (!over && in->n > 0)
    {
      Fsutil__Types__Packet p = FSUTIL__TYPES__PACKET__INIT;
      Fsutil__Types__Stat st = FSUTIL__TYPES__STAT__INIT;
      Fsutil__Types__Stat__XattrsEntry x = FSUTIL__TYPES__STAT__XATTRS_ENTRY__INIT, *xp = NULL;
      uint8_t xval[8];
      char path[256];
      uint8_t op = u8 (in) % 12;
      switch (op)
        {
        case 0:
        case 1:
        case 2: /* an entry of the listing */
          build_stat (in, &st, path, sizeof path, &x, &xp, xval);
          sanitize (&st);
          p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_STAT;
          p.stat = &st;
          add_listed (t, st.path);
          over = !feed (r, t, &p);
          break;
        case 3: /* end of listing */
          p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_STAT;
          over = !feed (r, t, &p);
          break;
        case 4: /* file contents for a requested id */
        case 5: /* ... and its end */
          {
            uint8_t k = u8 (in);
            p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA;
            p.id = t->n_reqs ? t->reqs[k % t->n_reqs] : k;
            size_t len = op == 4 ? u8 (in) : 0;
            p.data.data = (uint8_t *) take (in, &len);
            p.data.len = len;
            over = !feed (r, t, &p);
            break;
          }
        case 6: /* DATA for any id */
          {
            p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_DATA;
            p.id = u16 (in);
            size_t len = u8 (in) % 16;
            p.data.data = (uint8_t *) take (in, &len);
            p.data.len = len;
            over = !feed (r, t, &p);
            break;
          }
        case 7:
          p.type = FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_FIN;
          over = !feed (r, t, &p);
          break;
        case 8: /* ERR, REQ or an unknown type */
          {
            uint8_t k = u8 (in);
            p.type = k % 3 == 0 ? FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_ERR
                     : k % 3 == 1 ? FSUTIL__TYPES__PACKET__PACKET_TYPE__PACKET_REQ
                                  : (Fsutil__Types__Packet__PacketType) (5 + k);
            size_t len = u8 (in) % 32;
            p.data.data = (uint8_t *) take (in, &len);
            p.data.len = len;
            over = !feed (r, t, &p);
            break;
          }
        case 9: /* raw bytes: decoded (when they decode) and made safe */
          {
            size_t len = u16 (in) % 512;
            const uint8_t *raw = take (in, &len);
            Fsutil__Types__Packet *rp = fsutil__types__packet__unpack (NULL, len, raw);
            if (rp == NULL)
              {
                ps_error *e = NULL;
                if (diffcopy_receiver_packet (r, raw, len, &e) < 0)
                  {
                    diffcopy_receiver_fail (r, e->msg);
                    ps_error_free (e);
                    over = true;
                  }
                break;
              }
            /* Rewrite a copy: the unpacked message keeps its own strings. */
            Fsutil__Types__Packet copy = *rp;
            Fsutil__Types__Stat scopy;
            if (rp->stat)
              {
                scopy = *rp->stat;
                sanitize (&scopy);
                copy.stat = &scopy;
                if (scopy.path)
                  add_listed (t, scopy.path);
                else
                  t->listing_known = false;
              }
            over = !feed (r, t, &copy);
            fsutil__types__packet__free_unpacked (rp, NULL);
            break;
          }
        case 10: /* the sender ends the call with grpc-status 0 */
          {
            ps_error *e = NULL;
            if (diffcopy_receiver_end (r, &e) < 0)
              {
                diffcopy_receiver_fail (r, e->msg);
                ps_error_free (e);
              }
            else
              {
                if (!t->fin_sent)
                  die ("a transfer succeeded without FIN", NULL);
                ok = true;
              }
            over = true;
            break;
          }
        case 11: /* the next answer cannot be sent */
          t->fail_next_send = true;
          break;
        }
    }
  if (!over)
    diffcopy_receiver_fail (r, "the sender went away");
  if (verbose)
    fprintf (stderr, "transfer %s: %zu REQs, FIN %s, ERR %s\n", ok ? "succeeded" : "failed", t->n_reqs,
             t->fin_sent ? "sent" : "not sent", t->err_sent ? "sent" : "not sent");
  diffcopy_receiver_free (r);
  check_outside ();
  walk ("", t, ok && t->listing_known);
  for (size_t i = 0; i < t->n_listed; i++)
    free (t->listed[i]);
  free (t);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (dest == NULL)
    {
      if (mkdtemp (parent) == NULL)
        abort ();
      if (asprintf (&dest, "%s/dest", parent) < 0 || asprintf (&outside, "%s/outside", parent) < 0
          || asprintf (&canary, "%s/outside/canary", parent) < 0)
        abort ();
      targets[sizeof targets / sizeof targets[0] - 1] = canary;
      mkdir (outside, 0755);
      ps_write_file (canary, "canary", 6, 0644, NULL);
      lstat (canary, &canary_st);
      lstat (outside, &outside_st);
      /* FUZZ_VERBOSE=1: the receiver's debug log and each transfer's end. */
      verbose = getenv ("FUZZ_VERBOSE") != NULL;
      ps_log_set_level (verbose ? PS_LOG_DEBUG : PS_LOG_ERROR);
    }
  ps_rm_rf (dest, NULL);
  struct in in = { data, size };
  /* Up to 4 transfers into the same directory. */
  for (int i = 0; i < 4 && in.n > 0; i++)
    one_transfer (&in);
  return 0;
}
