/* gateway.c — the process-wide registry of client-side gateway builds and
 * their refs (see gateway.h). */
#define _GNU_SOURCE
#include "solver/gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/cjson.h"
#include "common/log.h"
#include "schema/control_request.h"
#include "session/filesend.h"
#include "solver/buildah.h"
#include "solver/frontend_image.h"
#include "solver/image_config.h"
#include "solver/solve.h"

/* How often a waiting build or caller looks at its cancel flags. */
#define GATEWAY_POLL_MS 200

struct gateway_ref
{
  char *id;
  char *image;       /* 64 hex */
  uint8_t *def;      /* the pb.Definition it came from, or NULL */
  size_t def_len;
  struct buildah_wc wc; /* mounted on the first read, removed with the build */
  int root_fd;          /* O_PATH of wc.mnt, -1 until mounted */
};

/* One LLBBridge.Solve waiting for the job thread. */
struct gateway_task
{
  struct gateway_task *next;
  struct solve_request req; /* frontend / definition flag, attrs, caches */
  uint8_t *definition;
  size_t definition_len;
  struct gateway_input *inputs; /* owned copies */
  size_t n_inputs;
  bool done;
  bool abandoned; /* the caller left: the runner frees the task */
  int ret;
  ps_error *err;
  char *ref_id;
};

struct gateway_build
{
  char *id;
  int refcount;             /* under registry_lock */
  pthread_mutex_t lock;     /* everything below */
  pthread_cond_t cond;
  pthread_mutex_t mount_lock; /* mounting a ref */
  solver_job *job;
  char *session;
  ps_strv entitlements;
  char *job_dir;
  char *authfile;
  char *state_dir;
  uint64_t max_context_bytes;
  struct gateway_input *inputs;
  size_t n_inputs;
  struct solve_cache_entry *cache_imports, *cache_exports;
  size_t n_cache_imports, n_cache_exports;
  struct solve_source *sources;
  size_t n_sources;
  int64_t last_call_ns;     /* under registry_lock: when a call last began or ended */

  struct gateway_task *queue, *queue_tail;
  struct gateway_ref **refs;
  size_t n_refs;
  unsigned n_solves;
  unsigned n_requested; /* LLBBridge.Solve calls taken (GATEWAY_MAX_SOLVES) */
  bool returned;
  bool finished; /* gateway_solve_run left: no more solves */
  char *return_ref;
  struct image_config *return_config;
  int return_code;
  char *return_msg;
  struct gateway_build *next; /* registry list */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t registry_cond = PTHREAD_COND_INITIALIZER;
static struct gateway_build *registry;

static struct solve_cache_entry *
caches_copy (const struct solve_cache_entry *src, size_t n)
{
  struct solve_cache_entry *v = xcalloc (n + 1, sizeof *v);
  for (size_t i = 0; i < n; i++)
    {
      v[i].type = xstrdup (src[i].type);
      v[i].attrs.n = src[i].attrs.n;
      v[i].attrs.kv = xcalloc (2 * src[i].attrs.n + 1, sizeof (char *));
      for (size_t k = 0; k < 2 * src[i].attrs.n; k++)
        v[i].attrs.kv[k] = xstrdup (src[i].attrs.kv[k]);
    }
  return v;
}

static void
caches_free (struct solve_cache_entry *v, size_t n)
{
  for (size_t i = 0; v && i < n; i++)
    {
      free (v[i].type);
      ps_strv_free_raw (v[i].attrs.kv);
    }
  free (v);
}

/* Append copies of `add` to a request's list. */
static void
caches_append (struct solve_cache_entry **list, size_t *n, const struct solve_cache_entry *add, size_t n_add)
{
  if (n_add == 0)
    return;
  struct solve_cache_entry *copy = caches_copy (add, n_add);
  *list = xrealloc (*list, (*n + n_add + 1) * sizeof **list);
  memcpy (*list + *n, copy, n_add * sizeof *copy);
  memset (*list + *n + n_add, 0, sizeof **list);
  *n += n_add;
  free (copy);
}

static void
task_free (struct gateway_task *t)
{
  if (t == NULL)
    return;
  schema_solve_request_free (&t->req);
  free (t->definition);
  for (size_t i = 0; i < t->n_inputs; i++)
    {
      free ((char *) t->inputs[i].name);
      free ((uint8_t *) t->inputs[i].definition);
    }
  free (t->inputs);
  ps_error_free (t->err);
  free (t->ref_id);
  free (t);
}

static void
ref_free (struct gateway_ref *r)
{
  if (r->root_fd >= 0)
    close (r->root_fd);
  buildah_wc_remove (&r->wc);
  free (r->id);
  free (r->image);
  free (r->def);
  free (r);
}

static void
build_free (struct gateway_build *b)
{
  for (size_t i = 0; i < b->n_refs; i++)
    ref_free (b->refs[i]);
  free (b->refs);
  for (size_t i = 0; i < b->n_inputs; i++)
    {
      free ((char *) b->inputs[i].name);
      free ((uint8_t *) b->inputs[i].definition);
    }
  free (b->inputs);
  caches_free (b->cache_imports, b->n_cache_imports);
  caches_free (b->cache_exports, b->n_cache_exports);
  for (size_t i = 0; i < b->n_sources; i++)
    {
      free (b->sources[i].name);
      free (b->sources[i].dir);
    }
  free (b->sources);
  if (b->job)
    solver_job_unref (b->job);
  ps_strv_free (&b->entitlements);
  free (b->id);
  free (b->session);
  free (b->job_dir);
  free (b->authfile);
  free (b->state_dir);
  free (b->return_ref);
  image_config_free (b->return_config);
  free (b->return_msg);
  pthread_mutex_destroy (&b->lock);
  pthread_mutex_destroy (&b->mount_lock);
  pthread_cond_destroy (&b->cond);
  free (b);
}

void
gateway_build_unref (gateway_build *b)
{
  if (b == NULL)
    return;
  pthread_mutex_lock (&registry_lock);
  bool last = --b->refcount == 0;
  b->last_call_ns = ps_now_ns ();
  pthread_mutex_unlock (&registry_lock);
  if (last)
    build_free (b);
}

gateway_build *
gateway_build_lookup (const char *build_id, int wait_ms)
{
  if (build_id == NULL || *build_id == '\0')
    return NULL;
  struct timespec deadline = ps_deadline_after_ms (CLOCK_REALTIME, wait_ms > 0 ? wait_ms : 0);
  pthread_mutex_lock (&registry_lock);
  for (;;)
    {
      for (struct gateway_build *b = registry; b; b = b->next)
        if (strcmp (b->id, build_id) == 0)
          {
            b->refcount++;
            b->last_call_ns = ps_now_ns ();
            pthread_mutex_unlock (&registry_lock);
            return b;
          }
      if (wait_ms <= 0 || pthread_cond_timedwait (&registry_cond, &registry_lock, &deadline) == ETIMEDOUT)
        break;
    }
  pthread_mutex_unlock (&registry_lock);
  return NULL;
}

solver_job *
gateway_build_job (gateway_build *b)
{
  return b->job;
}

const struct gateway_input *
gateway_build_inputs (gateway_build *b, size_t *n)
{
  *n = b->n_inputs;
  return b->inputs;
}

/* Under b->lock. */
static struct gateway_ref *
find_ref (gateway_build *b, const char *id)
{
  for (size_t i = 0; id && i < b->n_refs; i++)
    if (strcmp (b->refs[i]->id, id) == 0)
      return b->refs[i];
  return NULL;
}

static struct gateway_ref *
lookup_ref (gateway_build *b, const char *id, ps_error **err)
{
  pthread_mutex_lock (&b->lock);
  struct gateway_ref *r = find_ref (b, id);
  pthread_mutex_unlock (&b->lock);
  if (r == NULL)
    ps_error_set (err, 404, "no such ref \"%s\" in build %s", id ? id : "", b->id);
  return r;
}

int
gateway_build_ref_check (gateway_build *b, const char *ref_id, ps_error **err)
{
  return lookup_ref (b, ref_id, err) ? 0 : -1;
}

/* ---- the job thread --------------------------------------------------------- */

static bool
build_cancelled (gateway_build *b, const struct gateway_build_opts *o)
{
  if (solver_job_cancelled (b->job))
    return true;
  if (o->cancelled && o->cancelled (o->cancelled_ud))
    {
      solver_job_cancel (b->job, "the client went away");
      return true;
    }
  return false;
}

/* Solve one task on the job thread: the plan solve.c builds for /solve,
   with no exporters, in a directory of its own under the job's. */
static int
run_task (gateway_build *b, struct gateway_task *t, char **image, ps_error **err)
{
  unsigned n = ++b->n_solves;
  cleanup_free char *dir = xasprintf ("%s/gateway-%u", b->job_dir, n);
  if (ps_mkdir_p (dir, 0700, err) < 0)
    return -1;
  struct solve_env env = {
    .job_dir = dir,
    .sources = b->sources,
    .n_sources = b->n_sources,
    .authfile = b->authfile,
    .state_dir = b->state_dir,
    .max_context_bytes = b->max_context_bytes,
    .definition = t->definition,
    .definition_len = t->definition_len,
  };
  if (t->req.frontend && strcmp (t->req.frontend, "gateway.v0") == 0)
    {
      /* A nested frontend: its image gets the opts but "source", the
         build's sources, session and caches. */
      const struct solve_attrs *a = &t->req.frontend_attrs;
      struct solve_attrs opts = { xcalloc (2 * a->n + 1, sizeof (char *)), 0 };
      for (size_t i = 0; i < a->n; i++)
        if (strcmp (a->kv[2 * i], "source") != 0)
          {
            opts.kv[2 * opts.n] = a->kv[2 * i];
            opts.kv[2 * opts.n + 1] = a->kv[2 * i + 1];
            opts.n++;
          }
      struct frontend_image_req fr = {
        .image = solve_attrs_get (a, "source"),
        .resolve_mode = solve_attrs_get (a, "image-resolve-mode"),
        .opts = &opts,
        .sources = b->sources,
        .n_sources = b->n_sources,
        .session = t->req.source_session ? t->req.source_session : b->session,
        .entitlements = &b->entitlements,
        .job_dir = dir,
        .authfile = b->authfile,
        .state_dir = b->state_dir,
        .max_context_bytes = b->max_context_bytes,
        .cache_imports = b->cache_imports,
        .n_cache_imports = b->n_cache_imports,
        .cache_exports = b->cache_exports,
        .n_cache_exports = b->n_cache_exports,
        .inputs = t->inputs,
        .n_inputs = t->n_inputs,
      };
      /* The build's running slot (the job defers it): solve_plan_build
         takes it for the other solves. */
      int r = solver_job_take_slot (b->job, err) < 0 ? -1 : frontend_image_run (b->job, &fr, image, err);
      free (opts.kv);
      return r;
    }
  if (t->req.frontend)
    {
      caches_append (&t->req.cache_imports, &t->req.n_cache_imports, b->cache_imports, b->n_cache_imports);
      caches_append (&t->req.cache_exports, &t->req.n_cache_exports, b->cache_exports, b->n_cache_exports);
    }
  struct solve_plan *plan = NULL;
  if (solve_plan_new (&t->req, &env, &plan, err) < 0)
    return -1;
  int r = solve_plan_build (b->job, plan, image, err);
  solve_plan_free (plan);
  return r;
}

static void
add_ref (gateway_build *b, struct gateway_task *t, char *image)
{
  struct gateway_ref *r = xcalloc (1, sizeof *r);
  char hex[17];
  ps_random_hex (hex, 8);
  r->id = xasprintf ("%s-%zu", hex, b->n_refs);
  r->image = image;
  r->root_fd = -1;
  if (t->definition)
    {
      r->def = xmalloc (t->definition_len ? t->definition_len : 1);
      memcpy (r->def, t->definition, t->definition_len);
      r->def_len = t->definition_len;
    }
  /* under b->lock */
  b->refs = xrealloc (b->refs, (b->n_refs + 1) * sizeof *b->refs);
  b->refs[b->n_refs++] = r;
  t->ref_id = xstrdup (r->id);
}

static void
registry_add (gateway_build *b)
{
  b->next = registry;
  registry = b;
  pthread_cond_broadcast (&registry_cond);
}

static void
registry_remove (gateway_build *b)
{
  pthread_mutex_lock (&registry_lock);
  for (struct gateway_build **pp = &registry; *pp; pp = &(*pp)->next)
    if (*pp == b)
      {
        *pp = b->next;
        break;
      }
  pthread_mutex_unlock (&registry_lock);
}

/* google.rpc codes to the HTTP statuses ps_error carries (grpc_call_finish_error
   maps them back). */
static int
rpc_code_status (int code)
{
  switch (code)
    {
    case 1: /* CANCELLED */
      return 499;
    case 3: /* INVALID_ARGUMENT */
    case 11: /* OUT_OF_RANGE */
      return 400;
    case 5: /* NOT_FOUND */
      return 404;
    case 6: /* ALREADY_EXISTS */
    case 9: /* FAILED_PRECONDITION */
      return 409;
    case 8: /* RESOURCE_EXHAUSTED */
      return 413;
    case 12: /* UNIMPLEMENTED */
      return 501;
    case 14: /* UNAVAILABLE */
      return 503;
    default:
      return 500;
    }
}

int
gateway_solve_run (const char *build_id, const struct gateway_build_opts *opts, solver_job *job,
                   char **result_image, ps_error **err)
{
  *result_image = NULL;
  if (build_id == NULL || *build_id == '\0')
    return ps_error_set (err, 400, "a client-side gateway build needs a ref");
  gateway_build *b = xcalloc (1, sizeof *b);
  b->id = xstrdup (build_id);
  b->refcount = 1;
  pthread_mutex_init (&b->lock, NULL);
  pthread_mutex_init (&b->mount_lock, NULL);
  pthread_cond_init (&b->cond, NULL);
  solver_job_ref (job);
  b->job = job;
  b->session = opts->session && *opts->session ? xstrdup (opts->session) : NULL;
  for (size_t i = 0; opts->entitlements && i < opts->entitlements->n; i++)
    ps_strv_push (&b->entitlements, opts->entitlements->v[i]);
  b->job_dir = xstrdup (opts->job_dir ? opts->job_dir : solver_job_dir (job));
  b->authfile = opts->authfile ? xstrdup (opts->authfile) : NULL;
  b->state_dir = opts->state_dir ? xstrdup (opts->state_dir) : NULL;
  b->max_context_bytes = opts->max_context_bytes;
  b->inputs = xcalloc (opts->n_inputs + 1, sizeof *b->inputs);
  for (size_t i = 0; i < opts->n_inputs; i++)
    {
      uint8_t *d = xmalloc (opts->inputs[i].len + 1);
      memcpy (d, opts->inputs[i].definition, opts->inputs[i].len);
      b->inputs[i].name = xstrdup (opts->inputs[i].name);
      b->inputs[i].definition = d;
      b->inputs[i].len = opts->inputs[i].len;
    }
  b->n_inputs = opts->n_inputs;
  b->cache_imports = caches_copy (opts->cache_imports, opts->n_cache_imports);
  b->n_cache_imports = opts->n_cache_imports;
  b->cache_exports = caches_copy (opts->cache_exports, opts->n_cache_exports);
  b->n_cache_exports = opts->n_cache_exports;
  b->sources = xcalloc (opts->n_sources + 1, sizeof *b->sources);
  for (size_t i = 0; i < opts->n_sources; i++)
    {
      b->sources[i].name = xstrdup (opts->sources[i].name);
      b->sources[i].dir = xstrdup (opts->sources[i].dir);
      b->sources[i].bytes = opts->sources[i].bytes;
    }
  b->n_sources = opts->n_sources;
  b->last_call_ns = ps_now_ns ();

  pthread_mutex_lock (&registry_lock);
  for (struct gateway_build *o = registry; o; o = o->next)
    if (strcmp (o->id, build_id) == 0)
      {
        pthread_mutex_unlock (&registry_lock);
        build_free (b);
        return ps_error_set (err, 409, "build %s is already running", build_id);
      }
  registry_add (b);
  pthread_mutex_unlock (&registry_lock);
  ps_debug ("gateway build %s: waiting for the client", build_id);

  int ret = 0;
  pthread_mutex_lock (&b->lock);
  for (;;)
    {
      if (b->returned)
        break;
      pthread_mutex_unlock (&b->lock);
      bool cancelled = build_cancelled (b, opts);
      pthread_mutex_lock (&b->lock);
      if (cancelled)
        {
          ret = ps_error_set (err, 499, "build %s cancelled", build_id);
          break;
        }
      if (b->queue == NULL && opts->alive)
        {
          pthread_mutex_unlock (&b->lock);
          ps_error *aerr = NULL;
          int alive = opts->alive (opts->alive_ud, &aerr);
          pthread_mutex_lock (&b->lock);
          if (alive < 0 && !b->returned && b->queue == NULL)
            {
              *err = aerr;
              ret = -1;
              break;
            }
          ps_error_free (aerr);
          if (b->returned)
            break;
        }
      if (b->queue == NULL && opts->idle_ms > 0)
        {
          pthread_mutex_lock (&registry_lock);
          bool idle = b->refcount == 1 && ps_now_ns () - b->last_call_ns > (int64_t) opts->idle_ms * 1000000;
          pthread_mutex_unlock (&registry_lock);
          if (idle)
            {
              ret = ps_error_set (err, 504, "the frontend made no call for %d s and returned no result",
                                  opts->idle_ms / 1000);
              break;
            }
        }
      if (b->queue)
        {
          struct gateway_task *t = b->queue;
          b->queue = t->next;
          if (b->queue == NULL)
            b->queue_tail = NULL;
          pthread_mutex_unlock (&b->lock);
          char *image = NULL;
          ps_error *terr = NULL;
          int r = run_task (b, t, &image, &terr);
          pthread_mutex_lock (&b->lock);
          t->ret = r;
          t->err = terr;
          if (r == 0)
            add_ref (b, t, image);
          else
            free (image);
          t->done = true;
          if (t->abandoned)
            task_free (t);
          pthread_cond_broadcast (&b->cond);
          pthread_mutex_lock (&registry_lock);
          b->last_call_ns = ps_now_ns ();
          pthread_mutex_unlock (&registry_lock);
          continue;
        }
      struct timespec ts = ps_deadline_after_ms (CLOCK_REALTIME, GATEWAY_POLL_MS);
      pthread_cond_timedwait (&b->cond, &b->lock, &ts);
    }
  b->finished = true;
  /* Solves still queued will never run. */
  while (b->queue)
    {
      struct gateway_task *t = b->queue;
      b->queue = t->next;
      t->ret = ps_error_set (&t->err, 409, "build %s has ended", build_id);
      t->done = true;
      if (t->abandoned)
        task_free (t);
    }
  b->queue_tail = NULL;
  pthread_cond_broadcast (&b->cond);
  if (ret == 0 && b->return_code != 0)
    ret = ps_error_set (err, rpc_code_status (b->return_code), "%s",
                        b->return_msg && *b->return_msg ? b->return_msg : "the frontend returned an error");
  else if (ret == 0 && b->return_ref)
    {
      struct gateway_ref *r = find_ref (b, b->return_ref);
      *result_image = xstrdup (r->image);
    }
  struct image_config *cfg = ret == 0 && *result_image ? steal_pointer (&b->return_config) : NULL;
  pthread_mutex_unlock (&b->lock);
  if (cfg)
    {
      /* The client-side frontend's image config, as BuildKit's exporter
         takes it from the result's metadata. */
      char *configured = NULL;
      bool cached = false;
      ret = image_config_apply (cfg, *result_image, b->state_dir, &configured, &cached, err);
      image_config_free (cfg);
      free (*result_image);
      *result_image = ret == 0 ? configured : NULL;
      if (ret < 0)
        ps_error_wrap (err, "containerimage.config");
    }
  registry_remove (b);
  ps_debug ("gateway build %s: %s", build_id, ret == 0 ? "returned" : (*err)->msg);
  gateway_build_unref (b);
  return ret;
}

/* ---- as a solve plan's frontend ------------------------------------------------ */

struct gateway_frontend
{
  char *build_id;
  struct gateway_build_opts opts; /* every pointer below owned */
  ps_strv entitlements;
};

void *
gateway_frontend_new (const char *build_id, const struct gateway_build_opts *o)
{
  struct gateway_frontend *f = xcalloc (1, sizeof *f);
  f->build_id = xstrdup (build_id ? build_id : "");
  f->opts = *o;
  f->opts.session = o->session ? xstrdup (o->session) : NULL;
  for (size_t i = 0; o->entitlements && i < o->entitlements->n; i++)
    ps_strv_push (&f->entitlements, o->entitlements->v[i]);
  f->opts.entitlements = &f->entitlements;
  f->opts.job_dir = o->job_dir ? xstrdup (o->job_dir) : NULL;
  f->opts.authfile = o->authfile ? xstrdup (o->authfile) : NULL;
  f->opts.state_dir = o->state_dir ? xstrdup (o->state_dir) : NULL;
  struct gateway_input *in = xcalloc (o->n_inputs + 1, sizeof *in);
  for (size_t i = 0; i < o->n_inputs; i++)
    {
      uint8_t *d = xmalloc (o->inputs[i].len + 1);
      memcpy (d, o->inputs[i].definition, o->inputs[i].len);
      in[i].name = xstrdup (o->inputs[i].name);
      in[i].definition = d;
      in[i].len = o->inputs[i].len;
    }
  f->opts.inputs = in;
  f->opts.cache_imports = caches_copy (o->cache_imports, o->n_cache_imports);
  f->opts.cache_exports = caches_copy (o->cache_exports, o->n_cache_exports);
  return f;
}

void
gateway_frontend_free (void *ud)
{
  struct gateway_frontend *f = ud;
  if (f == NULL)
    return;
  free (f->build_id);
  free ((char *) f->opts.session);
  free ((char *) f->opts.job_dir);
  free ((char *) f->opts.authfile);
  free ((char *) f->opts.state_dir);
  for (size_t i = 0; i < f->opts.n_inputs; i++)
    {
      free ((char *) f->opts.inputs[i].name);
      free ((uint8_t *) f->opts.inputs[i].definition);
    }
  free ((struct gateway_input *) f->opts.inputs);
  caches_free ((struct solve_cache_entry *) f->opts.cache_imports, f->opts.n_cache_imports);
  caches_free ((struct solve_cache_entry *) f->opts.cache_exports, f->opts.n_cache_exports);
  ps_strv_free (&f->entitlements);
  free (f);
}

int
gateway_frontend_run (solver_job *job, void *ud, char **image_id, ps_error **err)
{
  struct gateway_frontend *f = ud;
  struct gateway_build_opts o = f->opts;
  return gateway_solve_run (f->build_id, &o, job, image_id, err);
}

/* ---- LLBBridge.Solve / Return ------------------------------------------------ */

static void
copy_attrs (struct solve_attrs *dst, const struct solve_attrs *src)
{
  dst->n = src ? src->n : 0;
  dst->kv = xcalloc (2 * dst->n + 1, sizeof (char *));
  for (size_t i = 0; i < 2 * dst->n; i++)
    dst->kv[i] = xstrdup (src->kv[i]);
}

/* FrontendOpt as Control.Solve's FrontendAttrs are taken: the client's
   bookkeeping dropped, local-sessionid:* naming the sources' session. */
static void
copy_frontend_opt (struct solve_request *r, const struct solve_attrs *src)
{
  size_t n = src ? src->n : 0;
  r->frontend_attrs.kv = xcalloc (2 * n + 1, sizeof (char *));
  r->frontend_attrs.n = 0;
  const char *source = NULL;
  for (size_t i = 0; i < n; i++)
    {
      const char *k = src->kv[2 * i], *v = src->kv[2 * i + 1];
      if (strcmp (k, "local-sessionid:context") == 0 || (source == NULL && strcmp (k, "local-sessionid:dockerfile") == 0))
        source = v;
      if (schema_control_frontend_attr_dropped (k))
        continue;
      r->frontend_attrs.kv[2 * r->frontend_attrs.n] = xstrdup (k);
      r->frontend_attrs.kv[2 * r->frontend_attrs.n + 1] = xstrdup (v);
      r->frontend_attrs.n++;
    }
  if (source && *source && (r->session == NULL || strcmp (source, r->session) != 0))
    r->source_session = xstrdup (source);
}

int
gateway_build_solve (gateway_build *b, const struct gateway_solve_req *req, bool (*cancelled) (void *ud), void *ud,
                     char **ref_id, ps_error **err)
{
  *ref_id = NULL;
  bool frontend = req->frontend && *req->frontend;
  if (frontend && req->definition_len)
    return ps_error_set (err, 400, "SolveRequest: Definition and Frontend are exclusive");
  bool gateway = frontend && strcmp (req->frontend, "gateway.v0") == 0;
  if (frontend && !gateway && strcmp (req->frontend, "dockerfile.v0") != 0)
    return ps_error_set (err, 400, "SolveRequest.Frontend: \"%s\" is not supported (supported: dockerfile.v0, "
                                   "gateway.v0)", req->frontend);
  if (gateway && !(req->frontend_opt && solve_attrs_get (req->frontend_opt, "source") && *solve_attrs_get (req->frontend_opt, "source")))
    return ps_error_set (err, 400, "SolveRequest.FrontendOpt: gateway.v0 needs \"source\", the frontend image");
  if (!frontend && req->definition_len == 0)
    return 0; /* nothing to solve: an empty result (BuildKit does the same) */

  struct gateway_task *t = xcalloc (1, sizeof *t);
  t->req.ref = xstrdup (b->id);
  if (frontend)
    t->req.frontend = xstrdup (req->frontend);
  else
    {
      t->req.has_definition = true;
      t->definition = xmalloc (req->definition_len);
      memcpy (t->definition, req->definition, req->definition_len);
      t->definition_len = req->definition_len;
    }
  t->req.n_cache_imports = req->n_cache_imports;
  t->req.cache_imports = xcalloc (req->n_cache_imports + 1, sizeof *t->req.cache_imports);
  for (size_t i = 0; i < req->n_cache_imports; i++)
    {
      t->req.cache_imports[i].type = xstrdup (req->cache_imports[i].type);
      copy_attrs (&t->req.cache_imports[i].attrs, &req->cache_imports[i].attrs);
    }
  t->req.session = b->session ? xstrdup (b->session) : NULL;
  copy_frontend_opt (&t->req, req->frontend_opt);
  t->inputs = xcalloc (req->n_inputs + 1, sizeof *t->inputs);
  for (size_t i = 0; i < req->n_inputs; i++)
    {
      uint8_t *d = xmalloc (req->inputs[i].len + 1);
      memcpy (d, req->inputs[i].definition, req->inputs[i].len);
      t->inputs[i] = (struct gateway_input){ xstrdup (req->inputs[i].name), d, req->inputs[i].len };
    }
  t->n_inputs = req->n_inputs;
  for (size_t i = 0; i < b->entitlements.n; i++)
    ps_strv_push (&t->req.entitlements, b->entitlements.v[i]);

  pthread_mutex_lock (&b->lock);
  if (b->finished || b->returned)
    {
      pthread_mutex_unlock (&b->lock);
      task_free (t);
      return ps_error_set (err, 409, "build %s has ended", b->id);
    }
  if (++b->n_requested > GATEWAY_MAX_SOLVES)
    {
      pthread_mutex_unlock (&b->lock);
      task_free (t);
      return ps_error_set (err, 413, "build %s: more than %d solves asked for", b->id, GATEWAY_MAX_SOLVES);
    }
  if (b->queue_tail)
    b->queue_tail->next = t;
  else
    b->queue = t;
  b->queue_tail = t;
  pthread_cond_broadcast (&b->cond);
  while (!t->done)
    {
      pthread_mutex_unlock (&b->lock);
      bool gone = cancelled && cancelled (ud);
      pthread_mutex_lock (&b->lock);
      if (gone && !t->done)
        {
          /* The client vanished mid-solve: BuildKit cancels the build. */
          t->abandoned = true;
          pthread_mutex_unlock (&b->lock);
          solver_job_cancel (b->job, "the gateway client went away");
          return ps_error_set (err, 499, "solve cancelled: the client went away");
        }
      if (t->done)
        break;
      struct timespec ts = ps_deadline_after_ms (CLOCK_REALTIME, GATEWAY_POLL_MS);
      pthread_cond_timedwait (&b->cond, &b->lock, &ts);
    }
  pthread_mutex_unlock (&b->lock);
  int ret = t->ret;
  if (ret == 0)
    *ref_id = steal_pointer (&t->ref_id);
  else
    {
      *err = t->err;
      t->err = NULL;
    }
  task_free (t);
  return ret;
}

int
gateway_build_return (gateway_build *b, const char *ref_id, int code, const char *message,
                      const char *image_config, ps_error **err)
{
  struct image_config *cfg = NULL;
  if (code == 0 && image_config && *image_config && image_config_parse (image_config, &cfg, err) < 0)
    return ps_error_wrap (err, "Result.metadata containerimage.config");
  pthread_mutex_lock (&b->lock);
  int ret = 0;
  if (b->finished || b->returned)
    ret = ps_error_set (err, 409, "build %s has already ended", b->id);
  else if (code == 0 && ref_id && *ref_id && find_ref (b, ref_id) == NULL)
    ret = ps_error_set (err, 404, "no such ref \"%s\" in build %s", ref_id, b->id);
  else
    {
      b->returned = true;
      b->return_code = code;
      b->return_msg = message ? xstrdup (message) : NULL;
      b->return_ref = code == 0 && ref_id && *ref_id ? xstrdup (ref_id) : NULL;
      b->return_config = cfg;
      cfg = NULL;
      pthread_cond_broadcast (&b->cond);
    }
  pthread_mutex_unlock (&b->lock);
  image_config_free (cfg);
  return ret;
}

/* ---- reading a ref's files ------------------------------------------------------ */

/* The ref's root file system, mounted on first use (O_PATH descriptor,
   borrowed: it lives as long as the build). */
static int
ref_root (gateway_build *b, const char *ref_id, ps_error **err)
{
  struct gateway_ref *r = lookup_ref (b, ref_id, err);
  if (r == NULL)
    return -1;
  pthread_mutex_lock (&b->mount_lock);
  if (r->root_fd < 0)
    {
      if (buildah_wc_from (r->image, NULL, true, &r->wc, err) < 0)
        {
          pthread_mutex_unlock (&b->mount_lock);
          return ps_error_wrap (err, "mount ref %s", ref_id);
        }
      r->root_fd = open (r->wc.mnt, O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (r->root_fd < 0)
        {
          int e = errno;
          buildah_wc_remove (&r->wc);
          pthread_mutex_unlock (&b->mount_lock);
          return ps_error_set_errno (err, 500, e, "open the root of ref %s", ref_id);
        }
    }
  int fd = r->root_fd;
  pthread_mutex_unlock (&b->mount_lock);
  return fd;
}

/* Open `path` below `root` as if `root` were "/": "..", absolute symlinks
   and the like never leave it. */
static int
open_in_root (int root, const char *path, int flags, ps_error **err)
{
  const char *rel = path;
  while (*rel == '/')
    rel++;
  if (*rel == '\0')
    rel = ".";
  struct open_how how = { .flags = (uint64_t) (flags | O_CLOEXEC),
                          .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
  int fd = (int) syscall (SYS_openat2, root, rel, &how, sizeof how);
  if (fd < 0)
    return ps_error_set_errno (err, errno == ENOENT || errno == ENOTDIR ? 404 : 400, errno, "%s", path);
  return fd;
}

static void
fill_stat (Fsutil__Types__Stat *st, const char *name, const struct stat *sb, const char *linkname)
{
  fsutil__types__stat__init (st);
  st->path = xstrdup (name);
  st->mode = filesend_go_mode (sb->st_mode);
  st->uid = sb->st_uid;
  st->gid = sb->st_gid;
  st->size = S_ISREG (sb->st_mode) ? sb->st_size : 0;
  st->modtime = (int64_t) sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
  st->linkname = xstrdup (linkname ? linkname : "");
  if (S_ISCHR (sb->st_mode) || S_ISBLK (sb->st_mode))
    {
      st->devmajor = major (sb->st_rdev);
      st->devminor = minor (sb->st_rdev);
    }
}

void
gateway_stat_free (Fsutil__Types__Stat *st)
{
  if (st == NULL)
    return;
  if (st->path != protobuf_c_empty_string)
    free (st->path);
  if (st->linkname != protobuf_c_empty_string)
    free (st->linkname);
}

static const char *
base_name (const char *path)
{
  size_t n = strlen (path);
  while (n > 1 && path[n - 1] == '/')
    n--;
  const char *end = path + n;
  const char *s = end;
  while (s > path && s[-1] != '/')
    s--;
  static __thread char buf[256];
  size_t len = (size_t) (end - s);
  if (len == 0)
    return "/";
  if (len >= sizeof buf)
    len = sizeof buf - 1;
  memcpy (buf, s, len);
  buf[len] = '\0';
  return buf;
}

int
gateway_ref_read_file (gateway_build *b, const char *ref_id, const char *path, bool has_range, int64_t offset,
                       int64_t length, size_t max, ps_buf *out, ps_error **err)
{
  int root = ref_root (b, ref_id, err);
  if (root < 0)
    return -1;
  return gateway_root_read_file (root, path, has_range, offset, length, max, out, err);
}

int
gateway_root_read_file (int root, const char *path, bool has_range, int64_t offset, int64_t length, size_t max,
                        ps_buf *out, ps_error **err)
{
  if (has_range && (offset < 0 || length < 0))
    return ps_error_set (err, 400, "ReadFile %s: negative range", path);
  cleanup_close int fd = open_in_root (root, path, O_RDONLY, err);
  if (fd < 0)
    return ps_error_wrap (err, "ReadFile");
  struct stat sb;
  if (fstat (fd, &sb) < 0)
    return ps_error_set_errno (err, 500, errno, "ReadFile %s", path);
  if (S_ISDIR (sb.st_mode))
    return ps_error_set (err, 400, "ReadFile %s: is a directory", path);
  uint64_t want = has_range ? (uint64_t) length : (uint64_t) sb.st_size;
  if (!has_range && want > max)
    return ps_error_set (err, 413, "ReadFile %s: %llu bytes is more than the %zu a response may carry", path,
                         (unsigned long long) want, max);
  if (want > max)
    want = max + 1;
  char chunk[65536];
  int64_t pos = has_range ? offset : 0;
  while (out->len < want)
    {
      size_t n = want - out->len < sizeof chunk ? (size_t) (want - out->len) : sizeof chunk;
      ssize_t r = pread (fd, chunk, n, pos);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return ps_error_set_errno (err, 500, errno, "ReadFile %s", path);
      if (r == 0)
        break;
      ps_buf_append (out, chunk, (size_t) r);
      pos += r;
    }
  if (out->len > max)
    return ps_error_set (err, 413, "ReadFile %s: the range is more than the %zu bytes a response may carry", path,
                         max);
  return 0;
}

int
gateway_ref_stat (gateway_build *b, const char *ref_id, const char *path, Fsutil__Types__Stat *st, ps_error **err)
{
  int root = ref_root (b, ref_id, err);
  if (root < 0)
    return -1;
  return gateway_root_stat (root, path, st, err);
}

int
gateway_root_stat (int root, const char *path, Fsutil__Types__Stat *st, ps_error **err)
{
  cleanup_close int fd = open_in_root (root, path, O_PATH, err);
  if (fd < 0)
    return ps_error_wrap (err, "StatFile");
  struct stat sb;
  if (fstat (fd, &sb) < 0)
    return ps_error_set_errno (err, 500, errno, "StatFile %s", path);
  fill_stat (st, base_name (path), &sb, NULL);
  return 0;
}

int
gateway_ref_read_dir (gateway_build *b, const char *ref_id, const char *dir, const char *include_pattern,
                      Fsutil__Types__Stat ***entries, size_t *n, ps_error **err)
{
  *entries = NULL;
  *n = 0;
  int root = ref_root (b, ref_id, err);
  if (root < 0)
    return -1;
  return gateway_root_read_dir (root, dir, include_pattern, entries, n, err);
}

int
gateway_root_read_dir (int root, const char *dir, const char *include_pattern, Fsutil__Types__Stat ***entries,
                       size_t *n, ps_error **err)
{
  *entries = NULL;
  *n = 0;
  cleanup_close int fd = open_in_root (root, dir, O_RDONLY | O_DIRECTORY, err);
  if (fd < 0)
    return ps_error_wrap (err, "ReadDir");
  ps_strv names = { 0 };
  const char *step = NULL;
  if (ps_list_dir_at (fd, true, &names, &step) < 0)
    {
      int e = errno;
      ps_strv_free (&names);
      return ps_error_set_errno (err, 500, e, "ReadDir %s: %s", dir, step);
    }
  Fsutil__Types__Stat **v = xcalloc (names.n + 1, sizeof *v);
  size_t k = 0;
  for (size_t i = 0; i < names.n; i++)
    {
      const char *name = names.v[i];
      if (include_pattern && *include_pattern && fnmatch (include_pattern, name, FNM_PERIOD) != 0)
        continue;
      struct stat sb;
      if (fstatat (fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
        continue; /* gone meanwhile */
      char link[4096];
      ssize_t ln = 0;
      if (S_ISLNK (sb.st_mode) && (ln = readlinkat (fd, name, link, sizeof link - 1)) < 0)
        ln = 0;
      link[ln] = '\0';
      v[k] = xmalloc (sizeof **v);
      fill_stat (v[k], name, &sb, S_ISLNK (sb.st_mode) ? link : NULL);
      k++;
    }
  ps_strv_free (&names);
  *entries = v;
  *n = k;
  return 0;
}

void
gateway_build_warn (gateway_build *b, const char *vertex, int64_t level, const char *short_msg,
                    const char *const *details, const char *url)
{
  solver_job_emit_warning (b->job, vertex, level, short_msg, details, url);
}

/* ---- images ---------------------------------------------------------------------- */

int
gateway_resolve_image_config (gateway_build *b, const char *ref, const char *mode, char **digest, char **config,
                              ps_error **err)
{
  *digest = *config = NULL;
  if (ref == NULL || *ref == '\0' || ref[0] == '-')
    return ps_error_set (err, 400, "ResolveImageConfig: \"%s\" is not an image reference", ref ? ref : "");
  bool local = mode && strcmp (mode, "local") == 0;
  bool always = mode && strcmp (mode, "pull") == 0;
  if (mode && *mode && !local && !always && strcmp (mode, "default") != 0)
    return ps_error_set (err, 400, "ResolveImageConfig: ResolveMode \"%s\" (supported: default, pull, local)", mode);
  cleanup_free char *id = NULL;
  ps_error *lerr = NULL;
  if (!always && (buildah_image_id (ref, &id, &lerr) < 0 || id == NULL || *id == '\0'))
    {
      free (id);
      id = NULL;
    }
  ps_error_free (lerr);
  if (id == NULL)
    {
      if (local)
        return ps_error_set (err, 404, "ResolveImageConfig: image \"%s\" is not in storage (ResolveMode local)", ref);
      ps_strv argv = { 0 };
      ps_strv_push (&argv, "pull");
      ps_strv_push (&argv, "--quiet");
      if (b->authfile)
        ps_strv_pushf (&argv, "--authfile=%s", b->authfile);
      ps_strv_push (&argv, ref);
      int r = buildah_call ((const char *const *) argv.v, NULL, err);
      ps_strv_free (&argv);
      if (r < 0 || buildah_image_id (ref, &id, err) < 0)
        return ps_error_wrap (err, "ResolveImageConfig %s", ref);
      if (id == NULL || *id == '\0')
        return ps_error_set (err, 404, "ResolveImageConfig: image \"%s\" not found", ref);
    }
  /* buildah's inspect document: OCIv1 is the image config as stored. */
  cleanup_free char *out = NULL;
  const char *const args[] = { "inspect", "--type=image", id, NULL };
  if (buildah_call (args, &out, err) < 0)
    return ps_error_wrap (err, "ResolveImageConfig %s", ref);
  cleanup_cjson cJSON *root = cJSON_Parse (out);
  const cJSON *oci = cJSON_GetObjectItemCaseSensitive (root, "OCIv1");
  if (!cJSON_IsObject (oci))
    return ps_error_set (err, 500, "ResolveImageConfig %s: buildah inspect gave no OCIv1 config", ref);
  *config = cJSON_PrintUnformatted (oci);
  const cJSON *d = cJSON_GetObjectItemCaseSensitive (root, "FromImageDigest");
  *digest = xstrdup (cJSON_IsString (d) ? d->valuestring : "");
  return 0;
}

/* ---- the frontend stdio server ---------------------------------------------------- */

static gateway_bridge_serve_fn bridge_server;

void
gateway_set_bridge_server (gateway_bridge_serve_fn fn)
{
  bridge_server = fn;
}

gateway_bridge_serve_fn
gateway_bridge_server (void)
{
  return bridge_server;
}

struct gateway_input
gateway_input_pack (const char *name, const Pb__Definition *d)
{
  size_t len = d ? pb__definition__get_packed_size (d) : 0;
  uint8_t *buf = xmalloc (len + 1);
  if (d)
    pb__definition__pack (d, buf);
  return (struct gateway_input){ .name = name, .definition = buf, .len = len };
}
