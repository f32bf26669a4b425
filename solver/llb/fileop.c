/* llb_fileop.c — LLB FileOps (buildkit-protocols.md §6.4) on mounted
 * rootfs, with BuildKit's semantics (solver/llbsolver/file/backend.go,
 * ops/file.go and tonistiigi/fsutil copy).  Every client path is resolved
 * with llb_scoped_resolve, so a symlink in an image cannot point an action
 * outside its rootfs; the entry an action creates or replaces is never
 * followed (O_NOFOLLOW, lstat, unlink before create).
 *
 * One FileOp is a small graph: each action starts from an op input, an
 * earlier action's result or scratch, may read a second rootfs (copy) and
 * the /etc/passwd and /etc/group of others (owner by name), and any action
 * may be an output.  Each rootfs is a buildah working container; a result
 * used once moves on to the action that uses it, one used more often (or
 * an output) is committed and each user starts from the image. */
#define _GNU_SOURCE
#include "solver/llb/fileop.h"

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

#include "common/archive.h"
#include "solver/buildah.h"
#include "common/dockerignore.h"
#include "solver/llb/fileutil.h"
#include "solver/llb/snapshot.h"
#include "solver/llb/wc.h"

/* Symlinks followed while resolving one path (Linux's own limit). */
#define LLB_MAX_SYMLINKS 40

/* Default mode of the directories a copy creates (fsutil's defaultDirectoryMode). */
#define LLB_COPY_DIR_MODE 0755

int
llb_scoped_resolve (const char *root, const char *path, bool follow_final, char **out, ps_error **err)
{
  ps_buf cur = { 0 };
  ps_buf_puts (&cur, "");
  char *rest = xstrdup (path);
  int links = 0;
  for (;;)
    {
      char *p = rest + strspn (rest, "/");
      size_t n = strcspn (p, "/");
      if (n == 0)
        break;
      cleanup_free char *comp = xstrndup (p, n);
      char *after = p + n;
      bool last = after[strspn (after, "/")] == '\0';
      char *next = xstrdup (after);
      if (strcmp (comp, ".") == 0)
        ;
      else if (strcmp (comp, "..") == 0)
        {
          char *slash = strrchr (cur.data, '/');
          cur.len = slash ? (size_t) (slash - cur.data) : 0;
          cur.data[cur.len] = '\0';
        }
      else
        {
          size_t save = cur.len;
          ps_buf_printf (&cur, "/%s", comp);
          struct stat st;
          cleanup_free char *host = xasprintf ("%s%s", root, cur.data);
          if ((!last || follow_final) && lstat (host, &st) == 0 && S_ISLNK (st.st_mode))
            {
              if (++links > LLB_MAX_SYMLINKS)
                {
                  free (next);
                  free (rest);
                  ps_buf_free (&cur);
                  return ps_error_set (err, 400, "%s: too many levels of symbolic links", path);
                }
              char target[PATH_MAX];
              ssize_t l = readlink (host, target, sizeof target - 1);
              target[l < 0 ? 0 : l] = '\0';
              cur.len = target[0] == '/' ? 0 : save;
              cur.data[cur.len] = '\0';
              char *joined = xasprintf ("%s/%s", target, next);
              free (next);
              next = joined;
            }
        }
      free (rest);
      rest = next;
    }
  free (rest);
  *out = xasprintf ("%s%s", root, cur.data);
  ps_buf_free (&cur);
  return 0;
}

/* ---- paths ------------------------------------------------------------------------- */

/* Go's filepath.Clean of "/" + p: a rooted path without ".", ".." or
   repeated slashes. */
static char *
clean_abs (const char *p)
{
  ps_buf b = { 0 };
  ps_buf_puts (&b, "");
  for (const char *s = p; *s;)
    {
      s += strspn (s, "/");
      size_t n = strcspn (s, "/");
      if (n == 0 || (n == 1 && s[0] == '.'))
        ;
      else if (n == 2 && s[0] == '.' && s[1] == '.')
        {
          char *slash = strrchr (b.data, '/');
          b.len = slash ? (size_t) (slash - b.data) : 0;
          b.data[b.len] = '\0';
        }
      else
        {
          ps_buf_puts (&b, "/");
          ps_buf_append (&b, s, n);
        }
      s += n;
    }
  if (b.len == 0)
    ps_buf_puts (&b, "/");
  return ps_buf_steal (&b);
}

/* BuildKit's cleanPath: clean_abs, keeping a trailing "/" or "/." that
   tells a copy "into this directory" / "the contents of". */
static char *
clean_path (const char *s)
{
  char *c = clean_abs (s);
  size_t n = strlen (s);
  bool root = strcmp (c, "/") == 0;
  if (n >= 2 && strcmp (s + n - 2, "/.") == 0)
    {
      char *r = xasprintf ("%s%s.", c, root ? "" : "/");
      free (c);
      return r;
    }
  if (n >= 1 && s[n - 1] == '/' && !root)
    {
      char *r = xasprintf ("%s/", c);
      free (c);
      return r;
    }
  return c;
}

/* Go's filepath.Base: the last element ("/" for the root, "." for ""). */
static char *
base_name (const char *path)
{
  size_t n = strlen (path);
  while (n > 0 && path[n - 1] == '/')
    n--;
  if (n == 0)
    return xstrdup (*path ? "/" : ".");
  const char *b = path + n;
  while (b > path && b[-1] != '/')
    b--;
  return xstrndup (b, (size_t) (path + n - b));
}

/* The host path of `path` in `root`, its final component followed or not. */
static int
host_path (const char *root, const char *path, bool follow_final, char **out, ps_error **err)
{
  return llb_scoped_resolve (root, path, follow_final, out, err);
}

/* ---- wildcards (fsutil copy.ResolveWildcards) -------------------------------------- */

/* splitWildcards: the elements of `src` (clean, rooted) before the first
   one with a wildcard, and the rest ("" when there is no wildcard). */
static void
split_wildcards (const char *src, char **fixed, char **pattern)
{
  ps_buf a = { 0 }, b = { 0 };
  ps_buf_puts (&a, "");
  ps_buf_puts (&b, "");
  bool found = false;
  cleanup_free char *clean = clean_abs (src);
  for (const char *s = clean; *s;)
    {
      s += strspn (s, "/");
      size_t n = strcspn (s, "/");
      if (n == 0)
        break;
      cleanup_free char *el = xstrndup (s, n);
      if (!found && llb_has_wildcards (el))
        found = true;
      ps_buf *t = found ? &b : &a;
      if (t == &b && b.len)
        ps_buf_puts (t, "/");
      if (t == &a)
        ps_buf_puts (t, "/");
      ps_buf_puts (t, el);
      s += n;
    }
  if (a.len == 0)
    ps_buf_puts (&a, "/");
  *fixed = ps_buf_steal (&a);
  *pattern = ps_buf_steal (&b);
}

/* An upper bound on the elements a path matching `pattern` has: '*' and
   '?' never match '/', but a negated class can. */
static size_t
pattern_depth (const char *pattern)
{
  size_t d = 1;
  for (const char *p = pattern; *p; p++)
    d += *p == '/' || *p == '[';
  return d;
}

static int
cmp_names (const struct dirent **a, const struct dirent **b)
{
  return strcmp ((*a)->d_name, (*b)->d_name);
}

/* filepath.Walk of `dir` in lexical order, without following symlinks:
   entries whose path relative to the walk's start matches `pattern` are
   added (as `prefix` + "/" + rel); a matching directory is not entered. */
static int
walk_matches (const char *dir, const char *rel, const char *pattern, size_t depth, size_t max_depth,
              const char *prefix, ps_strv *out, ps_error **err)
{
  struct dirent **names = NULL;
  int n = scandir (dir, &names, NULL, cmp_names);
  if (n < 0)
    return ps_error_set_errno (err, 500, errno, "read directory %s", *rel ? rel : ".");
  int ret = 0;
  for (int i = 0; i < n; i++)
    {
      const char *name = names[i]->d_name;
      if (ret == 0 && strcmp (name, ".") != 0 && strcmp (name, "..") != 0)
        {
          cleanup_free char *r = *rel ? xasprintf ("%s/%s", rel, name) : xstrdup (name);
          cleanup_free char *h = xasprintf ("%s/%s", dir, name);
          struct stat st;
          bool is_dir = lstat (h, &st) == 0 && S_ISDIR (st.st_mode);
          if (llb_glob_match (pattern, r) == 1)
            ps_strv_pushf (out, "%s/%s", strcmp (prefix, "/") == 0 ? "" : prefix, r);
          else if (is_dir && depth + 1 < max_depth)
            ret = walk_matches (h, r, pattern, depth + 1, max_depth, prefix, out, err);
        }
      free (names[i]);
    }
  free (names);
  return ret;
}

/* The paths (rooted, relative to `root`) that `src` names: itself when it
   has no wildcard, else every match (none is not an error here).  A
   missing directory before the wildcard is a 400 unless `missing_ok`. */
static int
resolve_wildcards (const char *root, const char *src, bool follow, bool missing_ok, ps_strv *out, ps_error **err)
{
  cleanup_free char *fixed = NULL, *pattern = NULL;
  split_wildcards (src, &fixed, &pattern);
  if (*pattern == '\0')
    {
      ps_strv_push (out, fixed);
      return 0;
    }
  if (!llb_glob_valid (pattern))
    return ps_error_set (err, 400, "%s: malformed wildcard pattern \"%s\"", src, pattern);
  cleanup_free char *base = NULL;
  if (host_path (root, fixed, follow, &base, err) < 0)
    return -1;
  struct stat st;
  if (lstat (base, &st) < 0)
    {
      if (errno == ENOENT && missing_ok)
        return 0;
      return ps_error_set_errno (err, errno == ENOENT || errno == ENOTDIR ? 400 : 500, errno, "%s", fixed);
    }
  if (!S_ISDIR (st.st_mode))
    return 0;
  /* matches are named by where they really are (base may have been
     reached through symlinks) */
  const char *where = base + strlen (root);
  return walk_matches (base, "", pattern, 0, pattern_depth (pattern), *where ? where : "/", out, err);
}

/* ---- owners ------------------------------------------------------------------------ */

struct owner
{
  bool set; /* a ChownOpt was given: every entry gets uid:gid */
  uid_t uid;
  gid_t gid;
};

/* /etc/passwd or /etc/group of `root`, read without following a symlink
   out of it, at most LLB_MAX_USER_FILE_BYTES.  1 read, 0 absent. */
static int
read_user_file (const char *root, const char *file, char **text, size_t *len, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (host_path (root, file, true, &p, err) < 0)
    return -1;
  cleanup_close int fd = open (p, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    {
      if (errno == ENOENT || errno == ENOTDIR)
        return 0;
      return ps_error_set_errno (err, 400, errno, "open %s", file);
    }
  if (ps_read_regular_fd (fd, file, LLB_MAX_USER_FILE_BYTES, text, len, err) < 0)
    return -1;
  return 1;
}

/* BuildKit's readUser: a user by id also sets the group to the same
   number, a user by name its passwd group; a group, when given, wins.
   Names are looked up in the rootfs their NamedUserOpt.input names
   (user_root, group_root; `where` describes them for errors).  Unlike
   BuildKit, an unknown name is an error, not root. */
static int
resolve_owner (const Pb__ChownOpt *o, const char *user_root, const char *group_root, const char *user_where,
               const char *group_where, struct owner *out, ps_error **err)
{
  *out = (struct owner) { 0 };
  if (o == NULL)
    return 0;
  out->set = true;
  if (o->user && o->user->user_case == PB__USER_OPT__USER_BY_ID)
    out->uid = out->gid = o->user->byid;
  else if (o->user && o->user->user_case == PB__USER_OPT__USER_BY_NAME)
    {
      const char *name = o->user->byname->name;
      cleanup_free char *text = NULL;
      size_t len = 0;
      uint32_t uid = 0, gid = 0;
      int r = read_user_file (user_root, "/etc/passwd", &text, &len, err);
      if (r < 0)
        return ps_error_wrap (err, "owner user \"%s\" (in %s)", name, user_where);
      if (r == 0)
        return ps_error_set (err, 400, "owner user \"%s\": %s has no /etc/passwd", name, user_where);
      r = llb_passwd_lookup (text, len, name, &uid, &gid);
      if (r == 0)
        return ps_error_set (err, 400, "owner user \"%s\" not found in /etc/passwd of %s", name, user_where);
      if (r < 0)
        return ps_error_set (err, 400, "owner user \"%s\": its /etc/passwd entry in %s has no numeric uid and gid",
                             name, user_where);
      out->uid = uid;
      out->gid = gid;
    }
  if (o->group && o->group->user_case == PB__USER_OPT__USER_BY_ID)
    out->gid = o->group->byid;
  else if (o->group && o->group->user_case == PB__USER_OPT__USER_BY_NAME)
    {
      const char *name = o->group->byname->name;
      cleanup_free char *text = NULL;
      size_t len = 0;
      uint32_t gid = 0;
      int r = read_user_file (group_root, "/etc/group", &text, &len, err);
      if (r < 0)
        return ps_error_wrap (err, "owner group \"%s\" (in %s)", name, group_where);
      if (r == 0)
        return ps_error_set (err, 400, "owner group \"%s\": %s has no /etc/group", name, group_where);
      r = llb_group_lookup (text, len, name, &gid);
      if (r == 0)
        return ps_error_set (err, 400, "owner group \"%s\" not found in /etc/group of %s", name, group_where);
      if (r < 0)
        return ps_error_set (err, 400, "owner group \"%s\": its /etc/group entry in %s has no numeric gid", name,
                             group_where);
      out->gid = gid;
    }
  return 0;
}

/* ---- checking ---------------------------------------------------------------------- */

static int
check_patterns (const struct llb_vertex *v, size_t i, const char *what, char **pats, size_t n, ps_error **err)
{
  if (n == 0)
    return 0;
  cleanup_error ps_error *e = NULL;
  ps_ignore *ig = ps_ignore_from_patterns ((const char *const *) pats, n, &e);
  if (ig == NULL)
    return ps_error_set (err, 400, "op %s (\"%s\"): file action %zu: %s patterns: %s", v->digest, v->name, i, what,
                         e->msg);
  ps_ignore_free (ig);
  return 0;
}

static int
check_wildcard (const struct llb_vertex *v, size_t i, const char *what, const char *path, ps_error **err)
{
  cleanup_free char *fixed = NULL, *pattern = NULL;
  split_wildcards (path, &fixed, &pattern);
  if (*pattern && !llb_glob_valid (pattern))
    return ps_error_set (err, 400, "op %s (\"%s\"): file action %zu: %s \"%s\" is a malformed wildcard pattern",
                         v->digest, v->name, i, what, path);
  return 0;
}

int
llb_fileop_check (const struct llb_vertex *v, ps_error **err)
{
  const Pb__FileOp *f = v->op->file;
  for (size_t i = 0; i < f->n_actions; i++)
    {
      const Pb__FileAction *a = f->actions[i];
      switch (a->action_case)
        {
        case PB__FILE_ACTION__ACTION_COPY:
          {
            const Pb__FileActionCopy *c = a->copy;
            if (c->modestr && *c->modestr)
              {
                struct llb_modeset m;
                if (llb_modeset_parse (c->modestr, &m) < 0)
                  return ps_error_set (err, 400, "op %s (\"%s\"): file action %zu: modeStr \"%s\" is not a chmod "
                                       "mode", v->digest, v->name, i, c->modestr);
                llb_modeset_free (&m);
              }
            if (check_patterns (v, i, "include", c->include_patterns, c->n_include_patterns, err) < 0
                || check_patterns (v, i, "exclude", c->exclude_patterns, c->n_exclude_patterns, err) < 0)
              return -1;
            if (c->allowwildcard && check_wildcard (v, i, "src", c->src, err) < 0)
              return -1;
            break;
          }
        case PB__FILE_ACTION__ACTION_RM:
          if (a->rm->allowwildcard && check_wildcard (v, i, "path", a->rm->path, err) < 0)
            return -1;
          break;
        case PB__FILE_ACTION__ACTION_MKFILE:
        case PB__FILE_ACTION__ACTION_MKDIR:
        case PB__FILE_ACTION__ACTION_SYMLINK:
          break;
        default:
          return llb_unsupported (err, v, "file action type %d", (int) a->action_case);
        }
    }
  return 0;
}

/* ---- mkdir, mkfile, rm, symlink --------------------------------------------------------- */

static struct timespec
to_timespec (int64_t ns)
{
  return (struct timespec) { ns / 1000000000, ns % 1000000000 };
}

static int
apply_meta (const char *path, const struct owner *o, int mode, int64_t ts, ps_error **err)
{
  if (o && o->set && lchown (path, o->uid, o->gid) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", path);
  if (mode >= 0 && chmod (path, (mode_t) mode & 07777) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", path);
  if (ts != -1)
    {
      struct timespec t[2] = { to_timespec (ts), to_timespec (ts) };
      if (utimensat (AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW) < 0)
        return ps_error_set_errno (err, 500, errno, "set times of %s", path);
    }
  return 0;
}

/* fsutil's MkdirAll of host path `p` below `root`: the missing directories
   get `mode`, the owner when one is set, and time `ts` (-1 = now); each
   one made is added to `made` when given.  Components that exist must be
   directories (the path came from llb_scoped_resolve, so they are real
   directories, not links). */
static int
mkdir_all (const char *root, const char *p, mode_t mode, const struct owner *o, int64_t ts, ps_strv *made,
           ps_error **err)
{
  size_t rootlen = strlen (root);
  if (strlen (p) <= rootlen)
    return 0;
  cleanup_free char *copy = xstrdup (p);
  for (char *s = copy + rootlen + 1; s && *s;)
    {
      char *slash = strchr (s, '/');
      if (slash)
        *slash = '\0';
      struct stat st;
      if (lstat (copy, &st) == 0)
        {
          if (!S_ISDIR (st.st_mode))
            return ps_error_set (err, 400, "mkdir %s: %s is not a directory", p + rootlen, copy + rootlen);
        }
      else if (mkdir (copy, 0700) < 0)
        return ps_error_set_errno (err, 500, errno, "mkdir %s", copy + rootlen);
      else
        {
          if (apply_meta (copy, o, (int) mode, ts, err) < 0)
            return -1;
          if (made)
            ps_strv_push (made, copy);
        }
      if (slash)
        *slash = '/';
      s = slash ? slash + 1 : NULL;
    }
  return 0;
}

/* An existing path (even a file) is fine without makeParents, as BuildKit. */
static int
do_mkdir (const char *root, const Pb__FileActionMkDir *a, const struct owner *o, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (host_path (root, a->path, false, &p, err) < 0)
    return -1;
  if (a->makeparents)
    return mkdir_all (root, p, (mode_t) a->mode & 07777, o, a->timestamp, NULL, err);
  if (mkdir (p, 0700) < 0)
    {
      if (errno == EEXIST)
        return 0;
      return ps_error_set_errno (err, 400, errno, "mkdir %s", a->path);
    }
  return apply_meta (p, o, a->mode, a->timestamp, err);
}

static int
do_mkfile (const char *root, const Pb__FileActionMkFile *a, const struct owner *o, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (host_path (root, a->path, true, &p, err) < 0)
    return -1;
  cleanup_close int fd = open (p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return ps_error_set_errno (err, 400, errno, "mkfile %s", a->path);
  if (ps_write_all (fd, a->data.data, a->data.len) < 0)
    return ps_error_set_errno (err, 500, errno, "write %s", a->path);
  return apply_meta (p, o, a->mode, a->timestamp, err);
}

/* rmPath: the parent is resolved, the entry itself never followed. */
static int
rm_path (const char *root, const char *path, bool allow_not_found, ps_error **err)
{
  cleanup_free char *clean = clean_abs (path), *p = NULL;
  if (strcmp (clean, "/") == 0)
    return ps_error_set (err, 400, "rm %s: refusing to remove the root", path);
  if (host_path (root, clean, false, &p, err) < 0)
    return -1;
  struct stat st;
  if (lstat (p, &st) < 0)
    {
      if ((errno == ENOENT || errno == ENOTDIR) && allow_not_found)
        return 0;
      return ps_error_set_errno (err, 400, errno, "rm %s", path);
    }
  if (S_ISDIR (st.st_mode))
    return ps_rm_rf (p, err);
  if (unlink (p) < 0)
    return ps_error_set_errno (err, 500, errno, "rm %s", path);
  return 0;
}

/* With allowWildcard every match goes; no match is no error. */
static int
do_rm (const char *root, const Pb__FileActionRm *a, ps_error **err)
{
  if (!a->allowwildcard)
    return rm_path (root, a->path, a->allownotfound, err);
  cleanup_free char *src = clean_path (a->path);
  cleanup_strv char **m = NULL;
  ps_strv matches = { 0 };
  int r = resolve_wildcards (root, src, false, a->allownotfound, &matches, err);
  m = matches.v;
  for (size_t i = 0; r == 0 && i < matches.n; i++)
    r = rm_path (root, m[i], a->allownotfound, err);
  return r;
}

static int
do_symlink (const char *root, const Pb__FileActionSymlink *a, const struct owner *o, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (host_path (root, a->newpath, false, &p, err) < 0)
    return -1;
  if (symlink (a->oldpath, p) < 0)
    return ps_error_set_errno (err, 400, errno, "symlink %s", a->newpath);
  return apply_meta (p, o, -1, a->timestamp, err);
}

/* ---- copy (fsutil copy.Copy) ----------------------------------------------------------- */

struct parent_dir
{
  char *src, *dst;
  bool copied; /* made in the destination already */
};

struct hard_link
{
  dev_t dev;
  ino_t ino;
  char *target; /* where the first copy of this inode went */
};

/* One copy action's options and state. */
struct copier
{
  struct owner owner;                /* set: every entry's owner; else the source's is kept */
  int mode;                          /* -1 = the source's */
  const struct llb_modeset *modeset; /* modeStr, or NULL; wins over mode */
  int64_t ts;                        /* -1 = the source's times */
  ps_ignore *include, *exclude;      /* NULL = none */
  bool replace;                      /* alwaysReplaceExistingDestPaths */
  struct parent_dir *parents;        /* directories being walked, outermost first */
  size_t n_parents;
  struct hard_link *links;
  size_t n_links;
};

/* Directories a copy makes get the action's mode when it has one. */
static mode_t
dir_mode (const struct copier *cp)
{
  return cp->mode >= 0 ? (mode_t) cp->mode & 0777 : LLB_COPY_DIR_MODE;
}

static int
copy_file_data (const char *src, const char *dst, ps_error **err)
{
  cleanup_close int in = open (src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", src);
  cleanup_close int out = open (dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", dst);
  bool first = true;
  for (;;)
    {
      ssize_t r = copy_file_range (in, NULL, out, NULL, 1 << 30, 0);
      if (r > 0)
        {
          first = false;
          continue;
        }
      if (r == 0)
        return 0;
      if (errno == EINTR)
        continue;
      if (!first || (errno != ENOSYS && errno != EXDEV && errno != EPERM && errno != EIO && errno != EOPNOTSUPP
                     && errno != EINVAL))
        return ps_error_set_errno (err, 500, errno, "copy %s", src);
      break;
    }
  char buf[65536];
  for (;;)
    {
      ssize_t r = read (in, buf, sizeof buf);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return ps_error_set_errno (err, 500, errno, "read %s", src);
      if (r == 0)
        return 0;
      if (ps_write_all (out, buf, (size_t) r) < 0)
        return ps_error_set_errno (err, 500, errno, "write %s", dst);
    }
}

/* Extended attributes (file capabilities, ...) as fsutil: failures are
   ignored, as BuildKit's handler only logs them. */
static void
copy_xattrs (const char *src, const char *dst)
{
  ssize_t n = llistxattr (src, NULL, 0);
  if (n <= 0)
    return;
  cleanup_free char *names = xmalloc ((size_t) n);
  n = llistxattr (src, names, (size_t) n);
  for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t) strlen (names + off) + 1)
    {
      const char *name = names + off;
      ssize_t vn = lgetxattr (src, name, NULL, 0);
      if (vn < 0)
        continue;
      cleanup_free char *val = xmalloc ((size_t) vn + 1);
      vn = lgetxattr (src, name, val, (size_t) vn);
      if (vn >= 0)
        lsetxattr (dst, name, val, (size_t) vn, 0);
    }
}

static int
copy_times (const struct copier *cp, const struct stat *st, const char *target, ps_error **err)
{
  struct timespec t[2] = { st->st_atim, st->st_mtim };
  if (cp->ts != -1)
    t[0] = t[1] = to_timespec (cp->ts);
  if (utimensat (AT_FDCWD, target, t, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "set times of %s", target);
  return 0;
}

/* copyFileInfo: owner, mode (modeStr, else mode, else the source's), times. */
static int
copy_file_info (const struct copier *cp, const struct stat *st, const char *src, const char *target, ps_error **err)
{
  if (lchown (target, cp->owner.set ? cp->owner.uid : st->st_uid, cp->owner.set ? cp->owner.gid : st->st_gid) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", target);
  mode_t m = st->st_mode & 07777;
  if (cp->modeset)
    m = llb_modeset_apply (cp->modeset, st->st_mode) & 07777;
  else if (cp->mode >= 0)
    m = (mode_t) cp->mode & 07777;
  if (!S_ISLNK (st->st_mode) && chmod (target, m) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", target);
  if (copy_times (cp, st, target, err) < 0)
    return -1;
  copy_xattrs (src, target);
  return 0;
}

/* copyDirectoryOnly: 1 made, 0 there already, -1 error. */
static int
copy_directory_only (const char *dst, const struct stat *st, bool overwrite_meta, ps_error **err)
{
  struct stat dt;
  if (lstat (dst, &dt) < 0)
    {
      if (errno != ENOENT)
        return ps_error_set_errno (err, 500, errno, "stat %s", dst);
      if (mkdir (dst, 0700) < 0)
        return ps_error_set_errno (err, 500, errno, "mkdir %s", dst);
      return 1;
    }
  if (!S_ISDIR (dt.st_mode))
    return ps_error_set (err, 400, "cannot copy a directory onto the non-directory %s", dst);
  if (overwrite_meta && chmod (dst, st->st_mode & 07777) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", dst);
  return 0;
}

/* Directories skipped by the include patterns are made only once
   something below them is copied (include "a/ * /c" must not make a/b). */
static int
create_parent_dirs (struct copier *cp, bool overwrite_meta, ps_error **err)
{
  for (size_t i = 0; i < cp->n_parents; i++)
    {
      struct parent_dir *pd = &cp->parents[i];
      if (pd->copied)
        continue;
      struct stat st;
      if (lstat (pd->src, &st) < 0)
        return ps_error_set_errno (err, 500, errno, "stat %s", pd->src);
      int made = copy_directory_only (pd->dst, &st, overwrite_meta, err);
      if (made < 0 || (made == 1 && copy_file_info (cp, &st, pd->src, pd->dst, err) < 0))
        return -1;
      pd->copied = true;
    }
  return 0;
}

static int copy_tree (struct copier *cp, const char *src, const char *comps, const char *target, bool overwrite_meta,
                      ps_error **err);

/* copyDirectory: 1 when the directory was made, 0 not, -1 error. */
static int
copy_directory (struct copier *cp, const char *src, const char *comps, const char *dst, const struct stat *st,
                bool overwrite_meta, bool include, bool excluded, ps_error **err)
{
  int made = 0;
  if (include && (made = copy_directory_only (dst, st, overwrite_meta, err)) < 0)
    return -1;
  cp->parents = xrealloc (cp->parents, (cp->n_parents + 1) * sizeof *cp->parents);
  cp->parents[cp->n_parents++] = (struct parent_dir) { xstrdup (src), xstrdup (dst), include };
  int ret = 0;
  if (!excluded || ps_ignore_has_exceptions (cp->exclude))
    {
      struct dirent **names = NULL;
      int n = scandir (src, &names, NULL, cmp_names);
      if (n < 0)
        ret = ps_error_set_errno (err, 500, errno, "read directory %s", src);
      for (int i = 0; i < n; i++)
        {
          const char *name = names[i]->d_name;
          if (ret == 0 && strcmp (name, ".") != 0 && strcmp (name, "..") != 0)
            {
              cleanup_free char *s = xasprintf ("%s/%s", src, name);
              cleanup_free char *c = *comps ? xasprintf ("%s/%s", comps, name) : xstrdup (name);
              cleanup_free char *t = xasprintf ("%s/%s", dst, name);
              ret = copy_tree (cp, s, c, t, true, err);
            }
          free (names[i]);
        }
      free (names);
    }
  struct parent_dir *pd = &cp->parents[--cp->n_parents];
  free (pd->src);
  free (pd->dst);
  return ret < 0 ? -1 : made;
}

/* copier.copy: `src` to `target`; `comps` is src relative to the copy's
   source ("" for the source itself, which the patterns never filter).
   Directories merge into existing directories; anything else replaces a
   non-directory and is refused over a directory, unless `replace`. */
static int
copy_tree (struct copier *cp, const char *src, const char *comps, const char *target, bool overwrite_meta,
           ps_error **err)
{
  bool include = true, excluded = false;
  if (*comps)
    {
      if (cp->include)
        include = ps_ignore_matches (cp->include, comps);
      if (cp->exclude && ps_ignore_matches (cp->exclude, comps))
        include = false, excluded = true;
      if (!include && cp->include == NULL && !ps_ignore_has_exceptions (cp->exclude))
        return 0;
    }
  struct stat st, tt;
  if (lstat (src, &st) < 0)
    return ps_error_set_errno (err, 500, errno, "stat %s", src);
  bool is_dir = S_ISDIR (st.st_mode);
  if (!include && !is_dir)
    return 0;
  bool target_exists = lstat (target, &tt) == 0;
  if (include)
    {
      if (cp->replace && target_exists && !(is_dir && S_ISDIR (tt.st_mode)))
        {
          if (ps_rm_rf (target, err) < 0)
            return -1;
          target_exists = false;
        }
      if (create_parent_dirs (cp, overwrite_meta, err) < 0)
        return -1;
    }
  if (!is_dir && target_exists)
    {
      if (S_ISDIR (tt.st_mode))
        return ps_error_set (err, 400, "cannot replace the directory %s with a file", target);
      if (unlink (target) < 0)
        return ps_error_set_errno (err, 500, errno, "replace %s", target);
    }

  bool copy_info = include, restore_times = false;
  if (is_dir)
    {
      int made = copy_directory (cp, src, comps, target, &st, overwrite_meta, include, excluded, err);
      if (made < 0)
        return -1;
      if (!overwrite_meta)
        {
          copy_info = made == 1;
          restore_times = made == 0;
        }
    }
  else if (S_ISREG (st.st_mode))
    {
      const char *link_to = NULL;
      if (st.st_nlink > 1)
        {
          for (size_t i = 0; i < cp->n_links && !link_to; i++)
            if (cp->links[i].dev == st.st_dev && cp->links[i].ino == st.st_ino)
              link_to = cp->links[i].target;
          if (!link_to)
            {
              cp->links = xrealloc (cp->links, (cp->n_links + 1) * sizeof *cp->links);
              cp->links[cp->n_links++] = (struct hard_link) { st.st_dev, st.st_ino, xstrdup (target) };
            }
        }
      if (link_to)
        {
          if (link (link_to, target) < 0)
            return ps_error_set_errno (err, 500, errno, "hard link %s", target);
        }
      else if (copy_file_data (src, target, err) < 0)
        return -1;
    }
  else if (S_ISLNK (st.st_mode))
    {
      char link_target[PATH_MAX];
      ssize_t l = readlink (src, link_target, sizeof link_target - 1);
      if (l < 0)
        return ps_error_set_errno (err, 500, errno, "readlink %s", src);
      link_target[l] = '\0';
      if (symlink (link_target, target) < 0)
        return ps_error_set_errno (err, 500, errno, "symlink %s", target);
    }
  else
    {
      /* devices and fifos as they are; a socket becomes an empty file */
      mode_t m = S_ISSOCK (st.st_mode) ? (S_IFREG | (st.st_mode & 07777)) : st.st_mode;
      if (mknod (target, m, S_ISCHR (st.st_mode) || S_ISBLK (st.st_mode) ? st.st_rdev : 0) < 0)
        return ps_error_set_errno (err, 500, errno, "mknod %s", target);
    }

  if (copy_info)
    return copy_file_info (cp, &st, src, target, err);
  if (restore_times && target_exists)
    return copy_times (cp, &st, target, err);
  return 0;
}

/* Set the action's time again on the directories a copy made: adding
   entries changed theirs (fixCreatedParentDirs). */
static void
fix_made_dirs (const struct copier *cp, const ps_strv *made)
{
  if (cp->ts == -1)
    return;
  struct timespec t[2] = { to_timespec (cp->ts), to_timespec (cp->ts) };
  for (size_t i = made->n; i-- > 0;)
    utimensat (AT_FDCWD, made->v[i], t, AT_SYMLINK_NOFOLLOW);
}

/* copy.Copy of one source `s` (rooted, relative to src_root) to `dest`
   (clean_path'd) in `root`:
     - the directory part of dest is made (so "dir/" always exists after);
     - a directory source into an existing dest goes to dest/basename(s),
       unless dirCopyContents; a file into an existing directory too;
     - otherwise s becomes dest, its parents made as needed. */
static int
copy_one_into (struct copier *cp, const char *src_root, const char *s, const char *root, const char *dest,
               bool contents, bool follow, ps_strv *made, ps_error **err)
{
  const char *slash = strrchr (dest, '/');
  const char *f = slash ? slash + 1 : dest;
  cleanup_free char *ensure = (*f && strcmp (f, ".") != 0) ? xstrndup (dest, (size_t) (f - dest)) : xstrdup (dest);
  cleanup_free char *ensure_host = NULL, *dclean = clean_abs (dest), *dst = NULL, *srch = NULL;
  if (host_path (root, ensure, true, &ensure_host, err) < 0
      || mkdir_all (root, ensure_host, dir_mode (cp), &cp->owner, cp->ts, made, err) < 0
      || host_path (root, dclean, true, &dst, err) < 0 || host_path (src_root, s, follow, &srch, err) < 0)
    return -1;

  struct stat st, dt;
  if (lstat (srch, &st) < 0)
    return ps_error_set_errno (err, errno == ENOENT || errno == ENOTDIR ? 400 : 500, errno, "copy %s", s);
  bool dest_exists = lstat (dst, &dt) == 0;
  bool is_dir = S_ISDIR (st.st_mode);
  if ((!contents && is_dir && dest_exists) || (!is_dir && dest_exists && S_ISDIR (dt.st_mode)))
    {
      cleanup_free char *base = base_name (s);
      if (strcmp (base, "/") != 0 && strcmp (base, ".") != 0)
        {
          char *d = xasprintf ("%s/%s", dst, base);
          free (dst);
          dst = d;
        }
    }
  cleanup_free char *target_dir = xstrdup (dst);
  if (!(contents && is_dir && !dest_exists))
    {
      char *sl = strrchr (target_dir, '/');
      if (sl)
        *sl = '\0';
    }
  if (mkdir_all (root, target_dir, dir_mode (cp), &cp->owner, cp->ts, made, err) < 0)
    return -1;
  return copy_tree (cp, srch, "", dst, false, err);
}

/* copy.Copy of one source `s` (rooted, relative to src_root) to `dest`
   (clean_path'd) in `root`:
     - the directory part of dest is made (so "dir/" always exists after);
     - a directory source into an existing dest goes to dest/basename(s),
       unless dirCopyContents; a file into an existing directory too;
     - otherwise s becomes dest, its parents made as needed. */
static int
copy_one (struct copier *cp, const char *src_root, const char *s, const char *root, const char *dest, bool contents,
          bool follow, ps_error **err)
{
  ps_strv made = { 0 };
  int ret = copy_one_into (cp, src_root, s, root, dest, contents, follow, &made, err);
  if (ret == 0)
    fix_made_dirs (cp, &made);
  ps_strv_free (&made);
  return ret;
}

/* ---- ADD's archive unpacking (attemptUnpackDockerCompatibility) ------------------------ */

/* Docker's isArchivePath: a regular file whose data, after the
   decompression Docker knows (gzip, bzip2, xz, zstd), starts with a tar
   header.  Anything else (a .gz of text, an empty file) is copied as it is. */
static bool
is_archive (const char *path)
{
  struct stat st;
  if (lstat (path, &st) < 0 || !S_ISREG (st.st_mode))
    return false;
  cleanup_archive struct archive *a = archive_read_new ();
  archive_read_support_format_tar (a);
  archive_read_support_filter_gzip (a);
  archive_read_support_filter_bzip2 (a);
  archive_read_support_filter_xz (a);
  archive_read_support_filter_zstd (a);
  struct archive_entry *e;
  bool yes = archive_read_open_filename (a, path, 16384) == ARCHIVE_OK && archive_read_next_header (a, &e) == ARCHIVE_OK;
  archive_read_close (a);
  return yes;
}

/* BuildKit's unpack: dest (made 0755 with the action's owner) receives the
   archive's entries with their own owners, modes and times; nothing may
   land outside dest (ps_archive_extract_fd refuses such entries). */
static int
unpack_into (const char *root, const char *dest, const char *archive, const char *name, const struct owner *o,
             ps_error **err)
{
  cleanup_free char *dclean = clean_abs (dest), *d = NULL;
  if (host_path (root, dclean, true, &d, err) < 0 || mkdir_all (root, d, 0755, o, -1, NULL, err) < 0)
    return -1;
  cleanup_close int fd = open (archive, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", name);
  cleanup_free char *label = xasprintf ("the archive %s", name);
  struct ps_extract_opts eo = { .label = label, .status = 400, .owner = geteuid () == 0 };
  if (ps_archive_extract_fd (fd, d, &eo, err) < 0)
    return ps_error_wrap (err, "unpack %s into %s", name, dest);
  return 0;
}

/* required_paths: sources the copy must find (COPY of named files), each
   relative to the source root; a wildcard one needs one match. */
static int
check_required (const char *src_root, const Pb__FileActionCopy *c, ps_error **err)
{
  for (size_t i = 0; i < c->n_required_paths; i++)
    {
      cleanup_free char *rp = clean_path (c->required_paths[i]);
      ps_strv m = { 0 };
      int r = resolve_wildcards (src_root, rp, c->followsymlink, true, &m, err);
      bool found = false;
      for (size_t k = 0; r == 0 && k < m.n && !found; k++)
        {
          cleanup_free char *h = NULL;
          struct stat st;
          cleanup_error ps_error *e = NULL;
          found = host_path (src_root, m.v[k], c->followsymlink, &h, &e) == 0 && lstat (h, &st) == 0;
        }
      ps_strv_free (&m);
      if (r < 0)
        return ps_error_wrap (err, "copy: required path \"%s\"", c->required_paths[i]);
      if (!found)
        return ps_error_set (err, 400, "copy: required path \"%s\" not found", c->required_paths[i]);
    }
  return 0;
}

/* BuildKit's docopy: without createDestPath the parent of dest must
   exist; with allowWildcard each match of src is copied in turn
   (none: fine with allowEmptyWildcard, else "not found"). */
static int
do_copy (const char *root, const char *src_root, const Pb__FileActionCopy *c, const struct owner *o, ps_error **err)
{
  cleanup_free char *src = clean_path (c->src), *dest = clean_path (c->dest);
  if (!c->createdestpath)
    {
      cleanup_free char *p = NULL, *dclean = clean_abs (c->dest);
      if (host_path (root, dclean, true, &p, err) < 0)
        return -1;
      char *sl = strrchr (p, '/');
      struct stat st;
      if (sl && (size_t) (sl - p) >= strlen (root))
        {
          *sl = '\0';
          if (lstat (p, &st) < 0)
            return ps_error_set_errno (err, 400, errno, "copy to %s: its parent directory", c->dest);
        }
    }

  if (check_required (src_root, c, err) < 0)
    return -1;
  ps_strv m = { 0 };
  if (!c->allowwildcard)
    ps_strv_push (&m, src);
  else if (resolve_wildcards (src_root, src, c->followsymlink, c->allowemptywildcard, &m, err) < 0)
    {
      ps_strv_free (&m);
      return -1;
    }
  cleanup_strv char **mv = m.v;
  if (m.n == 0)
    {
      if (c->allowemptywildcard)
        return 0;
      return ps_error_set (err, 400, "copy %s: no source matches", c->src);
    }

  struct llb_modeset modeset = { 0 };
  bool has_modeset = c->modestr && *c->modestr;
  if (has_modeset && llb_modeset_parse (c->modestr, &modeset) < 0)
    return ps_error_set (err, 400, "copy: modeStr \"%s\" is not a chmod mode", c->modestr);
  struct copier cp = { .owner = *o, .mode = c->mode, .modeset = has_modeset ? &modeset : NULL, .ts = c->timestamp,
                       .replace = c->alwaysreplaceexistingdestpaths };
  int ret = 0;
  if (c->n_include_patterns
      && (cp.include = ps_ignore_from_patterns ((const char *const *) c->include_patterns, c->n_include_patterns, err))
             == NULL)
    ret = -1;
  if (ret == 0 && c->n_exclude_patterns
      && (cp.exclude = ps_ignore_from_patterns ((const char *const *) c->exclude_patterns, c->n_exclude_patterns, err))
             == NULL)
    ret = -1;
  for (size_t i = 0; ret == 0 && i < m.n; i++)
    {
      if (c->attemptunpackdockercompatibility)
        {
          cleanup_free char *srch = NULL;
          if ((ret = ps_libarchive_load (err)) < 0 || (ret = host_path (src_root, mv[i], c->followsymlink, &srch, err)) < 0)
            break;
          if (is_archive (srch))
            {
              ret = unpack_into (root, dest, srch, mv[i], o, err);
              continue;
            }
        }
      ret = copy_one (&cp, src_root, mv[i], root, dest, c->dircopycontents, c->followsymlink, err);
      for (size_t k = 0; k < cp.n_links; k++)
        free (cp.links[k].target);
      cp.n_links = 0; /* hard links are kept within one source, as fsutil's per-Copy map */
    }
  free (cp.links);
  free (cp.parents);
  ps_ignore_free (cp.include);
  ps_ignore_free (cp.exclude);
  llb_modeset_free (&modeset);
  return ret;
}

/* ---- one action ------------------------------------------------------------------------- */

static const Pb__ChownOpt *
action_owner (const Pb__FileAction *a)
{
  switch (a->action_case)
    {
    case PB__FILE_ACTION__ACTION_COPY:
      return a->copy->owner;
    case PB__FILE_ACTION__ACTION_MKFILE:
      return a->mkfile->owner;
    case PB__FILE_ACTION__ACTION_MKDIR:
      return a->mkdir->owner;
    case PB__FILE_ACTION__ACTION_SYMLINK:
      return a->symlink->owner;
    default:
      return NULL;
    }
}

int
llb_file_action_apply (const Pb__FileAction *a, const char *root, const char *src_root, const char *user_root,
                       const char *group_root, const char *user_where, const char *group_where, ps_error **err)
{
  struct owner o;
  if (resolve_owner (action_owner (a), user_root, group_root, user_where, group_where, &o, err) < 0)
    return -1;
  switch (a->action_case)
    {
    case PB__FILE_ACTION__ACTION_MKDIR:
      return do_mkdir (root, a->mkdir, &o, err);
    case PB__FILE_ACTION__ACTION_MKFILE:
      return do_mkfile (root, a->mkfile, &o, err);
    case PB__FILE_ACTION__ACTION_RM:
      return do_rm (root, a->rm, err);
    case PB__FILE_ACTION__ACTION_SYMLINK:
      return do_symlink (root, a->symlink, &o, err);
    case PB__FILE_ACTION__ACTION_COPY:
      return do_copy (root, src_root, a->copy, &o, err);
    default:
      return ps_error_set (err, 501, "file action type %d", (int) a->action_case);
    }
}

/* ---- the FileOp: rootfs per input and per action result ----------------------------------- */

/* A rootfs of the op: op input i (slot i) or the result of action k
   (slot n_inputs + k). */
struct slot
{
  struct buildah_wc wc;  /* a mounted container holding it, or zeroed */
  char *image;       /* its image: an op input's (borrowed), or committed here (owned) */
  const char *snap;  /* an op input kept as a snapshot, with no image: only read, through `ro` */
  struct llb_snapshot_mount ro;
  bool owned;        /* image was committed by this op */
  bool output;       /* an action result that is an output of the op */
  bool needed;       /* an action an output depends on */
  size_t uses;       /* later actions that start from it or read it */
  size_t base_uses;  /* ... of which start from it */
};

struct fileop_run
{
  const struct llb_vertex *v;
  const Pb__FileOp *f;
  size_t n_in;
  struct slot *slots;  /* [n_in + n_actions] */
  struct buildah_wc empty; /* scratch, for a copy from secondaryInput -1 */
  const char *state_dir;   /* where input snapshots live */
};

static void
image_remove (const char *id)
{
  buildah_callv (NULL, NULL, "rmi", id, NULL);
}

/* A readable mount of slot `idx` (or scratch for -1), made on first use. */
static const char *
slot_root (struct fileop_run *r, int64_t idx, ps_error **err)
{
  struct buildah_wc *w = idx < 0 ? &r->empty : &r->slots[idx].wc;
  if (idx >= 0 && r->slots[idx].image == NULL && r->slots[idx].snap)
    {
      /* read through an overlay of the snapshot's own: no image made */
      struct slot *s = &r->slots[idx];
      if (s->ro.merged == NULL && llb_snapshot_mount_ro (r->state_dir, s->snap, &s->ro, err) < 0)
        return NULL;
      return s->ro.merged;
    }
  if (w->mnt == NULL && llb_wc_from (idx < 0 ? NULL : r->slots[idx].image, true, w, err) < 0)
    return NULL;
  return w->mnt;
}

/* Describes a rootfs for messages. */
static char *
slot_name (const struct fileop_run *r, int64_t idx)
{
  if (idx < 0)
    return xstrdup ("scratch");
  if ((size_t) idx < r->n_in)
    return xasprintf ("input %lld (%s)", (long long) idx, r->v->inputs[idx]->name);
  return xasprintf ("the result of file action %lld", (long long) idx - (long long) r->n_in);
}

/* One fewer use of slot idx; the last one releases its container.  (An
   image committed only to be shared goes at the end of the op: containers
   made from it must be gone first.) */
static void
slot_release (struct fileop_run *r, int64_t idx)
{
  if (idx < 0)
    return;
  struct slot *s = &r->slots[idx];
  if (s->uses > 0 && --s->uses > 0)
    return;
  llb_wc_remove (&s->wc);
  llb_snapshot_unmount_ro (&s->ro);
}

static int64_t
named_input (const Pb__UserOpt *u)
{
  return u && u->user_case == PB__USER_OPT__USER_BY_NAME ? u->byname->input : INT64_MIN;
}

/* The slots action a reads besides its base (secondary, owner's user
   and group), INT64_MIN for none.  A name looked up in the action's own
   base (NamedUserOpt.input -1 or == input) is read from the base before
   the action runs, so it is no further use. */
static void
action_reads (const Pb__FileAction *a, int64_t reads[3])
{
  const Pb__ChownOpt *o = action_owner (a);
  reads[0] = a->action_case == PB__FILE_ACTION__ACTION_COPY ? a->secondaryinput : INT64_MIN;
  reads[1] = o ? named_input (o->user) : INT64_MIN;
  reads[2] = o ? named_input (o->group) : INT64_MIN;
  for (int i = 1; i < 3; i++)
    if (reads[i] == -1 || reads[i] == a->input)
      reads[i] = INT64_MIN;
}

/* Which actions run (BuildKit's solver only runs what an output needs)
   and how often each result is used. */
static void
plan (struct fileop_run *r)
{
  const Pb__FileOp *f = r->f;
  for (size_t k = 0; k < f->n_actions; k++)
    if (f->actions[k]->output >= 0)
      r->slots[r->n_in + k].needed = r->slots[r->n_in + k].output = true;
  for (size_t k = f->n_actions; k-- > 0;)
    {
      if (!r->slots[r->n_in + k].needed)
        continue;
      const Pb__FileAction *a = f->actions[k];
      int64_t reads[3];
      action_reads (a, reads);
      if (a->input >= 0)
        {
          r->slots[a->input].needed = true;
          r->slots[a->input].uses++;
          r->slots[a->input].base_uses++;
        }
      for (int i = 0; i < 3; i++)
        if (reads[i] >= 0)
          {
            r->slots[reads[i]].needed = true;
            r->slots[reads[i]].uses++;
          }
    }
}

/* The working container action k starts from: scratch, a new one from an
   input or a shared result's image, or the container of its last user. */
static int
take_base (struct fileop_run *r, const Pb__FileAction *a, struct buildah_wc *w, ps_error **err)
{
  if (a->input < 0)
    return llb_wc_from (NULL, true, w, err);
  struct slot *s = &r->slots[a->input];
  if (s->image == NULL && s->wc.mnt == NULL)
    return ps_error_set (err, 500, "file action on input %lld: it has no image to start from", (long long) a->input);
  if (s->image && !(s->uses == 1 && s->wc.mnt))
    {
      int ret = llb_wc_from (s->image, true, w, err);
      slot_release (r, a->input);
      return ret;
    }
  /* its last use (an image, when there is one, is already safe): the
     container moves on */
  *w = s->wc;
  s->wc = (struct buildah_wc) { 0 };
  s->uses = 0;
  return 0;
}

static int
run_action (struct fileop_run *r, size_t k, ps_error **err)
{
  const Pb__FileAction *a = r->f->actions[k];
  struct slot *res = &r->slots[r->n_in + k];
  struct buildah_wc w = { 0 };
  if (take_base (r, a, &w, err) < 0)
    return -1;

  int64_t reads[3];
  action_reads (a, reads);
  const Pb__ChownOpt *o = action_owner (a);
  int64_t uidx = o ? named_input (o->user) : INT64_MIN, gidx = o ? named_input (o->group) : INT64_MIN;
  const char *src_root = NULL, *user_root = w.mnt, *group_root = w.mnt;
  cleanup_free char *user_where = slot_name (r, uidx == -1 ? a->input : uidx);
  cleanup_free char *group_where = slot_name (r, gidx == -1 ? a->input : gidx);
  int ret = 0;
  if (reads[0] != INT64_MIN && (src_root = slot_root (r, reads[0], err)) == NULL)
    ret = -1;
  if (ret == 0 && reads[1] != INT64_MIN && (user_root = slot_root (r, reads[1], err)) == NULL)
    ret = -1;
  if (ret == 0 && reads[2] != INT64_MIN && (group_root = slot_root (r, reads[2], err)) == NULL)
    ret = -1;
  if (ret == 0)
    ret = llb_file_action_apply (a, w.mnt, src_root, user_root, group_root, user_where, group_where, err);
  for (int i = 0; i < 3; i++)
    if (reads[i] != INT64_MIN)
      slot_release (r, reads[i]);

  /* Shared (or an output): commit, and keep the container only to be read. */
  if (ret == 0 && (res->output || (res->base_uses > 0 && res->uses > 1)))
    {
      ret = llb_wc_commit (&w, &res->image, err);
      res->owned = ret == 0;
    }
  if (ret == 0 && res->uses > 0)
    res->wc = w;
  else
    llb_wc_remove (&w);
  return ret;
}

int
llb_fileop_run (const struct llb_vertex *v, const char *const *inputs, const char *const *snaps, const char *state_dir,
                char **images, ps_error **err)
{
  struct fileop_run r = { .v = v, .f = v->op->file, .n_in = v->n_inputs, .state_dir = state_dir };
  size_t n_slots = r.n_in + r.f->n_actions;
  r.slots = xcalloc (n_slots, sizeof *r.slots);
  for (size_t i = 0; i < r.n_in; i++)
    {
      r.slots[i].image = (char *) inputs[i];
      r.slots[i].snap = snaps ? snaps[i] : NULL;
    }
  plan (&r);

  int ret = 0;
  for (size_t k = 0; ret == 0 && k < r.f->n_actions; k++)
    if (r.slots[r.n_in + k].needed && run_action (&r, k, err) < 0)
      ret = ps_error_wrap (err, "op %s: file action %zu", v->digest, k);

  for (size_t k = 0; ret == 0 && k < r.f->n_actions; k++)
    if (r.f->actions[k]->output >= 0)
      images[r.f->actions[k]->output] = xstrdup (r.slots[r.n_in + k].image);
  for (size_t i = 0; i < n_slots; i++)
    {
      llb_wc_remove (&r.slots[i].wc);
      llb_snapshot_unmount_ro (&r.slots[i].ro);
    }
  llb_wc_remove (&r.empty);
  for (size_t i = 0; i < n_slots; i++)
    {
      struct slot *s = &r.slots[i];
      if (s->owned)
        {
          if (ret < 0 || !s->output)
            image_remove (s->image);
          free (s->image);
        }
    }
  free (r.slots);
  return ret;
}
