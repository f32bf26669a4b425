/* llb_exec.c — run a validated LLB graph on buildah, vertex by vertex
 * (see llb_exec.h for what is supported).  File ops live in llb_fileop.c. */
#define _GNU_SOURCE
#include "solver/llb/exec.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include "common/log.h"
#include "common/process.h"
#include "session/secrets.h"
#include "session/sshforward.h"
#include "session/session.h"
#include "session/session_limits.h"
#include "solver/buildah.h"
#include "solver/cache_prune.h"
#include "solver/image_config.h"
#include "solver/llb/fileop.h"
#include "solver/llb/wc.h"
#include "solver/llb/local.h"
#include "solver/llb/remote.h"
#include "solver/llb/merge.h"
#include "solver/llb/runc_exec.h"
#include "solver/llb/snapshot.h"
#include "solver/rootfs_export.h"
#include "solver/runc_state.h"
#include "solver/session_io.h"

/* Version of the cache key material: bump when what a key covers changes,
   so old records are never taken for new meanings. */
#define LLB_CACHE_KEY_VERSION "podsolve-llb-cache-v4"

/* How long a cancelled `buildah run` gets to remove its own state before
   its process group is killed. */
#define LLB_CANCEL_GRACE_MS 3000

/* Stack of each vertex worker thread: glibc's default for a thread (8 MiB,
   virtual; only what a deep tree walk touches is ever backed). */
#define LLB_WORKER_STACK (8 * 1024 * 1024)

enum vertex_phase
{
  V_WAITING, /* inputs not done yet */
  V_READY,   /* queued for a worker */
  V_RUNNING,
  V_DONE,
  V_FAILED,
};

struct vertex_state
{
  char **images;        /* [n_outputs] committed output image ids, set when done */
  char **snaps;         /* [n_outputs] an exec's output kept as a snapshot (snapshot.h), its image
                           made (into images[]) only when something needs one */
  pthread_mutex_t made; /* making images[] from snaps[] */
  char key[65];         /* cache key (hex) */
  enum vertex_phase phase;
  size_t waiting;       /* distinct inputs not done yet */
  size_t *users;        /* distinct vertices that take this one as an input */
  size_t n_users;
  struct llb_local_filter filter; /* local sources */
  char *local_dir;      /* local sources: the directory the source names (staged copy) */
};

struct llb_exec
{
  struct llb_graph *g;
  struct vertex_state *vs;
  ps_strv source_names, source_dirs;
  char *state_dir;
  char *work_dir;
  char *authfile;
  char *session_id;
  bool no_cache;
  bool network_host;
  bool insecure; /* the security.insecure entitlement was granted */
  unsigned max_parallel;
  solver_job *job; /* while running */

  /* The scheduler: everything below under `lock`. */
  pthread_mutex_t lock;
  pthread_cond_t changed;
  size_t *ready; /* FIFO of vertex indexes, ready_head..ready_tail */
  size_t ready_head, ready_tail;
  size_t running;
  bool stop;           /* a vertex failed or the job was cancelled: start nothing more */
  ps_error *first_err; /* the failure that stopped the run */
  size_t failed;       /* ... and its vertex */
  int exit_code;       /* ... and the process's exit code, if any */
  pid_t *pids;         /* buildah children running now */
  size_t n_pids, cap_pids;
  pthread_mutex_t session_lock; /* one session call at a time */
};

void
llb_exec_free (struct llb_exec *x)
{
  if (x == NULL)
    return;
  if (x->vs)
    for (size_t i = 0; i < x->g->n_vertices; i++)
      {
        struct vertex_state *s = &x->vs[i];
        for (size_t o = 0; s->images && o < x->g->vertices[i].n_outputs; o++)
          {
            free (s->images[o]);
            free (s->snaps[o]);
          }
        free (s->images);
        free (s->snaps);
        if (s->images)
          pthread_mutex_destroy (&s->made);
        free (s->users);
        llb_local_filter_free (&s->filter);
        free (s->local_dir);
      }
  free (x->vs);
  llb_graph_free (x->g);
  ps_strv_free (&x->source_names);
  ps_strv_free (&x->source_dirs);
  free (x->state_dir);
  free (x->work_dir);
  free (x->authfile);
  free (x->session_id);
  free (x->ready);
  free (x->pids);
  ps_error_free (x->first_err);
  pthread_mutex_destroy (&x->lock);
  pthread_cond_destroy (&x->changed);
  pthread_mutex_destroy (&x->session_lock);
  free (x);
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
check_source (struct llb_exec *x, size_t idx, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  const Pb__SourceOp *s = v->op->source;
  const char *id = s->identifier;
  if (ps_str_has_prefix (id, "docker-image://"))
    {
      const char *mode = llb_source_attr (s, "image.resolvemode");
      if (mode && *mode && strcmp (mode, "default") && strcmp (mode, "pull") && strcmp (mode, "local"))
        return ps_error_set (err, 400, "op %s: image.resolvemode \"%s\" (known: default, pull, local)", v->digest,
                             mode);
      return 0;
    }
  if (ps_str_has_prefix (id, "local://"))
    {
      const char *name = id + strlen ("local://");
      if (find_local_dir (x, name) == NULL && x->session_id == NULL)
        return ps_error_set (err, 400, "op %s: local source \"%s\" was not sent: add a multipart part named \"%s\" "
                                       "(a tar of the directory), or name a \"session\" that exposes it",
                             v->digest, name, name);
      return llb_local_filter_parse (s, v->digest, &x->vs[idx].filter, err);
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

/* A value for a buildah option: not empty, printable, no separators. */
static bool
opt_value_ok (const char *s)
{
  if (s == NULL || *s == '\0')
    return false;
  for (; *s; s++)
    if ((unsigned char) *s <= ' ' || *s == ',' || *s == 0x7f)
      return false;
  return true;
}

/* An ssh mount's agent id: SSHOpt.ID, "default" when empty. */
static const char *
ssh_opt_id (const Pb__SSHOpt *o)
{
  return o && o->id && *o->id ? o->id : SESSION_SSH_DEFAULT_ID;
}

/* Secret environment variables (ExecOp.secretenv: RUN --mount=type=secret,
   env=NAME) never go on a command line, where any user of the machine
   could read them: each secret is a read-only file on tmpfs mounted in the
   container, and the exec starts as server/podsolve-env-exec, which sets
   the variables from the files and execs the real args.  The files are
   0444 — the exec's user, whoever it is, must read them; they exist for
   the step only. */
#ifndef PODSOLVE_PKGLIBEXECDIR /* set by Makefile.am; builds of their own (fuzzing) may leave it out */
#define PODSOLVE_PKGLIBEXECDIR "/usr/local/libexec/podsolve"
#endif
#define ENV_EXEC_TARGET "/.podsolve-env-exec"
#define SECRET_ENV_DIR "/.podsolve-secret-env"

static pthread_once_t env_exec_once = PTHREAD_ONCE_INIT;
static char *env_exec;

/* Beside the running podsolved (a build tree), else where `make install`
   puts it. */
static void
env_exec_find (void)
{
  char self[4096];
  ssize_t n = readlink ("/proc/self/exe", self, sizeof self - 1);
  char *slash = n > 0 ? (self[n] = '\0', strrchr (self, '/')) : NULL;
  if (slash)
    {
      *slash = '\0';
      char *p = xasprintf ("%s/podsolve-env-exec", self);
      if (access (p, X_OK) == 0)
        {
          env_exec = p;
          return;
        }
      free (p);
    }
  if (access (PODSOLVE_PKGLIBEXECDIR "/podsolve-env-exec", X_OK) == 0)
    env_exec = xstrdup (PODSOLVE_PKGLIBEXECDIR "/podsolve-env-exec");
}

static const char *
env_exec_path (void)
{
  pthread_once (&env_exec_once, env_exec_find);
  return env_exec;
}

static int
check_exec (struct llb_exec *x, const struct llb_vertex *v, ps_error **err)
{
  const Pb__ExecOp *e = v->op->exec;
  size_t roots = 0;
  if (e->security == PB__SECURITY_MODE__INSECURE && !x->insecure)
    return ps_error_set (err, 400, "op %s: exec with security INSECURE needs the \"security.insecure\" entitlement",
                         v->digest);
  if (e->network == PB__NET_MODE__HOST && !x->network_host)
    return ps_error_set (err, 400, "op %s: exec with network HOST needs the \"network.host\" entitlement",
                         v->digest);
  for (size_t i = 0; i < e->n_secretenv; i++)
    {
      const Pb__SecretEnv *se = e->secretenv[i];
      if (se->id == NULL || *se->id == '\0' || se->name == NULL || *se->name == '\0' || strchr (se->name, '='))
        return ps_error_set (err, 400, "op %s: secretenv %zu needs an ID and a NAME without '='", v->digest, i);
      if (x->session_id == NULL && !se->optional)
        return ps_error_set (err, 400, "op %s: secret \"%s\" (as $%s) needs a \"session\" that provides it",
                             v->digest, se->id, se->name);
    }
  if (e->n_secretenv && env_exec_path () == NULL)
    return llb_unsupported (err, v, "exec secretenv (podsolve-env-exec is not installed)");
  if (e->n_cdidevices)
    return llb_unsupported (err, v, "exec cdiDevices");
  const Pb__Meta *m = e->meta;
  if (m == NULL || m->n_args == 0)
    return ps_error_set (err, 400, "op %s: exec has no args", v->digest);
  for (size_t i = 0; i < m->n_extrahosts; i++)
    if (!opt_value_ok (m->extrahosts[i]->host) || !opt_value_ok (m->extrahosts[i]->ip)
        || strchr (m->extrahosts[i]->host, ':'))
      return ps_error_set (err, 400, "op %s: extraHosts entry %zu is not a host name and an address", v->digest, i);
  for (size_t i = 0; i < m->n_ulimit; i++)
    if (!opt_value_ok (m->ulimit[i]->name) || strchr (m->ulimit[i]->name, '=') || m->ulimit[i]->soft < -1
        || m->ulimit[i]->hard < -1)
      return ps_error_set (err, 400, "op %s: ulimit entry %zu is malformed", v->digest, i);
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
          continue;
        }
      if (!mount_path_ok (mt->dest) || (mt->selector && !mount_path_ok (mt->selector)))
        return llb_unsupported (err, v, "mount path with ',' or '=' (\"%s\")", mt->dest);
      if (mt->output >= 0 && (mt->mounttype != PB__MOUNT_TYPE__BIND || mt->readonly))
        return ps_error_set (err, 400, "op %s: mount %s has output %lld but only a writable bind mount can be an "
                                       "output", v->digest, mt->dest, (long long) mt->output);
      switch (mt->mounttype)
        {
        case PB__MOUNT_TYPE__BIND:
          break;
        case PB__MOUNT_TYPE__CACHE:
          if (mt->cacheopt == NULL || mt->cacheopt->id == NULL || *mt->cacheopt->id == '\0')
            return ps_error_set (err, 400, "op %s: cache mount %s has no cacheOpt.ID", v->digest, mt->dest);
          break;
        case PB__MOUNT_TYPE__TMPFS:
          break;
        case PB__MOUNT_TYPE__SECRET:
          if (mt->secretopt == NULL || mt->secretopt->id == NULL || *mt->secretopt->id == '\0')
            return ps_error_set (err, 400, "op %s: secret mount %s has no secretOpt.ID", v->digest, mt->dest);
          if (x->session_id == NULL && !mt->secretopt->optional)
            return ps_error_set (err, 400, "op %s: secret \"%s\" (mounted at %s) needs a \"session\" that "
                                           "provides it", v->digest, mt->secretopt->id, mt->dest);
          break;
        case PB__MOUNT_TYPE__SSH:
          if (x->session_id == NULL && !(mt->sshopt && mt->sshopt->optional))
            return ps_error_set (err, 400, "op %s: ssh mount %s: no SSH key \"%s\" forwarded from the client "
                                           "(the request names no \"session\")",
                                 v->digest, mt->dest, ssh_opt_id (mt->sshopt));
          break;
        default:
          return llb_unsupported (err, v, "mount type %d at %s", (int) mt->mounttype, mt->dest);
        }
    }
  if (roots != 1)
    return llb_unsupported (err, v, "an exec with %zu root mounts", roots);
  return 0;
}

static int
check_vertex (struct llb_exec *x, size_t idx, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  if (v->n_outputs > 1 && v->op->op_case != PB__OP__OP_EXEC && v->op->op_case != PB__OP__OP_FILE)
    return llb_unsupported (err, v, "a non-exec op with %zu outputs", v->n_outputs);
  switch (v->op->op_case)
    {
    case PB__OP__OP_SOURCE:
      return check_source (x, idx, err);
    case PB__OP__OP_EXEC:
      return check_exec (x, v, err);
    case PB__OP__OP_FILE:
      return llb_fileop_check (v, err);
    case PB__OP__OP_MERGE:
    case PB__OP__OP_DIFF:
      return 0;
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
  x->work_dir = xstrdup (env->work_dir ? env->work_dir : env->state_dir);
  x->authfile = env->authfile ? xstrdup (env->authfile) : NULL;
  x->session_id = env->session_id && *env->session_id ? xstrdup (env->session_id) : NULL;
  x->no_cache = env->no_cache;
  x->network_host = env->network_host;
  x->insecure = env->insecure;
  x->max_parallel = env->max_parallel ? env->max_parallel : PS_LLB_DEFAULT_PARALLEL;
  pthread_mutex_init (&x->lock, NULL);
  pthread_cond_init (&x->changed, NULL);
  pthread_mutex_init (&x->session_lock, NULL);
  for (size_t i = 0; i < env->n_sources; i++)
    {
      ps_strv_push (&x->source_names, env->sources[i].name);
      ps_strv_push (&x->source_dirs, env->sources[i].dir);
    }
  x->vs = xcalloc (g->n_vertices, sizeof *x->vs);
  for (size_t i = 0; i < g->n_vertices; i++)
    if (check_vertex (x, i, err) < 0)
      {
        llb_exec_free (x);
        return -1;
      }
  if (g->result_index < 0 || (size_t) g->result_index >= g->result->n_outputs)
    {
      llb_unsupported (err, g->result, "result output index %lld", (long long) g->result_index);
      llb_exec_free (x);
      return -1;
    }

  /* The edges, both ways, each distinct pair once. */
  for (size_t i = 0; i < g->n_vertices; i++)
    {
      const struct llb_vertex *v = &g->vertices[i];
      x->vs[i].images = xcalloc (v->n_outputs ? v->n_outputs : 1, sizeof (char *));
      x->vs[i].snaps = xcalloc (v->n_outputs ? v->n_outputs : 1, sizeof (char *));
      pthread_mutex_init (&x->vs[i].made, NULL);
      for (size_t k = 0; k < v->n_inputs; k++)
        {
          bool seen = false;
          for (size_t j = 0; j < k && !seen; j++)
            seen = v->inputs[j] == v->inputs[k];
          if (seen)
            continue;
          struct vertex_state *in = &x->vs[v->inputs[k] - g->vertices];
          in->users = xrealloc (in->users, (in->n_users + 1) * sizeof *in->users);
          in->users[in->n_users++] = i;
          x->vs[i].waiting++;
        }
    }
  x->ready = xcalloc (g->n_vertices, sizeof *x->ready);
  *out = x;
  return 0;
}

/* ---- events -------------------------------------------------------------------- */

static void
emit_vertex (struct llb_exec *x, const struct llb_vertex *v, int64_t started, int64_t completed, bool cached,
             const char *error)
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
  solver_job_emit_vertex (x->job, v->digest, v->name, (const char *const *) in.v, started, completed, cached, error,
                          NULL);
  ps_strv_free (&in);
}

/* ---- cache keys and result records ---------------------------------------------- */

static void
hash_str (EVP_MD_CTX *c, const char *s)
{
  EVP_DigestUpdate (c, s, strlen (s) + 1);
}

#define HASH_CHUNK 65536

/* Hash a directory tree in name order: path, type and mode, owner, size,
   file bytes and link targets.  Not times, as BuildKit's contenthash: a
   context sent again (a fresh tar, a new checkout) with the same bytes is
   a cache hit, and what its copies produced keeps the first build's times. */
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
              snprintf (meta, sizeof meta, "%o %u %u %lld", (unsigned) st.st_mode, (unsigned) st.st_uid,
                        (unsigned) st.st_gid, S_ISDIR (st.st_mode) ? 0LL : (long long) st.st_size);
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
                  /* On the heap: this function recurses once per directory
                     level, on a worker thread's stack. */
                  cleanup_close int fd = open (full, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                  cleanup_free char *buf = xmalloc (HASH_CHUNK);
                  ssize_t got;
                  if (fd < 0)
                    ret = ps_error_set_errno (err, 500, errno, "open %s", full);
                  while (fd >= 0 && (got = read (fd, buf, HASH_CHUNK)) > 0)
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

/* Attributes of a local source that name the client's session, not what
   is read: each build's frontend sends a new session id (and dockerui a
   per-client unique id), which would make every later step miss. */
static bool
local_attr_is_session (const char *key)
{
  return strcmp (key, "local.session") == 0 || strcmp (key, "local.unique") == 0
         || strcmp (key, "local.sharedkeyhint") == 0;
}

static int
cmp_attr (const void *a, const void *b)
{
  return strcmp ((*(Pb__SourceOp__AttrsEntry *const *) a)->key, (*(Pb__SourceOp__AttrsEntry *const *) b)->key);
}

/* A local source's part of its key: its name and the attributes that
   choose what is read (patterns, follow paths), in key order; the
   content itself is hashed by hash_tree.  As BuildKit, whose later steps
   key on the content checksum, never on the session. */
static void
hash_local_identity (EVP_MD_CTX *c, const Pb__SourceOp *s)
{
  hash_str (c, s->identifier);
  Pb__SourceOp__AttrsEntry **attrs = xmalloc ((s->n_attrs + 1) * sizeof *attrs);
  memcpy (attrs, s->attrs, s->n_attrs * sizeof *attrs);
  qsort (attrs, s->n_attrs, sizeof *attrs, cmp_attr);
  for (size_t i = 0; i < s->n_attrs; i++)
    if (!local_attr_is_session (attrs[i]->key))
      {
        hash_str (c, attrs[i]->key);
        hash_str (c, attrs[i]->value);
      }
  free (attrs);
}

/* An op with inputs is keyed on its own fields and its inputs' keys (which
   compute_key adds), not on its digest: that names the inputs' digests,
   and a local source's digest changes with every session. */
static void
hash_op_without_input_digests (EVP_MD_CTX *c, const Pb__Op *op)
{
  Pb__Op copy = *op;
  Pb__Input *ins = xcalloc (op->n_inputs, sizeof *ins);
  Pb__Input **ptrs = xcalloc (op->n_inputs, sizeof *ptrs);
  for (size_t i = 0; i < op->n_inputs; i++)
    {
      ins[i] = *op->inputs[i];
      ins[i].digest = (char *) "";
      ptrs[i] = &ins[i];
    }
  copy.inputs = ptrs;
  size_t n = pb__op__get_packed_size (&copy);
  uint8_t *buf = xmalloc (n + 1);
  pb__op__pack (&copy, buf);
  hash_str (c, "op-without-input-digests");
  EVP_DigestUpdate (c, buf, n);
  free (buf);
  free (ptrs);
  free (ins);
}

static int
compute_key (struct llb_exec *x, size_t idx, const char *extra, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  EVP_MD_CTX *c = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (c, EVP_sha256 (), NULL);
  hash_str (c, LLB_CACHE_KEY_VERSION);
  if (x->vs[idx].local_dir && v->op->op_case == PB__OP__OP_SOURCE)
    hash_local_identity (c, v->op->source);
  else if (v->op->n_inputs)
    hash_op_without_input_digests (c, v->op);
  else
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
  if (x->vs[idx].local_dir)
    ret = hash_tree (c, x->vs[idx].local_dir, "", err);
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_DigestFinal_ex (c, md, &mdlen);
  EVP_MD_CTX_free (c);
  for (int i = 0; i < 32; i++)
    sprintf (x->vs[idx].key + 2 * i, "%02x", md[i]);
  return ret;
}

/* Output 0 of a key is recorded as <key>, output N > 0 as <key>.N. */
static char *
record_path (struct llb_exec *x, const char *key, size_t output)
{
  return output ? xasprintf ("%s/llb-results/%s.%zu", x->state_dir, key, output)
                : xasprintf ("%s/llb-results/%s", x->state_dir, key);
}

/* What is recorded for output `output` of `key`, when it still exists: an
   image in storage (*snap NULL), or a whole snapshot chain ("snap <id>":
   *snap the id, the image NULL). */
static char *
record_lookup (struct llb_exec *x, const char *key, size_t output, char **snap)
{
  cleanup_free char *path = record_path (x, key, output);
  char *id = NULL;
  size_t len = 0;
  *snap = NULL;
  if (ps_read_file (path, 256, &id, &len, NULL) < 0)
    return NULL;
  id[strcspn (id, "\n")] = '\0';
  if (ps_str_has_prefix (id, "snap "))
    {
      if (llb_snapshot_valid (x->state_dir, id + 5))
        {
          *snap = xstrdup (id + 5);
          cache_record_touch (path);
        }
      free (id);
      return NULL;
    }
  if (*id == '\0' || !buildah_image_present (id))
    {
      free (id);
      return NULL;
    }
  cache_record_touch (path); /* its last use, for POST /build/prune */
  return id;
}

static void
record_store (struct llb_exec *x, const char *key, size_t output, const char *image)
{
  cleanup_free char *dir = xasprintf ("%s/llb-results", x->state_dir);
  cleanup_free char *path = record_path (x, key, output);
  char rnd[17];
  ps_random_hex (rnd, 8); /* jobs run on threads of one process: the pid is not unique */
  cleanup_free char *tmp = xasprintf ("%s.tmp-%s", path, rnd);
  cleanup_error ps_error *e = NULL;
  if (ps_mkdir_p (dir, 0700, &e) < 0 || ps_write_file (tmp, image, strlen (image), 0600, &e) < 0)
    return; /* a lost record only costs a re-run */
  if (rename (tmp, path) < 0)
    unlink (tmp);
}

/* All outputs of vertex idx from the records (true), or none (false). */
static bool
records_lookup (struct llb_exec *x, size_t idx)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  struct vertex_state *s = &x->vs[idx];
  for (size_t o = 0; o < v->n_outputs; o++)
    if ((s->images[o] = record_lookup (x, s->key, o, &s->snaps[o])) == NULL && s->snaps[o] == NULL)
      {
        for (size_t k = 0; k < o; k++)
          {
            free (s->images[k]);
            s->images[k] = NULL;
            free (s->snaps[k]);
            s->snaps[k] = NULL;
          }
        return false;
      }
  return v->n_outputs > 0;
}

/* ---- sources --------------------------------------------------------------------- */

/* Registry credentials for pulling `ref`: the request's X-Registry-Auth
   file, else the session's Auth for the image's registry written into a
   per-pull file (*tmp, for the caller to remove).  *authfile NULL:
   anonymous. */
static int
pull_authfile (struct llb_exec *x, const char *ref, const char **authfile, char **tmp, ps_error **err)
{
  *tmp = NULL;
  *authfile = x->authfile;
  if (x->authfile || x->session_id == NULL)
    return 0;
  cleanup_free char *host = image_ref_registry_host (ref);
  if (strcmp (host, "localhost") == 0)
    return 0;
  ps_strv hosts = { 0 };
  ps_strv_push (&hosts, host);
  char rnd[17];
  ps_random_hex (rnd, 8);
  char *path = xasprintf ("%s/llb-auth-%s.json", x->work_dir, rnd);
  pthread_mutex_lock (&x->session_lock);
  ps_session *sess = session_wait (x->session_id, PS_SESSION_WAIT_MS, err);
  int r = sess ? session_write_authfile (sess, &hosts, path, err) : -1;
  if (sess)
    session_unref (sess);
  pthread_mutex_unlock (&x->session_lock);
  ps_strv_free (&hosts);
  if (r == 1)
    {
      *authfile = *tmp = path;
      return 0;
    }
  free (path);
  return r < 0 ? ps_error_wrap (err, "credentials for %s from session %s", ref, x->session_id) : 0;
}

/* `buildah from` runs an image's ONBUILD triggers (cmd/buildah/from.go),
   but in LLB they are the frontend's business: BuildKit's Dockerfile
   frontend turns them into ops of the child build.  An image that has
   triggers is used through a copy without them (made once, then found by
   image_config_apply's record); ids known to have none are remembered. */
static pthread_mutex_t onbuild_lock = PTHREAD_MUTEX_INITIALIZER;
static ps_strv onbuild_clean; /* image ids without triggers */

static int
without_onbuild (struct llb_exec *x, char **id, ps_error **err)
{
  bool known = false;
  pthread_mutex_lock (&onbuild_lock);
  for (size_t i = 0; i < onbuild_clean.n && !known; i++)
    known = strcmp (onbuild_clean.v[i], *id) == 0;
  pthread_mutex_unlock (&onbuild_lock);
  if (known)
    return 0;
  cleanup_free char *n = NULL;
  if (buildah_callv (&n, err, "inspect", "--type", "image", "--format", "{{len .Docker.Config.OnBuild}}", *id, NULL)
      < 0)
    return ps_error_wrap (err, "inspect %.12s", *id);
  if (atoi (n) == 0)
    {
      pthread_mutex_lock (&onbuild_lock);
      if (onbuild_clean.n >= 4096)
        ps_strv_free (&onbuild_clean);
      ps_strv_push (&onbuild_clean, *id);
      pthread_mutex_unlock (&onbuild_lock);
      return 0;
    }
  struct image_config *c = NULL;
  if (image_config_parse ("{\"config\":{\"OnBuild\":[]}}", &c, err) < 0)
    return -1;
  char *stripped = NULL;
  bool cached = false;
  int r = image_config_apply (c, *id, x->state_dir, &stripped, &cached, err);
  image_config_free (c);
  if (r < 0)
    return ps_error_wrap (err, "image %.12s without its ONBUILD triggers", *id);
  free (*id);
  *id = stripped;
  return 0;
}

/* docker-image://REF: the image id in storage, pulling it when missing or
   when image.resolvemode=pull.  *pulled says whether anything was fetched. */
static int
resolve_image (struct llb_exec *x, const struct llb_vertex *v, char **id, bool *pulled, ps_error **err)
{
  const char *ref = v->op->source->identifier + strlen ("docker-image://");
  const char *mode = llb_source_attr (v->op->source, "image.resolvemode");
  bool always = mode && strcmp (mode, "pull") == 0;
  *pulled = false;
  if (!always && buildah_image_resolve (ref, id, NULL) == 0 && **id)
    return without_onbuild (x, id, err);
  free (*id);
  *id = NULL;
  if (mode && strcmp (mode, "local") == 0)
    return ps_error_set (err, 404, "image %s is not in storage (image.resolvemode=local never pulls)", ref);
  cleanup_free char *tmp_auth = NULL;
  const char *authfile = NULL;
  if (pull_authfile (x, ref, &authfile, &tmp_auth, err) < 0)
    return -1;
  cleanup_free char *auth = authfile ? xasprintf ("--authfile=%s", authfile) : NULL;
  cleanup_free char *pulled_id = NULL;
  int r = auth ? buildah_callv (&pulled_id, err, "pull", "--quiet", "--policy=always", auth, ref, NULL)
               : buildah_callv (&pulled_id, err, "pull", "--quiet", "--policy=always", ref, NULL);
  if (tmp_auth)
    unlink (tmp_auth);
  if (r < 0)
    return ps_error_wrap (err, "pull %s", ref);
  *pulled = true;
  if (buildah_image_id (ref, id, err) < 0)
    return ps_error_wrap (err, "resolve %s", ref);
  return without_onbuild (x, id, err);
}

static int
copy_local (const char *root, void *ud, ps_error **err)
{
  return rootfs_copy_dir ((const char *) ud, root, err);
}

/* A local source's directory, ready to hash and copy: the multipart part
   as unpacked (or a filtered copy of it), or a filtered copy of the
   session's directory, synced into its cache first.  Sets local_dir. */
static int
prepare_local (struct llb_exec *x, size_t idx, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  struct vertex_state *s = &x->vs[idx];
  const char *name = v->op->source->identifier + strlen ("local://");
  const char *dir = find_local_dir (x, name);
  if (dir && llb_local_filter_empty (&s->filter))
    {
      s->local_dir = xstrdup (dir);
      return 0;
    }
  char rnd[17];
  ps_random_hex (rnd, 8);
  cleanup_free char *stage = xasprintf ("%s/llb-local-%zu-%s", x->work_dir, idx, rnd);
  if (dir)
    {
      if (llb_local_stage (dir, stage, &s->filter, err) < 0)
        return -1;
      s->local_dir = xstrdup (stage);
      return 0;
    }

  /* Over the session: the client applies the patterns as it sends. */
  const struct llb_local_filter *f = &s->filter;
  struct diffcopy_opts o = {
    .dir_name = name,
    .include_patterns = (const char *const *) f->includes.v,
    .n_include = f->includes.n - f->follow.n, /* follow paths are appended last */
    .exclude_patterns = (const char *const *) f->excludes.v,
    .n_exclude = f->excludes.n,
    .follow_paths = (const char *const *) f->follow.v,
    .n_follow = f->follow.n,
  };
  pthread_mutex_lock (&x->session_lock);
  ps_session *sess = session_wait (x->session_id, PS_SESSION_WAIT_MS, err);
  int ret = -1;
  cleanup_free char *cache = NULL;
  int lock_fd = -1;
  if (sess == NULL)
    ps_error_wrap (err, "local source \"%s\": session %s", name, x->session_id);
  else
    ret = session_sync_local (x->job, sess, x->state_dir, v->digest, llb_source_attr (v->op->source, "local.sharedkeyhint"),
                              &o, &cache, &lock_fd, err);
  if (sess)
    session_unref (sess);
  pthread_mutex_unlock (&x->session_lock);
  if (ret < 0)
    return -1;
  /* A copy taken under the cache's lock: the next build may change the cache. */
  ret = llb_local_stage (cache, stage, &s->filter, err);
  close (lock_fd);
  if (ret == 0)
    s->local_dir = xstrdup (stage);
  return ret;
}

static int
run_local_source (struct llb_exec *x, size_t idx, char **image, ps_error **err)
{
  struct buildah_wc w;
  if (llb_wc_from (NULL, true, &w, err) < 0)
    return -1;
  int r = copy_local (w.mnt, x->vs[idx].local_dir, err);
  if (r == 0)
    r = llb_wc_commit_rm (&w, image, err);
  llb_wc_remove (&w);
  return r;
}

/* ---- exec ------------------------------------------------------------------------- */

/* ---- children: every buildah run is registered so a failure or a cancel
   can stop all of them at once ------------------------------------------------- */

/* Stop every registered child (SIGTERM to each first, so they clean up in
   parallel; then SIGKILL of each group after the grace time). */
static void
terminate_children (struct llb_exec *x)
{
  pthread_mutex_lock (&x->lock);
  size_t n = x->n_pids;
  pid_t *pids = n ? xmalloc (n * sizeof *pids) : NULL;
  if (n)
    memcpy (pids, x->pids, n * sizeof *pids);
  pthread_mutex_unlock (&x->lock);
  ps_children_terminate (pids, n, LLB_CANCEL_GRACE_MS);
  free (pids);
}

/* The job's cancel hook: start nothing more, stop what runs. */
static void
cancel_all (void *data)
{
  struct llb_exec *x = data;
  pthread_mutex_lock (&x->lock);
  x->stop = true;
  pthread_cond_broadcast (&x->changed);
  pthread_mutex_unlock (&x->lock);
  terminate_children (x);
}

struct log_sink
{
  struct llb_exec *x;
  const char *vertex;
};

static void
log_chunk (void *ud, int stream, const char *data, size_t len)
{
  struct log_sink *ls = ud;
  if (data)
    solver_job_emit_log (ls->x->job, ls->vertex, stream, data, len, NULL);
}

/* Run argv, each chunk of its stdout/stderr a SOLVER_EV_LOG of vertex `v`
   as it arrives.  *status gets the exit status. */
static int
run_logged (struct llb_exec *x, const struct llb_vertex *v, ps_strv *argv, int *status, ps_error **err)
{
  struct ps_child child;
  if (ps_child_spawn (argv->v, &child, err) < 0)
    return -1;
  /* buildah run killed from outside must not leave the exec running, nor
     runc's record of its container. */
  ps_child_watch_below_then (&child, runc_state_remove_killed, NULL);
  pthread_mutex_lock (&x->lock);
  bool stopped = x->stop;
  if (x->n_pids == x->cap_pids)
    {
      x->cap_pids = x->cap_pids ? 2 * x->cap_pids : 8;
      x->pids = xrealloc (x->pids, x->cap_pids * sizeof *x->pids);
    }
  x->pids[x->n_pids++] = child.pid;
  pthread_mutex_unlock (&x->lock);
  if (stopped) /* stopped between the vertex's start and now */
    ps_children_terminate (&child.pid, 1, LLB_CANCEL_GRACE_MS);

  struct log_sink ls = { x, v->digest };
  ps_child_pump (&child, log_chunk, &ls);
  /* Both pipes closed: forget the pid before reaping it, so a late stop
     can never signal a recycled pid. */
  pthread_mutex_lock (&x->lock);
  for (size_t i = 0; i < x->n_pids; i++)
    if (x->pids[i] == child.pid)
      {
        x->pids[i] = x->pids[--x->n_pids];
        break;
      }
  pthread_mutex_unlock (&x->lock);
  *status = ps_child_wait (&child);
  return 0;
}

/* --sandbox-network host: set once at start, before any solve. */
static bool sandbox_network_host;

void
llb_exec_set_sandbox_network_host (bool host)
{
  sandbox_network_host = host;
}

static bool
stopped (struct llb_exec *x)
{
  pthread_mutex_lock (&x->lock);
  bool s = x->stop;
  pthread_mutex_unlock (&x->lock);
  return s;
}

/* The image of the op's input `input` (the output it names), NULL = scratch
   (an input kept as a snapshot has been made an image by input_made). */
static const char *
input_image (struct llb_exec *x, const struct llb_vertex *v, int64_t input)
{
  return input < 0 ? NULL : x->vs[v->inputs[input] - x->g->vertices].images[v->input_index[input]];
}

/* The snapshot the op's input `input` is kept as, or NULL. */
static const char *
input_snapshot (struct llb_exec *x, const struct llb_vertex *v, int64_t input)
{
  return input < 0 ? NULL : x->vs[v->inputs[input] - x->g->vertices].snaps[v->input_index[input]];
}

/* Output `o` of vertex `idx` as an image: made from its snapshot the first
   time one is needed (once, however many users ask at once). */
static int
output_made (struct llb_exec *x, size_t idx, size_t o, ps_error **err)
{
  struct vertex_state *s = &x->vs[idx];
  int ret = 0;
  pthread_mutex_lock (&s->made);
  if (s->images[o] == NULL && s->snaps[o])
    ret = llb_snapshot_image (x->state_dir, s->snaps[o], x->g->vertices[idx].name, &s->images[o], err);
  pthread_mutex_unlock (&s->made);
  return ret;
}

/* Every input of vertex `idx` an image, but input `except` (-1: none). */
static int
inputs_made (struct llb_exec *x, size_t idx, int64_t except, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  for (size_t i = 0; i < v->n_inputs; i++)
    if ((int64_t) i != except
        && output_made (x, (size_t) (v->inputs[i] - x->g->vertices), (size_t) v->input_index[i], err) < 0)
      return -1;
  return 0;
}

/* A new cache directory `dir` holding a copy of image `seed`'s whole
   filesystem (what BuildKit starts a cache mount with an input from: the
   Dockerfile frontend's "settings cache mount permissions" mkdir for
   uid=, gid=, mode=).  Made aside and renamed into place, so an exec
   racing to make the same one finds either nothing or all of it. */
static int
cache_seed (const char *dir, const char *seed, const char *id, ps_error **err)
{
  cleanup_free char *tmp = xasprintf ("%s.seed-%d", dir, (int) gettid ());
  ps_rm_rf (tmp, NULL);
  if (ps_mkdir_p (tmp, 0755, err) < 0)
    return -1;
  struct buildah_wc w = { 0 };
  int ret = llb_wc_from (seed, true, &w, err);
  if (ret == 0)
    {
      char src[] = "/", dest[] = "/";
      Pb__FileActionCopy cp = PB__FILE_ACTION_COPY__INIT;
      cp.src = src;
      cp.dest = dest;
      cp.mode = -1;
      cp.followsymlink = true;
      cp.dircopycontents = true;
      cp.createdestpath = true;
      cp.timestamp = -1;
      Pb__FileAction a = PB__FILE_ACTION__INIT;
      a.input = -1;
      a.secondaryinput = 0;
      a.output = -1;
      a.action_case = PB__FILE_ACTION__ACTION_COPY;
      a.copy = &cp;
      ret = llb_file_action_apply (&a, tmp, w.mnt, w.mnt, w.mnt, "the cache seed", "the cache seed", err);
    }
  llb_wc_remove (&w);
  if (ret == 0 && rename (tmp, dir) < 0 && errno != ENOTEMPTY && errno != EEXIST)
    ret = ps_error_set_errno (err, 500, errno, "cache mount %s: rename %s", id, tmp);
  ps_rm_rf (tmp, NULL); /* left only when another exec made it first */
  return ret < 0 ? ps_error_wrap (err, "cache mount %s: seed it from its input", id) : 0;
}

/* The directory of cache mount `id` for one exec, by its sharing mode:
   SHARED: one directory, used by any number of execs at once;
   LOCKED: the same directory, one exec at a time (waits for the lock);
   PRIVATE: the first instance no other exec holds (a new one if all are).
   A mount with an input (`seed`, an image) is a cache of its own per
   input, as BuildKit keys it, started as a copy of that input.
   *lock_fd holds the flock until closed (-1 for SHARED). */
static char *
cache_mount_dir (struct llb_exec *x, const Pb__CacheOpt *c, const char *seed, int *lock_fd, ps_error **err)
{
  char hex[65];
  cleanup_free char *key = seed ? xasprintf ("%s:%s", c->id, seed) : xstrdup (c->id);
  ps_sha256_hex (key, strlen (key), hex);
  cleanup_free char *root = xasprintf ("%s/llb-cache-mounts", x->state_dir);
  if (ps_mkdir_p (root, 0700, err) < 0)
    return NULL;
  *lock_fd = -1;
  for (unsigned inst = 0;; inst++)
    {
      char *dir = inst ? xasprintf ("%s/%s.%u", root, hex, inst) : xasprintf ("%s/%s", root, hex);
      if (c->sharing != PB__CACHE_SHARING_OPT__SHARED)
        {
          cleanup_free char *lock = xasprintf ("%s.lock", dir);
          int fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
          int how = c->sharing == PB__CACHE_SHARING_OPT__PRIVATE ? LOCK_EX | LOCK_NB : LOCK_EX;
          if (fd < 0 || flock (fd, how) < 0)
            {
              int e = errno;
              if (fd >= 0)
                close (fd);
              free (dir);
              if (e == EWOULDBLOCK && inst < 1000)
                continue; /* a private instance in use: the next one */
              ps_error_set_errno (err, 500, e, "lock cache mount %s", c->id);
              return NULL;
            }
          *lock_fd = fd;
        }
      if ((seed && access (dir, F_OK) < 0 && cache_seed (dir, seed, c->id, err) < 0)
          || ps_mkdir_p (dir, 0755, err) < 0)
        {
          if (*lock_fd >= 0)
            close (*lock_fd);
          *lock_fd = -1;
          free (dir);
          return NULL;
        }
      cache_record_touch (dir); /* its last use, for POST /build/prune */
      return dir;
    }
}

/* Mount stubs: the files and directories `buildah run` makes in the
   rootfs for mount points that were not there.  BuildKit removes them
   when the exec ends (executor/stubs.go), so a RUN with a secret at
   /run/secrets/x leaves no /run/secrets/x behind; so does this, for the
   ones still empty, putting their parent's times back. */
struct mount_stubs
{
  ps_strv paths;       /* absolute on the host, deepest first once sorted */
  ps_strv parents;     /* the existing directory each chain hangs from */
  struct timespec *times; /* [parents.n][2]: atime, mtime */
};

static int
longer_first (const void *a, const void *b)
{
  size_t la = strlen (*(char *const *) a), lb = strlen (*(char *const *) b);
  return la < lb ? 1 : la > lb ? -1 : strcmp (*(char *const *) a, *(char *const *) b);
}

static void
stubs_record (struct mount_stubs *st, const char *root, const char *dest)
{
  cleanup_free char *p = xasprintf ("%s%s", root, dest);
  size_t rootlen = strlen (root);
  struct stat sb;
  while (strlen (p) > rootlen && lstat (p, &sb) < 0 && errno == ENOENT)
    {
      ps_strv_push (&st->paths, p);
      char *slash = strrchr (p, '/');
      if (slash == NULL)
        return;
      *slash = '\0';
    }
  if (st->paths.n == 0 || strlen (p) < rootlen || lstat (p, &sb) < 0 || !S_ISDIR (sb.st_mode))
    return;
  for (size_t i = 0; i < st->parents.n; i++)
    if (strcmp (st->parents.v[i], p) == 0)
      return;
  st->times = xrealloc (st->times, (st->parents.n + 1) * 2 * sizeof *st->times);
  st->times[st->parents.n * 2] = sb.st_atim;
  st->times[st->parents.n * 2 + 1] = sb.st_mtim;
  ps_strv_push (&st->parents, p);
}

static void
stubs_remove (struct mount_stubs *st)
{
  qsort (st->paths.v, st->paths.n, sizeof *st->paths.v, longer_first);
  for (size_t i = 0; i < st->paths.n; i++)
    {
      struct stat sb;
      if (lstat (st->paths.v[i], &sb) < 0)
        continue;
      if (S_ISDIR (sb.st_mode))
        rmdir (st->paths.v[i]); /* fails, as it should, when something was written inside */
      else if (S_ISREG (sb.st_mode) && sb.st_size == 0)
        unlink (st->paths.v[i]);
    }
  for (size_t i = 0; i < st->parents.n; i++)
    utimensat (AT_FDCWD, st->parents.v[i], &st->times[i * 2], AT_SYMLINK_NOFOLLOW);
}

static void
stubs_free (struct mount_stubs *st)
{
  ps_strv_free (&st->paths);
  ps_strv_free (&st->parents);
  free (st->times);
}

#define LLB_SECRETS_PREFIX "podsolve-llb-secrets"

/* Secret `opt` from the session into a file of its own on tmpfs, in
   `secrets_dir` (session_io.h).  *file is NULL when the secret is optional
   and the client has none. */
static int
fetch_secret (struct llb_exec *x, const struct llb_vertex *v, const Pb__SecretOpt *opt, char **secrets_dir,
              char **file, ps_error **err)
{
  *file = NULL;
  const struct session_secret_file f = { .chown = true, .uid = opt->uid, .gid = opt->gid,
                                         .mode = opt->mode ? (mode_t) (opt->mode & 0777) : 0400 };
  int r = 0; /* no session: the secret is optional, checked before running */
  pthread_mutex_lock (&x->session_lock);
  if (x->session_id)
    {
      ps_session *sess = session_wait (x->session_id, PS_SESSION_WAIT_MS, err);
      if (sess == NULL)
        r = ps_error_wrap (err, "secret %s", opt->id);
      else
        {
          r = session_secret_to_tmpfs (sess, opt->id, secrets_dir, LLB_SECRETS_PREFIX, &f, file, err);
          session_unref (sess);
        }
    }
  pthread_mutex_unlock (&x->session_lock);
  if (r != 0)
    return r < 0 ? -1 : 0;
  if (opt->optional)
    return 0;
  return ps_error_set (err, 400, "op %s: secret %s not found (the session does not provide it)", v->digest, opt->id);
}

#define LLB_SSH_PREFIX "podsolve-llb-ssh"

/* The client's agent for an ssh mount, forwarded on a socket in `ssh_dir`
   owned and moded as SSHOpt says (BuildKit's sshMountInstance; podsolved
   runs the container without a user namespace, so its ids are the host's).
   *fwd is NULL when the mount is optional and the client forwards no such
   agent (or there is no session): the mount is skipped. */
static int
forward_ssh (struct llb_exec *x, const struct llb_vertex *v, const Pb__Mount *mt, char **ssh_dir,
             session_ssh_forward **fwd, ps_error **err)
{
  const Pb__SSHOpt *o = mt->sshopt;
  const char *id = ssh_opt_id (o);
  bool optional = o && o->optional;
  const struct session_ssh_socket sock = { .uid = o ? o->uid : 0, .gid = o ? o->gid : 0,
                                           .mode = o && o->mode ? (mode_t) (o->mode & 0777) : 0600 };
  *fwd = NULL;
  if (x->session_id == NULL)
    return 0; /* optional, checked before running */
  int r = -1;
  bool no_key = false;
  pthread_mutex_lock (&x->session_lock);
  ps_session *sess = session_wait (x->session_id, PS_SESSION_WAIT_MS, err);
  if (sess == NULL)
    ps_error_wrap (err, "session %s", x->session_id);
  else
    {
      r = session_ssh_to_socket (sess, id, ssh_dir, LLB_SSH_PREFIX, &sock, fwd, err);
      no_key = r < 0 && (*err)->status == 404;
      session_unref (sess);
    }
  pthread_mutex_unlock (&x->session_lock);
  if (r == 0)
    return 0;
  if (no_key && optional)
    {
      ps_error_free (*err);
      *err = NULL;
      return 0;
    }
  return ps_error_wrap (err, "op %s: ssh mount %s", v->digest, mt->dest);
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

/* BuildKit's INSECURE for `buildah run`: --cap-add for each of llb_all_caps. */
static void
push_all_caps (ps_strv *argv)
{
  ps_strv caps = { 0 };
  llb_all_caps (&caps);
  for (size_t i = 0; i < caps.n; i++)
    ps_strv_pushf (argv, "--cap-add=%s", caps.v[i]);
  ps_strv_free (&caps);
}

/* ---- an exec as one `runc run` (runc_exec.h) ---------------------------------- */

struct direct_exec
{
  ps_strv env;  /* the op's environment */
  ps_strv own;  /* strings the mounts point into */
  struct llb_oci_mount *mounts;
  size_t n_mounts;
};

static const char *
direct_own (struct direct_exec *d, char *s)
{
  ps_strv_push (&d->own, s);
  free (s);
  return d->own.v[d->own.n - 1];
}

static struct llb_oci_mount *
direct_mount (struct direct_exec *d, const char *dest, const char *type, const char *source)
{
  d->mounts = xrealloc (d->mounts, (d->n_mounts + 1) * sizeof *d->mounts);
  struct llb_oci_mount *m = &d->mounts[d->n_mounts++];
  memset (m, 0, sizeof *m);
  m->dest = direct_own (d, xstrdup (dest));
  m->type = type;
  m->source = direct_own (d, xstrdup (source));
  return m;
}

/* buildah's bind mount of the op: "rw"/"ro", rbind, private */
static void
direct_bind (struct direct_exec *d, const char *src, const char *dest, bool ro)
{
  struct llb_oci_mount *m = direct_mount (d, dest, "bind", src);
  m->options[0] = ro ? "ro" : "rw";
  m->options[1] = "rbind";
  m->options[2] = "private";
}

/* buildah's tmpfs mount: rw, private[, size=N] */
static void
direct_tmpfs (struct direct_exec *d, const char *dest, long long size)
{
  const char *sz = size > 0 ? direct_own (d, xasprintf ("size=%lld", size)) : NULL;
  struct llb_oci_mount *m = direct_mount (d, dest, "tmpfs", "tmpfs");
  m->options[0] = "rw";
  m->options[1] = "private";
  m->options[2] = sz;
}

/* A file of the bundle bound at `dest` (buildah: rbind). */
static int
direct_file (struct direct_exec *d, const char *bundle, const char *name, const char *dest, const char *text,
             ps_error **err)
{
  cleanup_free char *path = xasprintf ("%s/%s", bundle, name);
  if (ps_write_file (path, text, strlen (text), 0644, err) < 0)
    return -1;
  struct llb_oci_mount *m = direct_mount (d, dest, "bind", path);
  m->options[0] = "rbind";
  return 0;
}

static void
direct_exec_free (struct direct_exec *d)
{
  ps_strv_free (&d->env);
  ps_strv_free (&d->own);
  free (d->mounts);
  memset (d, 0, sizeof *d);
}

static bool
env_has (const ps_strv *env, const char *name)
{
  size_t n = strlen (name);
  for (size_t i = 0; i < env->n; i++)
    if (strncmp (env->v[i], name, n) == 0 && env->v[i][n] == '=')
      return true;
  return false;
}

/* The host's first address that is up and not a loopback one (what
   buildah writes for host.containers.internal in a host-network exec). */
static char *
host_address (void)
{
  struct ifaddrs *ifs = NULL;
  char *out = NULL;
  if (getifaddrs (&ifs) < 0)
    return NULL;
  for (struct ifaddrs *i = ifs; i && out == NULL; i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) && !(i->ifa_flags & IFF_LOOPBACK))
      {
        char buf[INET_ADDRSTRLEN];
        if (inet_ntop (AF_INET, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, buf, sizeof buf))
          out = xstrdup (buf);
      }
  freeifaddrs (ifs);
  return out;
}

/* buildah's /etc/hosts for a host-network exec: the op's extra hosts, the
   host's entries ("ip<TAB>names", comments dropped), then
   host.containers.internal. */
static char *
hosts_text (const Pb__Meta *m)
{
  ps_buf b = { 0 };
  for (size_t i = 0; i < m->n_extrahosts; i++)
    ps_buf_printf (&b, "%s\t%s\n", m->extrahosts[i]->ip, m->extrahosts[i]->host);
  cleanup_free char *host = NULL;
  if (ps_read_file ("/etc/hosts", 1 << 20, &host, NULL, NULL) == 0)
    {
      char *save = NULL;
      for (char *line = strtok_r (host, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
        {
          line[strcspn (line, "#")] = '\0';
          char *s2 = NULL;
          char *ip = strtok_r (line, " \t\r", &s2);
          char *name = ip ? strtok_r (NULL, " \t\r", &s2) : NULL;
          if (name == NULL)
            continue;
          ps_buf_printf (&b, "%s\t%s", ip, name);
          while ((name = strtok_r (NULL, " \t\r", &s2)) != NULL)
            ps_buf_printf (&b, " %s", name);
          ps_buf_puts (&b, "\n");
        }
    }
  cleanup_free char *addr = host_address ();
  if (addr)
    ps_buf_printf (&b, "%s\thost.containers.internal\n", addr);
  return b.data ? ps_buf_steal (&b) : xstrdup ("");
}

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Run the exec's process in the mounted `root` with `args`: a bundle of
   its own, one `runc run`, then runc's record (if a kill left one) and the
   bundle removed. */
static int
run_direct (struct llb_exec *x, const struct llb_vertex *v, const struct buildah_wc *root, struct direct_exec *d,
            const char *const *args, size_t n_args, int *status, ps_error **err)
{
  const Pb__ExecOp *e = v->op->exec;
  const Pb__Meta *m = e->meta;
  bool host_net = e->network != PB__NET_MODE__NONE;
  char rnd[17];
  ps_random_hex (rnd, 8);
  cleanup_free char *id = xasprintf ("podsolve-%s-%s", buildah_container_tag (), rnd);
  cleanup_free char *bundle = xasprintf ("%s/%s", llb_runc_bundles (), id);
  struct llb_user user = { 0 };
  struct llb_rlimit *rl = NULL;
  size_t n_rl = 0;
  ps_strv env = { 0 };
  char *json = NULL;
  const char **names = xcalloc (m->n_ulimit + 1, sizeof *names);
  int64_t *soft = xcalloc (m->n_ulimit + 1, sizeof *soft), *hard = xcalloc (m->n_ulimit + 1, sizeof *hard);
  for (size_t i = 0; i < m->n_ulimit; i++)
    {
      names[i] = m->ulimit[i]->name;
      soft[i] = m->ulimit[i]->soft;
      hard[i] = m->ulimit[i]->hard;
    }
  const char *hostname = m->hostname && *m->hostname ? m->hostname : NULL;
  char hn[13];
  if (hostname == NULL)
    {
      /* buildah: the first 12 hex digits of the container's id */
      ps_random_hex (hn, 6);
      hostname = hn;
    }
  const char *cwd = m->cwd && *m->cwd ? m->cwd : "/";
  cleanup_free char *cwd_host = NULL;
  cleanup_free char *hostname_text = xasprintf ("%s\n", hostname);
  cleanup_free char *containerenv = xasprintf ("engine=\"buildah-%s\"\nname=\"%s\"\nrootless=0\n",
                                               buildah_version () ? buildah_version () : "", root->ctr);
  int ret = ps_mkdir_p (bundle, 0700, err);
  if (ret == 0)
    ret = llb_user_resolve (root->mnt, m->user, &user, err);
  /* the working directory, made when missing (as buildah does) */
  if (ret == 0)
    ret = llb_scoped_resolve (root->mnt, cwd, true, &cwd_host, err);
  if (ret == 0 && access (cwd_host, F_OK) < 0)
    ret = ps_mkdir_p (cwd_host, 0755, err);
  if (ret == 0)
    ret = llb_rlimits ((const char *const *) names, soft, hard, m->n_ulimit, &rl, &n_rl, err);
  if (ret == 0)
    ret = direct_file (d, bundle, "hostname", "/etc/hostname", hostname_text, err);
  if (ret == 0)
    ret = direct_file (d, bundle, "containerenv", "/run/.containerenv", containerenv, err);
  if (ret == 0 && host_net)
    {
      cleanup_free char *hosts = hosts_text (m);
      cleanup_free char *resolv = NULL;
      if (ps_read_file ("/etc/resolv.conf", 1 << 20, &resolv, NULL, NULL) < 0)
        resolv = xstrdup ("");
      ret = direct_file (d, bundle, "hosts", "/etc/hosts", hosts, err);
      if (ret == 0)
        ret = direct_file (d, bundle, "resolv.conf", "/etc/resolv.conf", resolv, err);
    }
  if (ret < 0)
    goto out;

  if (!env_has (&d->env, "PATH"))
    ps_strv_push (&env, DEFAULT_PATH);
  for (size_t i = 0; i < d->env.n; i++)
    ps_strv_push (&env, d->env.v[i]);
  if (!env_has (&env, "HOSTNAME"))
    ps_strv_pushf (&env, "HOSTNAME=%s", hostname);
  ps_strv caps = { 0 };
  bool insecure = e->security == PB__SECURITY_MODE__INSECURE;
  if (insecure)
    llb_all_caps (&caps);
  else
    for (size_t i = 0; i < llb_n_default_caps; i++)
      ps_strv_push (&caps, llb_default_caps[i]);
  const struct llb_oci_spec spec = {
    .rootfs = root->mnt,
    .args = args,
    .n_args = n_args,
    .env = (const char *const *) env.v,
    .n_env = env.n,
    .cwd = cwd,
    .user = &user,
    .caps = (const char *const *) caps.v,
    .n_caps = caps.n,
    .host_network = host_net,
    .hostname = hostname,
    .mounts = d->mounts,
    .n_mounts = d->n_mounts,
    .rlimits = rl,
    .n_rlimits = n_rl,
    .seccomp = llb_runc_seccomp (insecure),
  };
  json = llb_oci_spec_json (&spec);
  ps_strv_free (&caps);
  {
    cleanup_free char *config = xasprintf ("%s/config.json", bundle);
    ret = ps_write_file (config, json, strlen (json), 0600, err);
  }
  if (ret < 0)
    goto out;

  ps_strv argv = { 0 };
  ps_strv_push (&argv, llb_runc_binary ());
  ps_strv_pushf (&argv, "--root=%s", llb_runc_root ());
  ps_strv_push (&argv, "run");
  ps_strv_pushf (&argv, "--bundle=%s", bundle);
  ps_strv_push (&argv, id);
  ret = run_logged (x, v, &argv, status, err);
  ps_strv_free (&argv);
  /* runc run deletes its container when it ends; one killed (a cancel
     that ran out of grace, a kill from outside) cannot */
  llb_runc_delete (id);

out:
  ps_rm_rf (bundle, NULL);
  free (json);
  ps_strv_free (&env);
  llb_user_clear (&user);
  free (rl);
  free (names);
  free (soft);
  free (hard);
  return ret;
}

static int
run_exec (struct llb_exec *x, size_t idx, int *exit_code, ps_error **err)
{
  const struct llb_vertex *v = &x->g->vertices[idx];
  char **images = x->vs[idx].images;
  const Pb__ExecOp *e = v->op->exec;
  const Pb__Meta *m = e->meta;
  const Pb__Mount *rootm = NULL;
  for (size_t i = 0; i < e->n_mounts; i++)
    if (strcmp (e->mounts[i]->dest, "/") == 0)
      rootm = e->mounts[i];

  struct buildah_wc root = { 0 };
  struct buildah_wc *binds = xcalloc (e->n_mounts, sizeof *binds);
  int *locks = xmalloc (e->n_mounts * sizeof *locks);
  for (size_t i = 0; i < e->n_mounts; i++)
    locks[i] = -1;
  cleanup_free char *secrets_dir = NULL, *ssh_dir = NULL;
  struct mount_stubs stubs = { 0 };
  ps_strv env_args = { 0 }; /* NAME=FILE for podsolve-env-exec */
  session_ssh_forward **fwds = xcalloc (e->n_mounts, sizeof *fwds);
  ps_strv argv = { 0 };
  ps_strv from = { 0 };
  for (size_t i = 0; i < m->n_extrahosts; i++)
    ps_strv_pushf (&from, "--add-host=%s:%s", m->extrahosts[i]->host, m->extrahosts[i]->ip);
  for (size_t i = 0; i < m->n_ulimit; i++)
    {
      /* -1 is "unlimited" in BuildKit's and buildah's terms alike */
      const Pb__Ulimit *u = m->ulimit[i];
      ps_strv_pushf (&from, "--ulimit=%s=%lld:%lld", u->name, (long long) u->soft, (long long) u->hard);
    }
  /* One `runc run` of podsolved's own (runc_exec.h) when buildah would
     run runc and the exec needs no network of its own. */
  bool direct = llb_runc_usable ()
                && (e->network == PB__NET_MODE__NONE || e->network == PB__NET_MODE__HOST || sandbox_network_host);
  struct direct_exec d = { 0 };
  /* On the direct path the root's result can be a snapshot (snapshot.h):
     an overlay of podsolved's own over the input, no working container,
     no commit.  Not for a root the op reads only part of or not at all,
     nor when another mount takes the same input (that one needs it as
     an image). */
  bool snap = direct && rootm->input >= 0 && !rootm->readonly
              && (rootm->selector == NULL || *rootm->selector == '\0' || strcmp (rootm->selector, "/") == 0)
              && llb_snapshots_usable (x->state_dir);
  for (size_t i = 0; snap && i < e->n_mounts; i++)
    snap = e->mounts[i] == rootm || e->mounts[i]->input != rootm->input;
  struct llb_snapshot_mount sm = { 0 };
  int ret = inputs_made (x, idx, snap ? rootm->input : -1, err);
  if (ret == 0 && snap)
    {
      const char *psnap = input_snapshot (x, v, rootm->input);
      ret = llb_snapshot_mount (x->state_dir, psnap ? NULL : input_image (x, v, rootm->input), psnap, &sm, err);
      if (ret == 0)
        {
          root.ctr = xasprintf ("podsolve-snap-%s", sm.id);
          root.mnt = xstrdup (sm.merged);
        }
    }
  else if (ret == 0)
    /* mounted when there are mount points to look at (mount_stubs), or to run in */
    ret = llb_wc_from_with (input_image (x, v, rootm->input), (const char *const *) from.v,
                            direct || e->n_mounts > 1 || e->n_secretenv > 0, &root, err);
  ps_strv_free (&from);
  if (ret < 0)
    goto out;

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "run");
  buildah_argv_isolation (&argv, NULL);
  for (size_t i = 0; i < m->n_env; i++)
    {
      ps_strv_pushf (&argv, "--env=%s", m->env[i]);
      ps_strv_push (&d.env, m->env[i]);
    }
  if (m->proxy_env)
    {
      const char *const names[] = { "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY" };
      const char *vals[] = { m->proxy_env->http_proxy, m->proxy_env->https_proxy, m->proxy_env->ftp_proxy,
                             m->proxy_env->no_proxy, m->proxy_env->all_proxy };
      for (size_t i = 0; i < ARRAY_SIZE (names); i++)
        if (vals[i] && *vals[i])
          {
            ps_strv_pushf (&argv, "--env=%s=%s", names[i], vals[i]);
            ps_strv_pushf (&d.env, "%s=%s", names[i], vals[i]);
            cleanup_free char *lower = xstrdup (names[i]);
            for (char *c = lower; *c; c++)
              *c = (char) tolower ((unsigned char) *c);
            ps_strv_pushf (&argv, "--env=%s=%s", lower, vals[i]);
            ps_strv_pushf (&d.env, "%s=%s", lower, vals[i]);
          }
    }
  if (m->cwd && *m->cwd)
    ps_strv_pushf (&argv, "--workingdir=%s", m->cwd);
  if (m->user && *m->user)
    ps_strv_pushf (&argv, "--user=%s", m->user);
  if (m->hostname && *m->hostname)
    ps_strv_pushf (&argv, "--hostname=%s", m->hostname);
  if (e->security == PB__SECURITY_MODE__INSECURE)
    push_all_caps (&argv);
  if (e->network == PB__NET_MODE__NONE)
    ps_strv_push (&argv, "--network=none");
  else if (e->network == PB__NET_MODE__HOST || sandbox_network_host)
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
            /* An input's filesystem (or scratch) in its own working
               container: a writable bind writes into that container, which
               is committed when the mount is an output of the op and
               thrown away otherwise, as BuildKit does. */
            ret = llb_wc_from (input_image (x, v, mt->input), true, &binds[i], err);
            cleanup_free char *src = NULL;
            if (ret == 0)
              ret = llb_scoped_resolve (binds[i].mnt, mt->selector && *mt->selector ? mt->selector : "/", true,
                                        &src, err);
            if (ret == 0)
              {
                ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,%s", src, mt->dest,
                               mt->readonly ? "ro" : "rw");
                direct_bind (&d, src, mt->dest, mt->readonly);
              }
            break;
          }
        case PB__MOUNT_TYPE__CACHE:
          {
            const char *seed = mt->input >= 0 ? input_image (x, v, mt->input) : NULL;
            cleanup_free char *dir = cache_mount_dir (x, mt->cacheopt, seed, &locks[i], err);
            cleanup_free char *src = NULL;
            if (dir == NULL)
              ret = -1;
            else if (mt->selector && *mt->selector && strcmp (mt->selector, "/"))
              {
                /* a path inside the cache (made when missing, as BuildKit does) */
                ret = llb_scoped_resolve (dir, mt->selector, true, &src, err);
                if (ret == 0 && access (src, F_OK) < 0)
                  ret = ps_mkdir_p (src, 0755, err);
              }
            else
              src = xstrdup (dir);
            if (ret == 0)
              {
                ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,%s", src, mt->dest,
                               mt->readonly ? "ro" : "rw");
                direct_bind (&d, src, mt->dest, mt->readonly);
              }
            break;
          }
        case PB__MOUNT_TYPE__TMPFS:
          if (mt->tmpfsopt && mt->tmpfsopt->size > 0)
            ps_strv_pushf (&argv, "--mount=type=tmpfs,target=%s,tmpfs-size=%lld", mt->dest,
                           (long long) mt->tmpfsopt->size);
          else
            ps_strv_pushf (&argv, "--mount=type=tmpfs,target=%s", mt->dest);
          direct_tmpfs (&d, mt->dest, mt->tmpfsopt ? mt->tmpfsopt->size : 0);
          break;
        case PB__MOUNT_TYPE__SECRET:
          {
            ret = session_secrets_dir (&secrets_dir, LLB_SECRETS_PREFIX, err);
            if (ret < 0)
              break;
            cleanup_free char *file = NULL;
            ret = fetch_secret (x, v, mt->secretopt, &secrets_dir, &file, err);
            if (ret == 0 && file)
              {
                ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,ro", file, mt->dest);
                direct_bind (&d, file, mt->dest, true);
              }
            break;
          }
        case PB__MOUNT_TYPE__SSH:
          /* The socket itself is bound at dest: a socket node cannot be
             copied, and its owner and mode are SSHOpt's. */
          ret = forward_ssh (x, v, mt, &ssh_dir, &fwds[i], err);
          if (ret == 0 && fwds[i])
            {
              ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s", session_ssh_forward_path (fwds[i]),
                             mt->dest);
              direct_bind (&d, session_ssh_forward_path (fwds[i]), mt->dest, false);
            }
          break;
        default:
          ret = llb_unsupported (err, v, "mount type %d", (int) mt->mounttype);
        }
    }
  /* Secret environment variables: a file each, and the helper that reads them. */
  for (size_t i = 0; ret == 0 && i < e->n_secretenv; i++)
    {
      const Pb__SecretEnv *se = e->secretenv[i];
      Pb__SecretOpt opt = PB__SECRET_OPT__INIT;
      opt.id = se->id;
      opt.optional = se->optional;
      opt.mode = 0444;
      cleanup_free char *file = NULL;
      ret = session_secrets_dir (&secrets_dir, LLB_SECRETS_PREFIX, err);
      if (ret == 0)
        ret = fetch_secret (x, v, &opt, &secrets_dir, &file, err);
      if (ret == 0 && file)
        {
          cleanup_free char *target = xasprintf ("%s/%zu", SECRET_ENV_DIR, i);
          ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,ro", file, target);
          direct_bind (&d, file, target, true);
          ps_strv_pushf (&env_args, "%s=%s", se->name, target);
          if (root.mnt)
            stubs_record (&stubs, root.mnt, target);
        }
    }
  if (ret == 0 && e->n_secretenv)
    {
      ps_strv_pushf (&argv, "--mount=type=bind,src=%s,target=%s,ro", env_exec_path (), ENV_EXEC_TARGET);
      direct_bind (&d, env_exec_path (), ENV_EXEC_TARGET, true);
      if (root.mnt)
        stubs_record (&stubs, root.mnt, ENV_EXEC_TARGET);
    }
  if (ret < 0)
    goto out;
  for (size_t i = 0; root.mnt && i < e->n_mounts; i++)
    if (e->mounts[i] != rootm)
      stubs_record (&stubs, root.mnt, e->mounts[i]->dest);
  ps_strv_push (&argv, root.ctr);
  ps_strv_push (&argv, "--");
  if (e->n_secretenv)
    {
      ps_strv_push (&argv, ENV_EXEC_TARGET);
      for (size_t i = 0; i < env_args.n; i++)
        ps_strv_push (&argv, env_args.v[i]);
      ps_strv_push (&argv, "--");
    }
  for (size_t i = 0; i < m->n_args; i++)
    ps_strv_push (&argv, m->args[i]);

  int status = -1;
  if (direct)
    {
      /* the process's args: what follows "--" */
      size_t dash = 0;
      while (strcmp (argv.v[dash], "--") != 0)
        dash++;
      ret = run_direct (x, v, &root, &d, (const char *const *) argv.v + dash + 1, argv.n - dash - 1, &status, err);
    }
  else
    ret = run_logged (x, v, &argv, &status, err);
  if (ret < 0)
    goto out;
  if (stopped (x))
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
  stubs_remove (&stubs);
  /* The outputs: the root's container, and those of writable binds. */
  for (size_t i = 0; i < e->n_mounts && ret == 0; i++)
    {
      const Pb__Mount *mt = e->mounts[i];
      if (mt->output < 0)
        continue;
      if (mt == rootm && snap)
        {
          sm.created_by = v->name;
          if ((ret = llb_snapshot_finish (&sm, true, err)) == 0)
            x->vs[idx].snaps[mt->output] = steal_pointer (&sm.id);
        }
      else
        ret = llb_wc_commit_rm (mt == rootm ? &root : &binds[i], &images[mt->output], err);
    }

out:
  direct_exec_free (&d);
  ps_strv_free (&argv);
  ps_strv_free (&env_args);
  stubs_free (&stubs);
  for (size_t i = 0; i < e->n_mounts; i++)
    {
      llb_wc_remove (&binds[i]);
      if (locks[i] >= 0)
        close (locks[i]);
    }
  free (binds);
  free (locks);
  if (snap)
    {
      /* not a buildah container: the overlay is podsolved's own */
      llb_snapshot_finish (&sm, false, NULL);
      free (sm.id);
      free (root.ctr);
      free (root.mnt);
      memset (&root, 0, sizeof root);
    }
  llb_wc_remove (&root);
  if (secrets_dir)
    ps_rm_rf (secrets_dir, NULL);
  for (size_t i = 0; i < e->n_mounts; i++)
    session_ssh_forward_stop (fwds[i]);
  free (fwds);
  if (ssh_dir)
    ps_rm_rf (ssh_dir, NULL);
  return ret;
}

/* ---- one vertex ------------------------------------------------------------------- */

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
      if (resolve_image (x, v, &s->images[0], &pulled, err) < 0)
        return -1;
      if (compute_key (x, idx, s->images[0], err) < 0)
        return -1;
      emit_vertex (x, v, started, ps_now_ns (), !pulled, NULL);
      return 0;
    }

  bool ignore = x->no_cache || (v->meta && v->meta->ignore_cache);
  bool local = v->op->op_case == PB__OP__OP_SOURCE && ps_str_has_prefix (v->op->source->identifier, "local://");
  bool remote_src = v->op->op_case == PB__OP__OP_SOURCE && llb_remote_handles (v->op->source->identifier);
  cleanup_llb_remote struct llb_remote *remote = NULL;
  if (local || remote_src)
    {
      /* The transfer is this vertex's work, cached or not: what the source
         holds now is part of the key. */
      emit_vertex (x, v, started, 0, false, NULL);
      cleanup_free char *tmp = remote_src ? xasprintf ("%s/llb-tmp", x->state_dir) : NULL;
      if (local ? prepare_local (x, idx, err) < 0
                : ps_mkdir_p (tmp, 0700, err) < 0
                      || llb_remote_resolve (v, tmp, ignore ? NULL : x->state_dir, x->job, &remote, err) < 0)
        return -1;
    }
  if (compute_key (x, idx, remote ? llb_remote_key (remote) : NULL, err) < 0)
    return -1;
  if (!ignore && records_lookup (x, idx))
    {
      int64_t now = ps_now_ns ();
      emit_vertex (x, v, local || remote_src ? started : now, now, true, NULL);
      return 0;
    }

  if (!local && !remote_src)
    emit_vertex (x, v, started, 0, false, NULL);
  /* Inputs kept as snapshots become images here, but an exec's root,
     which run_exec may stack its own snapshot on. */
  if (v->op->op_case != PB__OP__OP_EXEC && v->op->op_case != PB__OP__OP_FILE && inputs_made (x, idx, -1, err) < 0)
    return -1;
  int r;
  switch (v->op->op_case)
    {
    case PB__OP__OP_SOURCE:
      r = remote ? llb_remote_commit (remote, x->job, &s->images[0], err) : run_local_source (x, idx, &s->images[0], err);
      break;
    case PB__OP__OP_EXEC:
      r = run_exec (x, idx, exit_code, err);
      break;
    case PB__OP__OP_FILE:
      {
        /* An input an action starts from must be an image; one only read
           (a copy's source, an owner's passwd) may stay a snapshot. */
        const Pb__FileOp *f = v->op->file;
        bool *base = xcalloc (v->n_inputs + 1, sizeof *base);
        for (size_t k = 0; k < f->n_actions; k++)
          if (f->actions[k]->input >= 0 && (size_t) f->actions[k]->input < v->n_inputs)
            base[f->actions[k]->input] = true;
        const char **inputs = xcalloc (v->n_inputs + 1, sizeof *inputs);
        const char **snaps = xcalloc (v->n_inputs + 1, sizeof *snaps);
        r = 0;
        for (size_t i = 0; r == 0 && i < v->n_inputs; i++)
          {
            size_t in = (size_t) (v->inputs[i] - x->g->vertices), o = (size_t) v->input_index[i];
            if (base[i])
              r = output_made (x, in, o, err);
            pthread_mutex_lock (&x->vs[in].made);
            inputs[i] = x->vs[in].images[o];
            snaps[i] = x->vs[in].snaps[o];
            pthread_mutex_unlock (&x->vs[in].made);
          }
        if (r == 0)
          r = llb_fileop_run (v, inputs, snaps, x->state_dir, s->images, err);
        free (inputs);
        free (snaps);
        free (base);
        break;
      }
    case PB__OP__OP_MERGE:
      {
        const char **inputs = xcalloc (v->n_inputs + 1, sizeof *inputs);
        for (size_t i = 0; i < v->n_inputs; i++)
          inputs[i] = input_image (x, v, (int64_t) i);
        r = llb_merge_run (v, inputs, x->state_dir, &s->images[0], err);
        free (inputs);
        break;
      }
    case PB__OP__OP_DIFF:
      r = llb_diff_run (v, input_image (x, v, v->op->diff->lower->input),
                        input_image (x, v, v->op->diff->upper->input), x->state_dir, &s->images[0], err);
      break;
    default:
      r = llb_unsupported (err, v, "op type %d", (int) v->op->op_case);
    }
  if (r < 0)
    return -1;
  for (size_t o = 0; o < v->n_outputs; o++)
    if (s->snaps[o])
      {
        cleanup_free char *rec = xasprintf ("snap %s", s->snaps[o]);
        record_store (x, s->key, o, rec);
      }
    else if (s->images[o])
      record_store (x, s->key, o, s->images[o]);
  emit_vertex (x, v, started, ps_now_ns (), false, NULL);
  return 0;
}

/* ---- the scheduler: workers take ready vertices until none is left ---------------- */

static void
push_ready (struct llb_exec *x, size_t idx)
{
  x->vs[idx].phase = V_READY;
  x->ready[x->ready_tail++] = idx;
}

static void *
worker (void *arg)
{
  struct llb_exec *x = arg;
  pthread_mutex_lock (&x->lock);
  for (;;)
    {
      while (!x->stop && x->ready_head == x->ready_tail && x->running > 0)
        pthread_cond_wait (&x->changed, &x->lock);
      if (x->stop || x->ready_head == x->ready_tail)
        break; /* stopped, or nothing ready and nothing running: the graph is done */
      size_t idx = x->ready[x->ready_head++];
      x->vs[idx].phase = V_RUNNING;
      x->running++;
      pthread_mutex_unlock (&x->lock);

      const struct llb_vertex *v = &x->g->vertices[idx];
      ps_error *err = NULL;
      int exit_code = 0;
      int r = run_vertex (x, idx, &exit_code, &err);
      if (r < 0)
        {
          ps_error_wrap (&err, "%s", v->name);
          emit_vertex (x, v, 0, ps_now_ns (), false, err->msg);
        }

      pthread_mutex_lock (&x->lock);
      x->running--;
      if (r < 0)
        {
          x->vs[idx].phase = V_FAILED;
          bool first = !x->stop && x->first_err == NULL;
          if (first)
            {
              x->first_err = err;
              x->failed = idx;
              x->exit_code = exit_code;
              err = NULL;
              x->stop = true;
            }
          ps_error_free (err);
          pthread_cond_broadcast (&x->changed);
          if (first)
            {
              /* A failure cancels its siblings: stop their processes. */
              pthread_mutex_unlock (&x->lock);
              terminate_children (x);
              pthread_mutex_lock (&x->lock);
            }
          continue;
        }
      x->vs[idx].phase = V_DONE;
      for (size_t u = 0; u < x->vs[idx].n_users; u++)
        {
          size_t user = x->vs[idx].users[u];
          if (--x->vs[user].waiting == 0)
            push_ready (x, user);
        }
      pthread_cond_broadcast (&x->changed);
    }
  pthread_cond_broadcast (&x->changed);
  pthread_mutex_unlock (&x->lock);
  return NULL;
}

int
llb_exec_run (struct llb_exec *x, solver_job *job, char **image_id, ps_error **err)
{
  struct llb_graph *g = x->g;
  x->job = job;
  for (size_t i = 0; i < g->n_vertices; i++)
    if (x->vs[i].waiting == 0)
      push_ready (x, i);
  solver_job_set_cancel_hook (job, cancel_all, x);

  size_t n = x->max_parallel < g->n_vertices ? x->max_parallel : g->n_vertices;
  pthread_t *th = xcalloc (n, sizeof *th);
  size_t started = 0;
  for (; started < n; started++)
    {
      /* As much stack as the job's own thread: tree walks (hashing,
         staging, copies, merges) recurse once per directory level. */
      int r = ps_thread_start (&th[started], worker, x, LLB_WORKER_STACK, false);
      if (r != 0)
        break;
    }
  if (started == 0)
    worker (x); /* no thread to be had: run the graph on this one */
  for (size_t i = 0; i < started; i++)
    pthread_join (th[i], NULL);
  free (th);
  solver_job_set_cancel_hook (job, NULL, NULL);

  if (x->first_err)
    {
      /* A cancelled job's ERROR comes from the job itself ("build
         cancelled: ..."), not from the vertex that was interrupted. */
      if (!solver_job_cancelled (job))
        {
          struct solver_event ev = { .kind = SOLVER_EV_ERROR };
          ev.error = xstrdup (x->first_err->msg);
          ev.vertex = xstrdup (g->vertices[x->failed].digest);
          ev.exit_code = x->exit_code;
          solver_job_emit (job, &ev);
        }
      *err = x->first_err;
      x->first_err = NULL;
      return -1;
    }
  if (solver_job_cancelled (job) || x->vs[g->result - g->vertices].phase != V_DONE)
    return ps_error_set (err, 499, "cancelled");
  if (output_made (x, (size_t) (g->result - g->vertices), (size_t) g->result_index, err) < 0)
    return -1;
  const char *img = x->vs[g->result - g->vertices].images[g->result_index];
  if (img == NULL)
    return ps_error_set (err, 500, "op %s produced no image for output %lld", g->result->digest,
                         (long long) g->result_index);
  *image_id = xstrdup (img);
  return 0;
}
