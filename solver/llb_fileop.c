/* llb_fileop.c — LLB FileOps (buildkit-protocols.md §6.4) on a mounted
 * rootfs.  Every client path is resolved with llb_scoped_resolve, so a
 * symlink in the image cannot point an action outside the rootfs; the
 * entry an action creates or replaces is never followed (O_NOFOLLOW,
 * lstat, unlink before create). */
#define _GNU_SOURCE
#include "solver/llb_fileop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* Symlinks followed while resolving one path (Linux's own limit). */
#define LLB_MAX_SYMLINKS 40

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

/* ---- checking ---------------------------------------------------------------------- */

static int
check_owner (const struct llb_vertex *v, const Pb__ChownOpt *o)
{
  (void) v;
  if (o == NULL)
    return 0;
  if ((o->user && o->user->user_case == PB__USER_OPT__USER_BY_NAME)
      || (o->group && o->group->user_case == PB__USER_OPT__USER_BY_NAME))
    return -1;
  return 0;
}

static bool
has_glob (const char *s)
{
  return strpbrk (s, "*?[") != NULL;
}

int
llb_fileop_check (const struct llb_vertex *v, ps_error **err)
{
  const Pb__FileOp *f = v->op->file;
  int64_t n_in = (int64_t) v->n_inputs;
  for (size_t i = 0; i < f->n_actions; i++)
    {
      const Pb__FileAction *a = f->actions[i];
      /* One rootfs per FileOp: the first action starts from an input (or
         scratch), every later one continues the previous action. */
      if (i == 0 ? a->input >= n_in : a->input != n_in + (int64_t) i - 1)
        return llb_unsupported (err, v, "file action %zu starting from input %lld (only a chain of actions on one "
                                        "rootfs is)", i, (long long) a->input);
      if (a->output >= 0 && i + 1 != f->n_actions)
        return llb_unsupported (err, v, "an output of the intermediate file action %zu", i);
      const Pb__ChownOpt *owner = NULL;
      switch (a->action_case)
        {
        case PB__FILE_ACTION__ACTION_COPY:
          {
            const Pb__FileActionCopy *c = a->copy;
            owner = c->owner;
            if (a->secondaryinput < 0 || a->secondaryinput >= n_in)
              return llb_unsupported (err, v, "copy action %zu from secondary input %lld (not an op input)", i,
                                      (long long) a->secondaryinput);
            if (has_glob (c->src))
              return llb_unsupported (err, v, "copy action %zu: wildcard source \"%s\"", i, c->src);
            if (c->n_include_patterns || c->n_exclude_patterns)
              return llb_unsupported (err, v, "copy action %zu: include/exclude patterns", i);
            if (c->attemptunpackdockercompatibility)
              return llb_unsupported (err, v, "copy action %zu: attemptUnpackDockerCompatibility", i);
            if (c->modestr && *c->modestr)
              return llb_unsupported (err, v, "copy action %zu: modeStr", i);
            if (c->n_required_paths)
              return llb_unsupported (err, v, "copy action %zu: required_paths", i);
            break;
          }
        case PB__FILE_ACTION__ACTION_MKFILE:
          owner = a->mkfile->owner;
          break;
        case PB__FILE_ACTION__ACTION_MKDIR:
          owner = a->mkdir->owner;
          break;
        case PB__FILE_ACTION__ACTION_RM:
          if (a->rm->allowwildcard && has_glob (a->rm->path))
            return llb_unsupported (err, v, "rm action %zu: wildcard path \"%s\"", i, a->rm->path);
          break;
        case PB__FILE_ACTION__ACTION_SYMLINK:
          owner = a->symlink->owner;
          break;
        default:
          return llb_unsupported (err, v, "file action type %d", (int) a->action_case);
        }
      if (check_owner (v, owner) < 0)
        return llb_unsupported (err, v, "file action %zu: owner by name", i);
    }
  return 0;
}

/* ---- actions ------------------------------------------------------------------------- */

struct owner
{
  bool set;
  uid_t uid;
  gid_t gid;
};

/* BuildKit: a uid without a gid uses the same number as the gid. */
static struct owner
owner_of (const Pb__ChownOpt *o)
{
  struct owner w = { 0 };
  if (o == NULL || (o->user == NULL && o->group == NULL))
    return w;
  w.set = true;
  if (o->user && o->user->user_case == PB__USER_OPT__USER_BY_ID)
    w.uid = w.gid = o->user->byid;
  if (o->group && o->group->user_case == PB__USER_OPT__USER_BY_ID)
    w.gid = o->group->byid;
  return w;
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
      struct timespec t[2] = { { ts / 1000000000, ts % 1000000000 }, { ts / 1000000000, ts % 1000000000 } };
      if (utimensat (AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW) < 0)
        return ps_error_set_errno (err, 500, errno, "set times of %s", path);
    }
  return 0;
}

/* mkdir -p of host path `p` below `root`: every component must be a
   directory (the path came from llb_scoped_resolve, so existing ones are
   real directories, not links). */
static int
mkdir_parents (const char *root, const char *p, mode_t mode, const struct owner *o, int64_t ts, ps_error **err)
{
  cleanup_free char *copy = xstrdup (p);
  size_t rootlen = strlen (root);
  if (strlen (p) <= rootlen)
    return 0;
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
      else if (mkdir (copy, mode) < 0 || apply_meta (copy, o, (int) mode, ts, err) < 0)
        return err && *err ? -1 : ps_error_set_errno (err, 500, errno, "mkdir %s", copy + rootlen);
      if (slash)
        *slash = '/';
      s = slash ? slash + 1 : NULL;
    }
  return 0;
}

static int
do_mkdir (const char *root, const Pb__FileActionMkDir *a, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (llb_scoped_resolve (root, a->path, false, &p, err) < 0)
    return -1;
  struct owner o = owner_of (a->owner);
  if (a->makeparents)
    return mkdir_parents (root, p, (mode_t) a->mode & 07777, &o, a->timestamp, err);
  if (mkdir (p, 0700) < 0)
    return ps_error_set_errno (err, 400, errno, "mkdir %s", a->path);
  return apply_meta (p, &o, a->mode, a->timestamp, err);
}

static int
do_mkfile (const char *root, const Pb__FileActionMkFile *a, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (llb_scoped_resolve (root, a->path, true, &p, err) < 0)
    return -1;
  cleanup_close int fd = open (p, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0)
    return ps_error_set_errno (err, 400, errno, "mkfile %s", a->path);
  size_t off = 0;
  while (off < a->data.len)
    {
      ssize_t w = write (fd, a->data.data + off, a->data.len - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return ps_error_set_errno (err, 500, errno, "write %s", a->path);
      off += (size_t) w;
    }
  struct owner o = owner_of (a->owner);
  return apply_meta (p, &o, a->mode, a->timestamp, err);
}

static int
do_rm (const char *root, const Pb__FileActionRm *a, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (llb_scoped_resolve (root, a->path, false, &p, err) < 0)
    return -1;
  if (strcmp (p, root) == 0)
    return ps_error_set (err, 400, "rm %s: refusing to remove the root", a->path);
  struct stat st;
  if (lstat (p, &st) < 0)
    {
      if (errno == ENOENT && a->allownotfound)
        return 0;
      return ps_error_set_errno (err, 400, errno, "rm %s", a->path);
    }
  if (S_ISDIR (st.st_mode))
    return ps_rm_rf (p, err);
  if (unlink (p) < 0)
    return ps_error_set_errno (err, 500, errno, "rm %s", a->path);
  return 0;
}

static int
do_symlink (const char *root, const Pb__FileActionSymlink *a, ps_error **err)
{
  cleanup_free char *p = NULL;
  if (llb_scoped_resolve (root, a->newpath, false, &p, err) < 0)
    return -1;
  if (symlink (a->oldpath, p) < 0)
    return ps_error_set_errno (err, 400, errno, "symlink %s", a->newpath);
  struct owner o = owner_of (a->owner);
  return apply_meta (p, &o, -1, a->timestamp, err);
}

struct copy_opts
{
  struct owner owner;
  int mode;     /* -1 = keep */
  int64_t ts;   /* -1 = keep */
};

static int
copy_file_data (const char *src, const char *dst, ps_error **err)
{
  cleanup_close int in = open (src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", src);
  cleanup_close int out = open (dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", dst);
  char buf[65536];
  ssize_t r;
  while ((r = read (in, buf, sizeof buf)) != 0)
    {
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          return ps_error_set_errno (err, 500, errno, "read %s", src);
        }
      for (ssize_t off = 0; off < r;)
        {
          ssize_t w = write (out, buf + off, (size_t) (r - off));
          if (w < 0 && errno == EINTR)
            continue;
          if (w < 0)
            return ps_error_set_errno (err, 500, errno, "write %s", dst);
          off += w;
        }
    }
  return 0;
}

/* Copy the entry `src` (never followed) to `dst`: a directory merges into
   an existing directory, anything else replaces what is there.  Owner,
   mode and times are kept unless the action overrides them. */
static int
copy_entry (const char *src, const char *dst, const struct copy_opts *o, ps_error **err)
{
  struct stat st, dt;
  if (lstat (src, &st) < 0)
    return ps_error_set_errno (err, 500, errno, "stat %s", src);
  bool exists = lstat (dst, &dt) == 0;
  if (S_ISDIR (st.st_mode))
    {
      if (exists && !S_ISDIR (dt.st_mode) && unlink (dst) < 0)
        return ps_error_set_errno (err, 500, errno, "replace %s", dst);
      if ((!exists || !S_ISDIR (dt.st_mode)) && mkdir (dst, 0700) < 0)
        return ps_error_set_errno (err, 500, errno, "mkdir %s", dst);
      DIR *d = opendir (src);
      if (d == NULL)
        return ps_error_set_errno (err, 500, errno, "open %s", src);
      int ret = 0;
      struct dirent *de;
      while (ret == 0 && (de = readdir (d)) != NULL)
        {
          if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
          cleanup_free char *s = xasprintf ("%s/%s", src, de->d_name);
          cleanup_free char *t = xasprintf ("%s/%s", dst, de->d_name);
          ret = copy_entry (s, t, o, err);
        }
      closedir (d);
      if (ret < 0)
        return -1;
    }
  else
    {
      if (exists)
        {
          if (S_ISDIR (dt.st_mode))
            {
              if (ps_rm_rf (dst, err) < 0)
                return -1;
            }
          else if (unlink (dst) < 0)
            return ps_error_set_errno (err, 500, errno, "replace %s", dst);
        }
      if (S_ISREG (st.st_mode))
        {
          if (copy_file_data (src, dst, err) < 0)
            return -1;
        }
      else if (S_ISLNK (st.st_mode))
        {
          char target[PATH_MAX];
          ssize_t l = readlink (src, target, sizeof target - 1);
          if (l < 0)
            return ps_error_set_errno (err, 500, errno, "readlink %s", src);
          target[l] = '\0';
          if (symlink (target, dst) < 0)
            return ps_error_set_errno (err, 500, errno, "symlink %s", dst);
        }
      else if (mknod (dst, st.st_mode, st.st_rdev) < 0)
        return ps_error_set_errno (err, 500, errno, "mknod %s", dst);
    }
  struct owner keep = { true, st.st_uid, st.st_gid };
  if (lchown (dst, o->owner.set ? o->owner.uid : keep.uid, o->owner.set ? o->owner.gid : keep.gid) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", dst);
  if (!S_ISLNK (st.st_mode) && chmod (dst, o->mode >= 0 ? (mode_t) o->mode & 07777 : st.st_mode & 07777) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", dst);
  struct timespec t[2] = { st.st_atim, st.st_mtim };
  if (o->ts != -1)
    t[0] = t[1] = (struct timespec) { o->ts / 1000000000, o->ts % 1000000000 };
  if (utimensat (AT_FDCWD, dst, t, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "set times of %s", dst);
  return 0;
}

static const char *
base_name (const char *path)
{
  size_t n = strlen (path);
  while (n > 0 && path[n - 1] == '/')
    n--;
  const char *b = path + n;
  while (b > path && b[-1] != '/')
    b--;
  return b;
}

/* BuildKit's copy: into an existing directory (or a dest ending in '/')
   the source keeps its name, unless it is a directory copied with
   dirCopyContents; createDestPath makes the missing parents. */
static int
do_copy (const char *root, const char *src_root, const Pb__FileActionCopy *c, ps_error **err)
{
  cleanup_free char *src = NULL, *dest = NULL, *target = NULL;
  if (llb_scoped_resolve (src_root, c->src, c->followsymlink, &src, err) < 0
      || llb_scoped_resolve (root, c->dest, true, &dest, err) < 0)
    return -1;
  struct stat st, dt;
  if (lstat (src, &st) < 0)
    return ps_error_set_errno (err, 400, errno, "copy %s", c->src);
  struct copy_opts o = { owner_of (c->owner), c->mode, c->timestamp };
  size_t dl = strlen (c->dest);
  bool dest_is_dir = (lstat (dest, &dt) == 0 && S_ISDIR (dt.st_mode)) || (dl > 0 && c->dest[dl - 1] == '/');
  cleanup_free char *base = xstrndup (base_name (c->src), strcspn (base_name (c->src), "/"));
  bool contents = S_ISDIR (st.st_mode) && (c->dircopycontents || *base == '\0' || strcmp (base, ".") == 0);
  if (dest_is_dir && !contents)
    {
      if (c->createdestpath && mkdir_parents (root, dest, 0755, &o.owner, -1, err) < 0)
        return -1;
      target = xasprintf ("%s/%s", dest, base);
    }
  else
    {
      target = xstrdup (dest);
      if (c->createdestpath)
        {
          cleanup_free char *parent = xstrdup (target);
          char *slash = strrchr (parent, '/');
          if (slash && (size_t) (slash - parent) > strlen (root))
            {
              *slash = '\0';
              if (mkdir_parents (root, parent, 0755, &o.owner, -1, err) < 0)
                return -1;
            }
        }
    }
  if (strcmp (target, root) == 0)
    {
      /* Contents into "/": merge entry by entry; "/" itself keeps its metadata. */
      DIR *d = opendir (src);
      if (d == NULL)
        return ps_error_set_errno (err, 500, errno, "open %s", src);
      int ret = 0;
      struct dirent *de;
      while (ret == 0 && (de = readdir (d)) != NULL)
        {
          if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
          cleanup_free char *s = xasprintf ("%s/%s", src, de->d_name);
          cleanup_free char *t = xasprintf ("%s/%s", root, de->d_name);
          ret = copy_entry (s, t, &o, err);
        }
      closedir (d);
      return ret;
    }
  return copy_entry (src, target, &o, err);
}

int
llb_fileop_run (const struct llb_vertex *v, const char *const *inputs, char **image, ps_error **err)
{
  const Pb__FileOp *f = v->op->file;
  int64_t first = f->actions[0]->input;
  struct llb_wc root = { 0 };
  struct llb_wc *sec = xcalloc (v->n_inputs + 1, sizeof *sec);
  int ret = llb_wc_from (first >= 0 ? inputs[first] : NULL, true, &root, err);
  for (size_t i = 0; ret == 0 && i < f->n_actions; i++)
    {
      const Pb__FileAction *a = f->actions[i];
      switch (a->action_case)
        {
        case PB__FILE_ACTION__ACTION_MKDIR:
          ret = do_mkdir (root.mnt, a->mkdir, err);
          break;
        case PB__FILE_ACTION__ACTION_MKFILE:
          ret = do_mkfile (root.mnt, a->mkfile, err);
          break;
        case PB__FILE_ACTION__ACTION_RM:
          ret = do_rm (root.mnt, a->rm, err);
          break;
        case PB__FILE_ACTION__ACTION_SYMLINK:
          ret = do_symlink (root.mnt, a->symlink, err);
          break;
        case PB__FILE_ACTION__ACTION_COPY:
          {
            struct llb_wc *s = &sec[a->secondaryinput];
            if (s->ctr == NULL)
              ret = llb_wc_from (inputs[a->secondaryinput], true, s, err);
            if (ret == 0)
              ret = do_copy (root.mnt, s->mnt, a->copy, err);
            break;
          }
        default:
          ret = llb_unsupported (err, v, "file action type %d", (int) a->action_case);
        }
      if (ret < 0)
        ps_error_wrap (err, "file action %zu", i);
    }
  if (ret == 0)
    ret = llb_wc_commit (&root, image, err);
  for (size_t i = 0; i < v->n_inputs; i++)
    llb_wc_remove (&sec[i]);
  free (sec);
  llb_wc_remove (&root);
  return ret;
}
