/* llb_local.c — local source filters (include/exclude/follow paths) and
 * the staged copy of what they select. */
#define _GNU_SOURCE
#include "solver/llb/local.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A JSON list of strings ("" and "null" mean none) appended to `out`. */
static int
parse_list (const char *value, const char *name, const char *digest, ps_strv *out, ps_error **err)
{
  if (value == NULL || *value == '\0')
    return 0;
  cJSON *j = cJSON_Parse (value);
  int ret = 0;
  if (j == NULL || !(cJSON_IsArray (j) || cJSON_IsNull (j)))
    ret = ps_error_set (err, 400, "op %s: %s is not a JSON list of strings", digest, name);
  const cJSON *it;
  if (ret == 0 && cJSON_IsArray (j))
    cJSON_ArrayForEach (it, j)
      {
        if (!cJSON_IsString (it) || *it->valuestring == '\0')
          {
            ret = ps_error_set (err, 400, "op %s: %s holds something other than a non-empty string", digest, name);
            break;
          }
        ps_strv_push (out, it->valuestring);
      }
  cJSON_Delete (j);
  return ret;
}

int
llb_local_filter_parse (const Pb__SourceOp *s, const char *digest, struct llb_local_filter *f, ps_error **err)
{
  memset (f, 0, sizeof *f);
  /* BuildKit's key is the singular one (pb.AttrIncludePatterns), holding
     a JSON list like the others; a bare pattern is taken as one. */
  const char *inc = llb_source_attr (s, "local.includepattern");
  if (inc && *inc && *inc != '[' && strcmp (inc, "null") != 0)
    ps_strv_push (&f->includes, inc);
  else if (parse_list (inc, "local.includepattern", digest, &f->includes, err) < 0)
    goto fail;
  if (parse_list (llb_source_attr (s, "local.includepatterns"), "local.includepatterns", digest, &f->includes, err) < 0
      || parse_list (llb_source_attr (s, "local.excludepatterns"), "local.excludepatterns", digest, &f->excludes, err) < 0
      || parse_list (llb_source_attr (s, "local.followpaths"), "local.followpaths", digest, &f->follow, err) < 0)
    goto fail;
  for (size_t i = 0; i < f->follow.n; i++)
    ps_strv_push (&f->includes, f->follow.v[i]);
  if (f->includes.n
      && (f->include = ps_ignore_from_patterns ((const char *const *) f->includes.v, f->includes.n, err)) == NULL)
    goto fail;
  if (f->excludes.n
      && (f->exclude = ps_ignore_from_patterns ((const char *const *) f->excludes.v, f->excludes.n, err)) == NULL)
    goto fail;
  return 0;
fail:
  ps_error_wrap (err, "op %s: local source filter", digest);
  llb_local_filter_free (f);
  return -1;
}

void
llb_local_filter_free (struct llb_local_filter *f)
{
  ps_strv_free (&f->includes);
  ps_strv_free (&f->excludes);
  ps_strv_free (&f->follow);
  ps_ignore_free (f->include);
  ps_ignore_free (f->exclude);
  f->include = f->exclude = NULL;
}

bool
llb_local_filter_empty (const struct llb_local_filter *f)
{
  return f->include == NULL && f->exclude == NULL;
}

/* ---- staging ----------------------------------------------------------------- */

static int
copy_meta (const char *path, const struct stat *st, ps_error **err)
{
  if (!S_ISLNK (st->st_mode) && chmod (path, st->st_mode & 07777) < 0)
    return ps_error_set_errno (err, 500, errno, "chmod %s", path);
  if (lchown (path, st->st_uid, st->st_gid) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s", path);
  struct timespec ts[2] = { st->st_atim, st->st_mtim };
  if (utimensat (AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
    return ps_error_set_errno (err, 500, errno, "set times of %s", path);
  return 0;
}

static int
copy_file (const char *src, const char *dst, const struct stat *st, ps_error **err)
{
  if (link (src, dst) == 0)
    return 0;
  if (errno != EXDEV && errno != EPERM && errno != EMLINK)
    return ps_error_set_errno (err, 500, errno, "link %s", dst);
  cleanup_close int in = open (src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", src);
  cleanup_close int out = open (dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", dst);
  char buf[65536];
  ssize_t n;
  while ((n = read (in, buf, sizeof buf)) > 0)
    if (ps_write_all (out, buf, (size_t) n) < 0)
      return ps_error_set_errno (err, 500, errno, "write %s", dst);
  if (n < 0)
    return ps_error_set_errno (err, 500, errno, "read %s", src);
  return copy_meta (dst, st, err);
}

struct stage
{
  const struct llb_local_filter *f;
  bool exceptions; /* an exclude '!' pattern may re-include below an excluded dir */
  const char *src;
  const char *dest;
};

/* Stage the directory `rel` ("" = the root).  `selected`: an include
   pattern matched rel or a parent, so everything below is taken (subject
   to the excludes).  *n_out counts the entries created below rel. */
static int
stage_dir (struct stage *s, const char *rel, bool selected, size_t *n_out, ps_error **err)
{
  cleanup_free char *dir = xasprintf ("%s%s%s", s->src, *rel ? "/" : "", rel);
  struct dirent **names = NULL;
  int n = scandir (dir, &names, NULL, alphasort);
  if (n < 0)
    return ps_error_set_errno (err, 500, errno, "read %s", dir);
  int ret = 0;
  for (int i = 0; i < n; i++)
    {
      const char *name = names[i]->d_name;
      if (ret < 0 || strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
        {
          free (names[i]);
          continue;
        }
      cleanup_free char *r = xasprintf ("%s%s%s", rel, *rel ? "/" : "", name);
      cleanup_free char *from = xasprintf ("%s/%s", s->src, r);
      cleanup_free char *to = xasprintf ("%s/%s", s->dest, r);
      free (names[i]);
      struct stat st;
      if (lstat (from, &st) < 0)
        {
          ret = ps_error_set_errno (err, 500, errno, "stat %s", from);
          continue;
        }
      bool excluded = s->f->exclude && ps_ignore_matches (s->f->exclude, r);
      bool sel = selected || s->f->include == NULL || ps_ignore_matches (s->f->include, r);
      if (S_ISDIR (st.st_mode))
        {
          if (excluded && !s->exceptions)
            continue;
          if (mkdir (to, 0700) < 0)
            {
              ret = ps_error_set_errno (err, 500, errno, "mkdir %s", to);
              continue;
            }
          size_t below = 0;
          ret = stage_dir (s, r, sel, &below, err);
          if (ret == 0 && below == 0 && (excluded || !sel))
            rmdir (to); /* only a way to something else, and nothing came of it */
          else if (ret == 0)
            {
              ret = copy_meta (to, &st, err);
              ++*n_out;
            }
          *n_out += below;
          continue;
        }
      if (!sel || excluded)
        continue;
      if (S_ISREG (st.st_mode))
        ret = copy_file (from, to, &st, err);
      else if (S_ISLNK (st.st_mode))
        {
          char target[4096];
          ssize_t l = readlink (from, target, sizeof target - 1);
          if (l < 0)
            ret = ps_error_set_errno (err, 500, errno, "readlink %s", from);
          else
            {
              target[l] = '\0';
              if (symlink (target, to) < 0)
                ret = ps_error_set_errno (err, 500, errno, "symlink %s", to);
              else
                ret = copy_meta (to, &st, err);
            }
        }
      else
        continue; /* sockets, fifos and devices are no part of a build context */
      if (ret == 0)
        ++*n_out;
    }
  free (names);
  return ret;
}

int
llb_local_stage (const char *src, const char *dest, const struct llb_local_filter *f, ps_error **err)
{
  struct stat st;
  if (lstat (src, &st) < 0 || !S_ISDIR (st.st_mode))
    return ps_error_set_errno (err, 500, errno ? errno : ENOTDIR, "local source %s", src);
  if (mkdir (dest, 0700) < 0)
    return ps_error_set_errno (err, 500, errno, "mkdir %s", dest);
  struct stage s = { .f = f, .exceptions = f->exclude && ps_ignore_has_exceptions (f->exclude), .src = src,
                     .dest = dest };
  size_t n = 0;
  if (stage_dir (&s, "", false, &n, err) < 0)
    return -1;
  return copy_meta (dest, &st, err);
}
