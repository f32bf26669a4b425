/* llb_exec.c — run a validated LLB graph on buildah, vertex by vertex
 * (see llb_exec.h for what is supported).  File ops live in llb_fileop.c. */
#define _GNU_SOURCE
#include "solver/llb_exec.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "solver/buildah.h"
#include "solver/llb_fileop.h"
#include "solver/llb_remote.h"
#include "solver/rootfs_export.h"

/* Version of the cache key material: bump when what a key covers changes,
   so old records are never taken for new meanings. */
#define LLB_CACHE_KEY_VERSION "podsolve-llb-cache-v1"

/* How long a cancelled `buildah run` gets to remove its own state before
   its process group is killed. */
#define LLB_CANCEL_GRACE_MS 3000

struct vertex_state
{
  char *image;  /* committed output image id, NULL before the vertex ran */
  char key[65]; /* cache key (hex) */
};

struct llb_exec
{
  struct llb_graph *g;
  struct vertex_state *vs;
  ps_strv source_names, source_dirs;
  char *state_dir;
  char *authfile;
  bool no_cache;
  bool network_host;
  solver_job *job; /* while running */
};

void
llb_exec_free (struct llb_exec *x)
{
  if (x == NULL)
    return;
  if (x->vs)
    for (size_t i = 0; i < x->g->n_vertices; i++)
      free (x->vs[i].image);
  free (x->vs);
  llb_graph_free (x->g);
  ps_strv_free (&x->source_names);
  ps_strv_free (&x->source_dirs);
  free (x->state_dir);
  free (x->authfile);
  free (x);
}

/* ---- refusing what this slice cannot run --------------------------------------- */

int
llb_unsupported (ps_error **err, const struct llb_vertex *v, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *what = NULL;
  if (vasprintf (&what, fmt, ap) < 0)
    abort ();
  va_end (ap);
  int r = ps_error_set (err, 501, "op %s (\"%s\"): %s is not supported by podsolve's LLB executor yet", v->digest,
                        v->name, what);
  free (what);
  return r;
}

static const char *
source_attr (const Pb__SourceOp *s, const char *key)
{
  for (size_t i = 0; i < s->n_attrs; i++)
    if (strcmp (s->attrs[i]->key, key) == 0)
      return s->attrs[i]->value;
  return NULL;
}

static const char *
find_local_dir (const struct llb_exec *x, const char *name)
{
  for (size_t i = 0; i < x->source_names.n; i++)
    if (strcmp (x->source_names.v[i], name) == 0)
      return x->source_dirs.v[i];
  return NULL;
}

static int
check_source (struct llb_exec *x, const struct llb_vertex *v, ps_error **err)
{
  const Pb__SourceOp *s = v->op->source;
  const char *id = s->identifier;
  if (ps_str_has_prefix (id, "docker-image://"))
    {
      const char *mode = source_attr (s, "image.resolvemode");
      if (mode && *mode && strcmp (mode, "default") && strcmp (mode, "pull") && strcmp (mode, "local"))
        return ps_error_set (err, 400, "op %s: image.resolvemode \"%s\" (known: default, pull, local)", v->digest,
                             mode);
      return 0;
    }
  if (ps_str_has_prefix (id, "local://"))
    {
      const char *name = id + strlen ("local://");
      if (find_local_dir (x, name) == NULL)
        return ps_error_set (err, 400, "op %s: local source \"%s\" was not sent: add a multipart part named \"%s\" "
                                       "(a tar of the directory)", v->digest, name, name);
      const char *const patterns[] = { "local.includepattern", "local.includepatterns", "local.excludepatterns",
                                       "local.followpaths" };
      for (size_t i = 0; i < ARRAY_SIZE (patterns); i++)
        {
          const char *p = source_attr (s, patterns[i]);
          if (p && *p && strcmp (p, "[]") && strcmp (p, "null"))
            return llb_unsupported (err, v, "local source attr %s", patterns[i]);
        }
      return 0;
    }
  if (llb_remote_handles (id))
    return llb_remote_check (v, err);
  return llb_unsupported (err, v, "source scheme \"%.*s\"", (int) strcspn (id, ":"), id);
}

/* A path goes into a buildah --mount option, where ',' separates fields. */
static bool
mount_path_ok (const char *p)
{
  return strchr (p, ',') == NULL && strchr (p, '=') == NULL;
}

static int
check_exec (struct llb_exec *x, const struct llb_vertex *v, ps_error **err)
{
  const Pb__ExecOp *e = v->op->exec;
  size_t roots = 0;
  if (e->security != PB__SECURITY_MODE__SANDBOX)
    return llb_unsupported (err, v, "exec security mode INSECURE");
  if (e->network == PB__NET_MODE__HOST && !x->network_host)
    return ps_error_set (err, 400, "op %s: exec with network HOST needs the \"network.host\" entitlement",
                         v->digest);
  if (e->n_secretenv)
    return llb_unsupported (err, v, "exec secretenv");
  if (e->n_cdidevices)
    return llb_unsupported (err, v, "exec cdiDevices");
  const Pb__Meta *m = e->meta;
  if (m == NULL || m->n_args == 0)
    return ps_error_set (err, 400, "op %s: exec has no args", v->digest);
  if (m->n_extrahosts)
    return llb_unsupported (err, v, "exec extraHosts");
  if (m->n_ulimit)
    return llb_unsupported (err, v, "exec ulimit");
  if (m->cgroupparent && *m->cgroupparent)
    return llb_unsupported (err, v, "exec cgroupParent");
  for (size_t i = 0; i < e->n_mounts; i++)
    {
      const Pb__Mount *mt = e->mounts[i];
      bool root = strcmp (mt->dest, "/") == 0;
      if (root)
        {
          roots++;
          if (mt->mounttype != PB__MOUNT_TYPE__BIND)
            return llb_unsupported (err, v, "a root mount of type %d", (int) mt->mounttype);
          if (mt->selector && *mt->selector && strcmp (mt->selector, "/"))
            return llb_unsupported (err, v, "a root mount with a selector");
          if (mt->output > 0)
            return llb_unsupported (err, v, "root mount output %lld", (long long) mt->output);
          continue;
        }
      if (!mount_path_ok (mt->dest) || (mt->selector && !mount_path_ok (mt->selector)))
        return llb_unsupported (err, v, "mount path with ',' or '=' (\"%s\")", mt->dest);
      if (mt->output >= 0)
        return llb_unsupported (err, v, "an output of the non-root mount %s", mt->dest);
      switch (mt->mounttype)
        {
        case PB__MOUNT_TYPE__BIND:
          if (mt->input < 0)
            return llb_unsupported (err, v, "a scratch bind mount at %s", mt->dest);
          break;
        case PB__MOUNT_TYPE__CACHE:
          if (mt->cacheopt == NULL || mt->cacheopt->id == NULL || *mt->cacheopt->id == '\0')
            return ps_error_set (err, 400, "op %s: cache mount %s has no cacheOpt.ID", v->digest, mt->dest);
          if (mt->input >= 0)
            return llb_unsupported (err, v, "a cache mount seeded from an input (%s)", mt->dest);
          if (mt->selector && *mt->selector && strcmp (mt->selector, "/"))
            return llb_unsupported (err, v, "a cache mount with a selector (%s)", mt->dest);
          break;
        case PB__MOUNT_TYPE__TMPFS:
          break;
        case PB__MOUNT_TYPE__SECRET:
          return llb_unsupported (err, v, "secret mount %s", mt->dest);
        case PB__MOUNT_TYPE__SSH:
          return llb_unsupported (err, v, "ssh mount %s", mt->dest);
        default:
          return llb_unsupported (err, v, "mount type %d at %s", (int) mt->mounttype, mt->dest);
        }
    }
  if (roots != 1)
    return llb_unsupported (err, v, "an exec with %zu root mounts", roots);
  return 0;
}

static int
check_vertex (struct llb_exec *x, const struct llb_vertex *v, ps_error **err)
{
  if (v->n_outputs > 1)
    return llb_unsupported (err, v, "an op with %zu outputs", v->n_outputs);
  switch (v->op->op_case)
    {
    case PB__OP__OP_SOURCE:
      return check_source (x, v, err);
    case PB__OP__OP_EXEC:
      return check_exec (x, v, err);
    case PB__OP__OP_FILE:
      return llb_fileop_check (v, err);
    case PB__OP__OP_MERGE:
      return llb_unsupported (err, v, "MergeOp");
    case PB__OP__OP_DIFF:
      return llb_unsupported (err, v, "DiffOp");
    case PB__OP__OP_BUILD:
      return llb_unsupported (err, v, "BuildOp");
    case PB__OP__OP_PASSTHROUGH:
      return llb_unsupported (err, v, "PassthroughOp");
    default:
      return llb_unsupported (err, v, "op type %d", (int) v->op->op_case);
    }
}

int
llb_exec_new (struct llb_graph *g, const struct llb_exec_env *env, struct llb_exec **out, ps_error **err)
{
  struct llb_exec *x = xcalloc (1, sizeof *x);
  x->g = g;
  x->state_dir = xstrdup (env->state_dir);
  x->authfile = env->authfile ? xstrdup (env->authfile) : NULL;
  x->no_cache = env->no_cache;
  x->network_host = env->network_host;
  for (size_t i = 0; i < env->n_sources; i++)
    {
      ps_strv_push (&x->source_names, env->sources[i].name);
      ps_strv_push (&x->source_dirs, env->sources[i].dir);
    }
  for (size_t i = 0; i < g->n_vertices; i++)
    if (check_vertex (x, &g->vertices[i], err) < 0)
      {
        llb_exec_free (x);
        return -1;
      }
  if (g->result_index != 0)
    {
      llb_unsupported (err, g->result, "result output index %lld", (long long) g->result_index);
      llb_exec_free (x);
      return -1;
    }
  x->vs = xcalloc (g->n_vertices, sizeof *x->vs);
  *out = x;
  return 0;
}

/* ---- buildah ------------------------------------------------------------------- */

/* Run `buildah ARGS...` (NULL-terminated); *out gets the first stdout line. */
static int
bh (char **out, ps_error **err, const char *first, ...)
{
  ps_strv argv = { 0 };
  buildah_argv_init (&argv);
  va_list ap;
  va_start (ap, first);
  for (const char *a = first; a; a = va_arg (ap, const char *))
    ps_strv_push (&argv, a);
  va_end (ap);
  cleanup_free char *o = NULL, *e = NULL;
  int status = -1;
  int r = ps_run_capture (argv.v, &o, &e, &status, err);
  ps_strv_free (&argv);
  if (r < 0)
    return -1;
  if (status != 0)
    {
      size_t n = e ? strlen (e) : 0;
      while (n > 0 && e[n - 1] == '\n')
        e[--n] = '\0';
      return ps_error_set (err, 500, "buildah %s: exit status %d: %s", first, status, e && *e ? e : "failed");
    }
  if (out)
    *out = xstrndup (o ? o : "", strcspn (o ? o : "", "\n"));
  return 0;
}

void
llb_wc_remove (struct llb_wc *w)
{
  if (w->ctr == NULL)
    return;
  if (w->mnt)
    bh (NULL, NULL, "umount", w->ctr, NULL);
  bh (NULL, NULL, "rm", w->ctr, NULL);
  free (w->ctr);
  free (w->mnt);
  w->ctr = w->mnt = NULL;
}

int
llb_wc_from (const char *image, bool mount, struct llb_wc *w, ps_error **err)
{
  w->ctr = w->mnt = NULL;
  if (bh (&w->ctr, err, "from", "--quiet", "--pull=never", image ? image : "scratch", NULL) < 0)
    return ps_error_wrap (err, "working container from %.12s", image ? image : "scratch");
  if (mount && bh (&w->mnt, err, "mount", w->ctr, NULL) < 0)
    {
      llb_wc_remove (w);
      return -1;
    }
  return 0;
}

int
llb_wc_commit (struct llb_wc *w, char **image, ps_error **err)
{
  if (bh (image, err, "commit", "--quiet", w->ctr, NULL) < 0)
    return ps_error_wrap (err, "commit");
  return 0;
}

static bool
image_exists (const char *id)
{
  cleanup_free char *out = NULL;
  return bh (&out, NULL, "inspect", "--type=image", "--format={{.FromImageID}}", id, NULL) == 0 && out[0];
}

/* ---- events -------------------------------------------------------------------- */

static void
emit_vertex (struct llb_exec *x, const struct llb_vertex *v, int64_t started, int64_t completed, bool cached,
             const char *error)
{
  struct solver_event ev = { .kind = SOLVER_EV_VERTEX };
  ev.vertex = xstrdup (v->digest);
  ev.name = xstrdup (v->name);
  if (v->n_inputs)
    {
      ps_strv in = { 0 };
      for (size_t i = 0; i < v->n_inputs; i++)
        {
          bool seen = false;
          for (size_t j = 0; j < in.n; j++)
            seen |= strcmp (in.v[j], v->inputs[i]->digest) == 0;
          if (!seen)
            ps_strv_push (&in, v->inputs[i]->digest);
        }
      ev.inputs = in.v;
    }
  ev.started_ns = started;
  ev.completed_ns = completed;
  ev.cached = cached;
  ev.error = error ? xstrdup (error) : NULL;
  solver_job_emit (x->job, &ev);
}

/* ---- cache keys and result records ---------------------------------------------- */

static void
hash_str (EVP_MD_CTX *c, const char *s)
{
  EVP_DigestUpdate (c, s, strlen (s) + 1);
}

/* Hash a directory tree in name order: path, type and mode, owner, size,
   mtime, file bytes and link targets: what a copy of it would preserve. */
static int
hash_tree (EVP_MD_CTX *c, const char *dir, const char *rel, ps_error **err)
{
  struct dirent **names = NULL;
  cleanup_free char *path = xasprintf ("%s%s", dir, rel);
  int n = scandir (path, &names, NULL, alphasort);
  if (n < 0)
    return ps_error_set_errno (err, 500, errno, "read %s", path);
  int ret = 0;
  for (int i = 0; i < n; i++)
    {
      const char *name = names[i]->d_name;
      if (ret == 0 && strcmp (name, ".") && strcmp (name, ".."))
        {
          cleanup_free char *r = xasprintf ("%s/%s", rel, name);
          cleanup_free char *full = xasprintf ("%s%s", dir, r);
          struct stat st;
          if (lstat (full, &st) < 0)
            ret = ps_error_set_errno (err, 500, errno, "stat %s", full);
          else
            {
              char meta[160];
              snprintf (meta, sizeof meta, "%o %u %u %lld %lld.%09ld", (unsigned) st.st_mode, (unsigned) st.st_uid,
                        (unsigned) st.st_gid, (long long) st.st_size, (long long) st.st_mtim.tv_sec,
                        st.st_mtim.tv_nsec);
              hash_str (c, r);
              hash_str (c, meta);
              if (S_ISLNK (st.st_mode))
                {
                  char target[4096];
                  ssize_t l = readlink (full, target, sizeof target - 1);
                  target[l < 0 ? 0 : l] = '\0';
                  hash_str (c, target);
                }
              else if (S_ISREG (st.st_mode))
                {
                  cleanup_close int fd = open (full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                  char buf[65536];
                  ssize_t got;
                  if (fd < 0)
                    ret = ps_error_set_errno (err, 500, errno, "open %s", full);
                  while (fd >= 0 && (got = read (fd, buf, sizeof buf)) > 0)
                    EVP_DigestUpdate (c, buf, (size_t) got);
                }
              else if (S_ISDIR (st.st_mode))
                ret = hash_tree (c, dir, r, err);
            }
        }
      free (names[i]);
    }
  free (names);
  return ret;
}

static int
compute_key (struct llb_exec *x, size_t idx, const char *extra, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  EVP_MD_CTX *c = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (c, EVP_sha256 (), NULL);
  hash_str (c, LLB_CACHE_KEY_VERSION);
  hash_str (c, v->digest);
  for (size_t i = 0; i < v->n_inputs; i++)
    {
      char in[96];
      snprintf (in, sizeof in, "%s:%lld", x->vs[v->inputs[i] - x->g->vertices].key, (long long) v->input_index[i]);
      hash_str (c, in);
    }
  if (extra)
    hash_str (c, extra);
  int ret = 0;
  if (v->op->op_case == PB__OP__OP_SOURCE && ps_str_has_prefix (v->op->source->identifier, "local://"))
    ret = hash_tree (c, find_local_dir (x, v->op->source->identifier + strlen ("local://")), "", err);
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_DigestFinal_ex (c, md, &mdlen);
  EVP_MD_CTX_free (c);
  for (int i = 0; i < 32; i++)
    sprintf (x->vs[idx].key + 2 * i, "%02x", md[i]);
  return ret;
}

static char *
record_path (struct llb_exec *x, const char *key)
{
  return xasprintf ("%s/llb-results/%s", x->state_dir, key);
}

/* The image recorded for `key`, when it still exists in storage. */
static char *
record_lookup (struct llb_exec *x, const char *key)
{
  cleanup_free char *path = record_path (x, key);
  char *id = NULL;
  size_t len = 0;
  if (ps_read_file (path, 256, &id, &len, NULL) < 0)
    return NULL;
  id[strcspn (id, "\n")] = '\0';
  if (*id == '\0' || !image_exists (id))
    {
      free (id);
      return NULL;
    }
  return id;
}

static void
record_store (struct llb_exec *x, const char *key, const char *image)
{
  cleanup_free char *dir = xasprintf ("%s/llb-results", x->state_dir);
  cleanup_free char *path = record_path (x, key);
  char rnd[17];
  ps_random_hex (rnd, 8); /* jobs run on threads of one process: the pid is not unique */
  cleanup_free char *tmp = xasprintf ("%s.tmp-%s", path, rnd);
  cleanup_error ps_error *e = NULL;
  if (ps_mkdir_p (dir, 0700, &e) < 0 || ps_write_file (tmp, image, strlen (image), 0600, &e) < 0)
    return; /* a lost record only costs a re-run */
  if (rename (tmp, path) < 0)
    unlink (tmp);
}

/* ---- sources --------------------------------------------------------------------- */

/* docker-image://REF: the image id in storage, pulling it when missing or
   when image.resolvemode=pull.  *pulled says whether anything was fetched. */
static int
resolve_image (struct llb_exec *x, const struct llb_vertex *v, char **id, bool *pulled, ps_error **err)
{
  const char *ref = v->op->source->identifier + strlen ("docker-image://");
  const char *mode = source_attr (v->op->source, "image.resolvemode");
  bool always = mode && strcmp (mode, "pull") == 0;
  *pulled = false;
  if (!always && bh (id, NULL, "inspect", "--type=image", "--format={{.FromImageID}}", ref, NULL) == 0 && **id)
    return 0;
  free (*id);
  *id = NULL;
  cleanup_free char *auth = x->authfile ? xasprintf ("--authfile=%s", x->authfile) : NULL;
  cleanup_free char *pulled_id = NULL;
  int r = auth ? bh (&pulled_id, err, "pull", "--quiet", "--policy=always", auth, ref, NULL)
               : bh (&pulled_id, err, "pull", "--quiet", "--policy=always", ref, NULL);
  if (r < 0)
    return ps_error_wrap (err, "pull %s", ref);
  *pulled = true;
  if (bh (id, err, "inspect", "--type=image", "--format={{.FromImageID}}", ref, NULL) < 0)
    return ps_error_wrap (err, "resolve %s", ref);
  return 0;
}

static int
copy_local (const char *root, void *ud, ps_error **err)
{
  return rootfs_copy_dir ((const char *) ud, root, err);
}

static int
run_local_source (struct llb_exec *x, const struct llb_vertex *v, char **image, ps_error **err)
{
  const char *dir = find_local_dir (x, v->op->source->identifier + strlen ("local://"));
  struct llb_wc w;
  if (llb_wc_from (NULL, true, &w, err) < 0)
    return -1;
  int r = copy_local (w.mnt, (void *) dir, err);
  if (r == 0)
    r = llb_wc_commit (&w, image, err);
  llb_wc_remove (&w);
  return r;
}

/* ---- exec ------------------------------------------------------------------------- */

static void
cancel_child (void *data)
{
  ps_child_terminate ((pid_t) (intptr_t) data, LLB_CANCEL_GRACE_MS);
}

/* Run argv, each chunk of its stdout/stderr a SOLVER_EV_LOG of vertex `v`
   as it arrives.  Returns the exit status. */
static int
run_logged (struct llb_exec *x, const struct llb_vertex *v, ps_strv *argv, int *status, ps_error **err)
{
  struct ps_child child;
  if (ps_child_spawn (argv->v, &child, err) < 0)
    return -1;
  solver_job_set_cancel_hook (x->job, cancel_child, (void *) (intptr_t) child.pid);
  struct pollfd pfd[2] = { { child.out_fd, POLLIN, 0 }, { child.err_fd, POLLIN, 0 } };
  int open_fds = 2;
  char buf[16384];
  while (open_fds > 0)
    {
      if (poll (pfd, 2, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      for (int i = 0; i < 2; i++)
        {
          if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
          ssize_t r = read (pfd[i].fd, buf, sizeof buf);
          if (r < 0 && errno == EINTR)
            continue;
          if (r <= 0)
            {
              close (pfd[i].fd);
              pfd[i].fd = -1;
              open_fds--;
              continue;
            }
          solver_job_emit_log (x->job, v->digest, i + 1, buf, (size_t) r, NULL);
        }
    }
  solver_job_set_cancel_hook (x->job, NULL, NULL);
  *status = ps_child_wait (&child);
  return 0;
}

static const char *
input_image (struct llb_exec *x, const struct llb_vertex *v, int64_t input)
{
  return input < 0 ? NULL : x->vs[v->inputs[input] - x->g->vertices].image;
}

static char *
cache_mount_dir (struct llb_exec *x, const char *id, ps_error **err)
{
  char hex[65];
  ps_sha256_hex (id, strlen (id), hex);
  char *dir = xasprintf ("%s/llb-cache-mounts/%s", x->state_dir, hex);
  if (ps_mkdir_p (dir, 0755, err) < 0)
    {
      free (dir);
      return NULL;
    }
  return dir;
}

static void
set_exit_error (ps_error **err, const Pb__Meta *m, int status)
{
  ps_buf cmd = { 0 };
  for (size_t i = 0; i < m->n_args; i++)
    {
      if (i)
        ps_buf_puts (&cmd, " ");
      ps_buf_puts (&cmd, m->args[i]);
    }
  ps_error_set (err, 500, "process \"%s\" did not complete successfully: exit code: %d", cmd.data, status);
  ps_buf_free (&cmd);
}

static int
run_exec (struct llb_exec *x, const struct llb_vertex *v, char **image, int *exit_code, ps_error **err)
{
  const Pb__ExecOp *e = v->op->exec;
  const Pb__Meta *m = e->meta;
  const Pb__Mount *rootm = NULL;
  for (size_t i = 0; i < e->n_mounts; i++)
    if (strcmp (e->mounts[i]->dest, "/") == 0)
      rootm = e->mounts[i];

  struct llb_wc root = { 0 };
  struct llb_wc *binds = xcalloc (e->n_mounts, sizeof *binds);
  ps_strv argv = { 0 };
  int ret = llb_wc_from (input_image (x, v, rootm->input), false, &root, err);
  if (ret < 0)
    goto out;

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "run");
  buildah_argv_isolation (&argv, NULL);
  for (size_t i = 0; i < m->n_env; i++)
    ps_strv_pushf (&argv, "--env=%s", m->env[i]);
  if (m->proxy_env)
    {
      const char *const names[] = { "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY" };
      const char *vals[] = { m->proxy_env->http_proxy, m->proxy_env->https_proxy, m->proxy_env->ftp_proxy,
                             m->proxy_env->no_proxy, m->proxy_env->all_proxy };
      for (size_t i = 0; i < ARRAY_SIZE (names); i++)
        if (vals[i] && *vals[i])
          {
            ps_strv_pushf (&argv, "--env=%s=%s", names[i], vals[i]);
            cleanup_free char *lower = xstrdup (names[i]);
            for (char *c = lower; *c; c++)
              *c = (char) tolower ((unsigned char) *c);
            ps_strv_pushf (&argv, "--env=%s=%s", lower, vals[i]);
          }
    }
  if (m->cwd && *m->cwd)
    ps_strv_pushf (&argv, "--workingdir=%s", m->cwd);
  if (m->user && *m->user)
    ps_strv_pushf (&argv, "--user=%s", m->user);
  if (m->hostname && *m->hostname)
    ps_strv_pushf (&argv, "--hostname=%s", m->hostname);
  if (e->network == PB__NET_MODE__NONE)
    ps_strv_push (&argv, "--network=none");
  else if (e->network == PB__NET_MODE__HOST)
    ps_strv_push (&argv, "--network=host");

  for (size_t i = 0; i < e->n_mounts && ret == 0; i++)
    {
      const Pb__Mount *mt = e->mounts[i];
      if (mt == rootm)
        continue;
      switch (mt->mounttype)
        {
        case PB__MOUNT_TYPE__BIND:
          {
            /* Another input's filesystem: its own working container; a
               writable bind writes into that container, which is thrown
               away, as BuildKit discards a mount without an output. */
            ret = llb_wc_from (input_image (x, v, mt->input), true, &binds[i], err);
            cleanup_free char *src = NULL;
            if (ret == 0)
              ret = llb_scoped_resolve (binds[i].mnt, mt->selector ? mt->selector : "/", true, &src, err);
            if (ret == 0)
              ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,%s", src, mt->dest,
                             mt->readonly ? "ro" : "rw");
            break;
          }
        case PB__MOUNT_TYPE__CACHE:
          {
            cleanup_free char *dir = cache_mount_dir (x, mt->cacheopt->id, err);
            if (dir == NULL)
              ret = -1;
            else
              ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,%s", dir, mt->dest,
                             mt->readonly ? "ro" : "rw");
            break;
          }
        case PB__MOUNT_TYPE__TMPFS:
          if (mt->tmpfsopt && mt->tmpfsopt->size > 0)
            ps_strv_pushf (&argv, "--mount=type=tmpfs,target=%s,tmpfs-size=%lld", mt->dest,
                           (long long) mt->tmpfsopt->size);
          else
            ps_strv_pushf (&argv, "--mount=type=tmpfs,target=%s", mt->dest);
          break;
        default:
          ret = llb_unsupported (err, v, "mount type %d", (int) mt->mounttype);
        }
    }
  if (ret < 0)
    goto out;
  ps_strv_push (&argv, root.ctr);
  ps_strv_push (&argv, "--");
  for (size_t i = 0; i < m->n_args; i++)
    ps_strv_push (&argv, m->args[i]);

  int status = -1;
  ret = run_logged (x, v, &argv, &status, err);
  if (ret < 0)
    goto out;
  if (solver_job_cancelled (x->job))
    {
      ret = ps_error_set (err, 499, "cancelled");
      goto out;
    }
  bool ok = m->n_validexitcodes == 0 && status == 0;
  for (size_t i = 0; i < m->n_validexitcodes; i++)
    ok |= m->validexitcodes[i] == status;
  if (!ok)
    {
      *exit_code = status;
      set_exit_error (err, m, status);
      ret = -1;
      goto out;
    }
  if (rootm->output >= 0)
    ret = llb_wc_commit (&root, image, err);

out:
  ps_strv_free (&argv);
  for (size_t i = 0; i < e->n_mounts; i++)
    llb_wc_remove (&binds[i]);
  free (binds);
  llb_wc_remove (&root);
  return ret;
}

/* ---- the walk ---------------------------------------------------------------------- */

static int
run_vertex (struct llb_exec *x, size_t idx, int *exit_code, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  struct vertex_state *s = &x->vs[idx];
  int64_t started = ps_now_ns ();

  if (v->op->op_case == PB__OP__OP_SOURCE && ps_str_has_prefix (v->op->source->identifier, "docker-image://"))
    {
      /* Images are resolved every time (a moved tag must re-run what
         depends on it); only a pull is work worth showing as such. */
      bool pulled = false;
      emit_vertex (x, v, started, 0, false, NULL);
      if (resolve_image (x, v, &s->image, &pulled, err) < 0)
        return -1;
      if (compute_key (x, idx, s->image, err) < 0)
        return -1;
      emit_vertex (x, v, started, ps_now_ns (), !pulled, NULL);
      return 0;
    }

  /* http/git: what the source holds now is part of the key (resolving
     may download, so the vertex shows as started). */
  cleanup_llb_remote struct llb_remote *remote = NULL;
  if (v->op->op_case == PB__OP__OP_SOURCE && llb_remote_handles (v->op->source->identifier))
    {
      cleanup_free char *tmp = xasprintf ("%s/llb-tmp", x->state_dir);
      emit_vertex (x, v, started, 0, false, NULL);
      if (ps_mkdir_p (tmp, 0700, err) < 0 || llb_remote_resolve (v, tmp, x->job, &remote, err) < 0)
        return -1;
    }
  if (compute_key (x, idx, remote ? llb_remote_key (remote) : NULL, err) < 0)
    return -1;
  bool ignore = x->no_cache || (v->meta && v->meta->ignore_cache);
  if (!ignore && (s->image = record_lookup (x, s->key)) != NULL)
    {
      int64_t now = ps_now_ns ();
      emit_vertex (x, v, now, now, true, NULL);
      return 0;
    }

  emit_vertex (x, v, started, 0, false, NULL);
  int r;
  switch (v->op->op_case)
    {
    case PB__OP__OP_SOURCE:
      r = remote ? llb_remote_commit (remote, x->job, &s->image, err) : run_local_source (x, v, &s->image, err);
      break;
    case PB__OP__OP_EXEC:
      r = run_exec (x, v, &s->image, exit_code, err);
      break;
    case PB__OP__OP_FILE:
      {
        const char **inputs = xcalloc (v->n_inputs + 1, sizeof *inputs);
        for (size_t i = 0; i < v->n_inputs; i++)
          inputs[i] = input_image (x, v, (int64_t) i);
        r = llb_fileop_run (v, inputs, &s->image, err);
        free (inputs);
        break;
      }
    default:
      r = llb_unsupported (err, v, "op type %d", (int) v->op->op_case);
    }
  if (r < 0)
    return -1;
  if (s->image)
    record_store (x, s->key, s->image);
  emit_vertex (x, v, started, ps_now_ns (), false, NULL);
  return 0;
}

int
llb_exec_run (struct llb_exec *x, solver_job *job, char **image_id, ps_error **err)
{
  x->job = job;
  for (size_t i = 0; i < x->g->n_vertices; i++)
    {
      const struct llb_vertex *v = &x->g->vertices[i];
      int exit_code = 0;
      if (solver_job_cancelled (job))
        {
          ps_error_set (err, 499, "cancelled");
          return -1;
        }
      if (run_vertex (x, i, &exit_code, err) < 0)
        {
          ps_error_wrap (err, "%s", v->name);
          emit_vertex (x, v, 0, ps_now_ns (), false, (*err)->msg);
          struct solver_event ev = { .kind = SOLVER_EV_ERROR };
          ev.error = xstrdup ((*err)->msg);
          ev.vertex = xstrdup (v->digest);
          ev.exit_code = exit_code;
          solver_job_emit (job, &ev);
          return -1;
        }
    }
  const char *img = x->vs[x->g->result - x->g->vertices].image;
  if (img == NULL)
    return ps_error_set (err, 500, "op %s produced no image", x->g->result->digest);
  *image_id = xstrdup (img);
  return 0;
}
