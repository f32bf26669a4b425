/* build.c — run `buildah build` for a job and turn its output
 * into events (line shapes: buildah_output.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/build.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "solver/buildah.h"
#include "solver/cache_registry.h"
#include "solver/context.h"
#include "solver/frontend_image.h"
#include "solver/orphans.h"
#include "solver/runc_state.h"
#include "solver/dockerfile/buildah_output.h"
#include "solver/dockerfile/parse.h"
#include "solver/dockerfile/platforms.h"
#include "solver/dockerfile/scan.h"
#include "solver/dockerfile/result_cache.h"
#include "solver/session_io.h"
#include "solver/dockerfile/transfer.h"

/* The two [internal] vertices BuildKit shows before the first step. */
static void
emit_internal_vertices (solver_job *job, const struct dockerfile_build *b)
{
  int64_t now = ps_now_ns ();
  const char *names[2];
  cleanup_free char *def_name = xasprintf ("[internal] load build definition from %s",
                                           b->dockerfile_name ? b->dockerfile_name : "Dockerfile");
  names[0] = def_name;
  names[1] = "[internal] load build context";
  for (int i = 0; i < 2; i++)
    {
      cleanup_free char *material = xasprintf ("%s\n%s", b->definition_digest ? b->definition_digest : "", names[i]);
      char hex[65];
      ps_sha256_hex (material, strlen (material), hex);
      cleanup_free char *digest = xasprintf ("sha256:%s", hex);
      solver_job_emit_vertex (job, digest, names[i], NULL, now, now, false, NULL, NULL);
      if (i == 1 && b->context_bytes > 0)
        {
          struct solver_event st = { .kind = SOLVER_EV_STATUS };
          st.vertex = xstrdup (digest);
          st.status_id = xstrdup ("transferring context:");
          st.current = (int64_t) b->context_bytes;
          st.started_ns = now;
          st.completed_ns = now;
          solver_job_emit (job, &st);
        }
    }
}

struct line_reader
{
  bool from_stderr;
  ps_buf pending;
};

struct line_readers
{
  buildah_progress *progress;
  struct line_reader r[2]; /* stdout, stderr */
};

static void
flush_lines (struct line_reader *r, buildah_progress *p, bool at_eof)
{
  size_t start = 0;
  for (size_t i = 0; i < r->pending.len; i++)
    if (r->pending.data[i] == '\n')
      {
        buildah_progress_line (p, r->pending.data + start, i + 1 - start, r->from_stderr);
        start = i + 1;
      }
  size_t rest = r->pending.len - start;
  if (rest > 0 && (at_eof || rest >= PS_MAX_LOG_LINE))
    {
      buildah_progress_line (p, r->pending.data + start, rest, r->from_stderr);
      start = r->pending.len;
      rest = 0;
    }
  if (rest > 0)
    memmove (r->pending.data, r->pending.data + start, rest);
  r->pending.len = rest;
  if (r->pending.data)
    r->pending.data[rest] = '\0';
}

/* ps_child_pump's callback: buildah's output, line by line, into progress. */
static void
read_lines (void *ud, int stream, const char *data, size_t len)
{
  struct line_readers *lr = ud;
  struct line_reader *r = &lr->r[stream - 1];
  if (data)
    ps_buf_append (&r->pending, data, len);
  flush_lines (r, lr->progress, data == NULL);
}

static int frontend_build (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err);
static int buildah_build (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err);
static int run_buildah (solver_job *job, struct dockerfile_build *b, const char *platform, bool nocache,
                        char **image_id, ps_error **err);
static int build_platforms (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err);
static char *build_frontend (const struct dockerfile_build *b, const char *text, size_t len, char **syntax);

static void
cancel_child (void *data)
{
  pid_t pid = (pid_t) (intptr_t) data;
  ps_child_terminate (pid, PS_CANCEL_GRACE_MS);
}

/* "... exit status 3" at the end of buildah's message names the RUN's code. */
static int
exit_code_from_message (const char *msg)
{
  const char *p = msg ? strstr (msg, "exit status ") : NULL;
  return p ? atoi (p + 12) : 0;
}

int
dockerfile_frontend_run (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err)
{
  for (size_t i = 0; i < b->warnings.n; i++)
    solver_job_emit_warning (job, NULL, 1, b->warnings.v[i], NULL, NULL);
  if (b->session)
    {
      /* The sources come over the session: their [internal] vertices carry
         the real transfer statuses. */
      if (dockerfile_transfer_sources (job, b, err) < 0)
        {
          session_sources_release (b->session);
          struct solver_event ev = { .kind = SOLVER_EV_ERROR };
          ev.error = xstrdup ((*err)->msg);
          solver_job_emit (job, &ev);
          return -1;
        }
      /* Unchanged inputs: reuse the finished image instead of building. */
      cleanup_free char *df_text = NULL;
      cleanup_free char *key = NULL;
      size_t df_len = 0;
      if (b->opts.dockerfiles.n > 0 && dockerfile_read (b->opts.dockerfiles.v[0], &df_text, &df_len, NULL, NULL) == 0)
        {
          /* Built through a frontend image: which one (its id, so a new
             image of the same name builds anew) is part of the inputs. */
          cleanup_free char *frontend = build_frontend (b, df_text, df_len, NULL);
          cleanup_free char *frontend_id = NULL;
          if (frontend && buildah_image_id (frontend, &frontend_id, NULL) == 0)
            {
              char *with = xasprintf ("%s\n# podsolve frontend %s %s", df_text, frontend, frontend_id);
              free (df_text);
              df_text = with;
            }
          key = result_cache_key (b, df_text);
        }
      if (key && result_cache_lookup (job, b->session->state_dir, key, b, image_id) == 1)
        {
          session_sources_release (b->session);
          return 0;
        }
      size_t first_event = solver_job_event_count (job);
      int r = frontend_build (job, b, image_id, err);
      if (r == 0 && key)
        result_cache_store (job, b->session->state_dir, key, first_event, *image_id);
      session_sources_release (b->session);
      return r;
    }
  emit_internal_vertices (job, b);
  /* A context keyed from its tar (dockerfile_build_key_tar): a result
     recorded under that key is reused without unpacking anything. */
  size_t first_event = solver_job_event_count (job);
  if (b->tar_key && result_cache_lookup (job, b->state_dir, b->tar_key, b, image_id) == 1)
    {
      if (b->context_tar)
        ps_info ("job %s: build context tar not unpacked: the whole result was reused", solver_job_id (job));
      return 0;
    }
  int r = frontend_build (job, b, image_id, err);
  if (r == 0 && b->tar_key)
    result_cache_store (job, b->state_dir, b->tar_key, first_event, *image_id);
  return r;
}

int
dockerfile_build_key_tar (struct dockerfile_build *b, const char *tar, const char *const *dockerfiles, size_t n,
                          uint64_t max_context_bytes)
{
  struct ps_context_limits lim = { max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
  struct result_cache_tar t;
  if (result_cache_tar_read (tar, &lim, dockerfiles, n, &t) < 0)
    return 0;
  b->keyed_by_tar = true;
  b->tar_key = b->state_dir ? result_cache_tar_key (b, &t, false) : NULL;
  if (b->opts.cache_from.n > 0 || b->opts.cache_to.n > 0)
    b->tar_shared_key = result_cache_tar_key (b, &t, true);
  bool may_reuse = (b->tar_key && result_cache_has (b->state_dir, b->tar_key))
                   || (b->tar_shared_key && b->opts.cache_from.n > 0);
  if (may_reuse)
    {
      b->context_tar = xstrdup (tar);
      b->max_context_bytes = max_context_bytes;
      ps_strv_push (&b->opts.dockerfiles, t.dockerfile);
      free (b->dockerfile_name);
      b->dockerfile_name = xstrdup (t.dockerfile);
      char hex[65];
      ps_sha256_hex (t.text, t.len, hex);
      free (b->definition_digest);
      b->definition_digest = xstrdup (hex);
      b->dockerfile_bytes = steal_pointer (&t.text);
      b->dockerfile_len = t.len;
    }
  result_cache_tar_clear (&t);
  return may_reuse ? 1 : 0;
}

/* The context whose unpack dockerfile_build_key_tar put off, unpacked now
   that the build runs (its ignore rules applied, as the plan would have):
   0, or -1 with the ERROR event emitted. */
static int
unpack_deferred_context (solver_job *job, struct dockerfile_build *b, ps_error **err)
{
  if (b->context_tar == NULL)
    return 0;
  struct ps_context_limits lim = { b->max_context_bytes, PS_MAX_CONTEXT_ENTRIES };
  int r = context_extract_file (b->context_tar, b->opts.context_dir, &lim, NULL, err);
  if (r == 0)
    r = context_apply_ignore (b->opts.context_dir, b->opts.dockerfiles.v[0], NULL, err);
  unlink (b->context_tar);
  free (b->context_tar);
  b->context_tar = NULL;
  if (r < 0)
    {
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      ev.error = xstrdup ((*err)->msg);
      solver_job_emit (job, &ev);
      return -1;
    }
  return 0;
}

/* The Dockerfile as given (relative to the context, or absolute), malloc'd,
   or NULL when it is not at hand (a URL, inside a remote context). */
static char *
dockerfile_path (const struct dockerfile_build *b)
{
  if (b->opts.remote != NULL || b->opts.dockerfiles.n == 0 || strstr (b->opts.dockerfiles.v[0], "://") != NULL)
    return NULL;
  const char *df = b->opts.dockerfiles.v[0];
  return df[0] == '/' || b->opts.context_dir == NULL ? xstrdup (df) : xasprintf ("%s/%s", b->opts.context_dir, df);
}

/* The name the user knows: never a server path. */
static const char *
dockerfile_shown (const struct dockerfile_build *b)
{
  const char *shown = b->dockerfile_name && *b->dockerfile_name ? b->dockerfile_name : b->opts.dockerfiles.v[0];
  if (shown[0] == '/')
    shown = strrchr (shown, '/') + 1;
  return shown;
}

/* The value of build-arg BUILDKIT_SYNTAX, or NULL. */
static const char *
syntax_build_arg (const struct dockerfile_build *b)
{
  for (size_t i = 0; i < b->opts.build_args.n; i++)
    if (ps_str_has_prefix (b->opts.build_args.v[i], "BUILDKIT_SYNTAX="))
      return b->opts.build_args.v[i] + strlen ("BUILDKIT_SYNTAX=");
  return NULL;
}

/* The Dockerfile's text (NULL when not at hand or unreadable: buildah
   says what is wrong with it). */
static char *
dockerfile_text (const struct dockerfile_build *b, size_t *len)
{
  if (b->dockerfile_bytes)
    {
      char *text = xmalloc (b->dockerfile_len + 1);
      memcpy (text, b->dockerfile_bytes, b->dockerfile_len + 1);
      *len = b->dockerfile_len;
      return text;
    }
  cleanup_free char *path = dockerfile_path (b);
  char *text = NULL;
  if (path == NULL || dockerfile_read (path, &text, len, NULL, NULL) < 0)
    return NULL;
  return text;
}

/* The frontend image a BuildKit-mode build runs through (syntax
   build-arg, `# syntax=`, --dockerfile-frontend), or NULL for buildah;
   *syntax (may be NULL) gets the syntax line's or build-arg's value. */
static char *
build_frontend (const struct dockerfile_build *b, const char *text, size_t len, char **syntax)
{
  cleanup_free char *directive = text ? dockerfile_detect_syntax (text, len) : NULL;
  const char *arg = syntax_build_arg (b);
  if (syntax)
    *syntax = arg && *arg ? xstrdup (arg) : directive ? xstrdup (directive) : NULL;
  if (b->legacy)
    return NULL;
  return frontend_image_for_dockerfile (directive, arg, NULL);
}

int
dockerfile_build_check_dialect (const struct dockerfile_build *b, ps_error **err)
{
  size_t len = 0;
  cleanup_free char *text = dockerfile_text (b, &len);
  if (text == NULL)
    return 0;
  cleanup_free char *frontend = build_frontend (b, text, len, NULL);
  if (frontend)
    return 0; /* the frontend reads it: its dialect, its errors */
  cleanup_dockerfile dockerfile *parsed = NULL;
  if (dockerfile_parse (text, len, dockerfile_shown (b), &parsed, err) < 0)
    return -1;
  return dockerfile_check_buildah (parsed, dockerfile_shown (b), err);
}

/* The registries.conf the build's buildah reads: the per-build one in its
   environment (insecure cache registries), else the daemon's own. */
static struct cache_registry_access
cache_access (const struct build_options *o)
{
  struct cache_registry_access a = { .authfile = o->authfile };
  for (size_t i = 0; i < o->env.n; i++)
    if (ps_str_has_prefix (o->env.v[i], "CONTAINERS_REGISTRIES_CONF="))
      a.registries_conf = o->env.v[i] + strlen ("CONTAINERS_REGISTRIES_CONF=");
  return a;
}

static char *
strv_join (const ps_strv *v)
{
  ps_buf out = { 0 };
  for (size_t i = 0; i < v->n; i++)
    ps_buf_printf (&out, "%s%s", i ? "," : "", v->v[i]);
  return out.data ? out.data : xstrdup ("");
}

static void
attr_push (ps_strv *kv, const char *k, const char *v)
{
  ps_strv_push (kv, k);
  ps_strv_push (kv, v);
}

/* A Dockerfile build through a gateway frontend image: the build's
   options as the frontend attrs BuildKit's Dockerfile frontend reads, the
   transferred context and Dockerfile as its "context" and "dockerfile"
   local sources. */
static int
frontend_image_build (solver_job *job, struct dockerfile_build *b, const char *frontend, const char *syntax,
                      char **image_id, ps_error **err)
{
  const struct build_options *o = &b->opts;
  ps_strv kv = { 0 };
  struct solve_source sources[2 + 32];
  size_t n_sources = 0;
  ps_strv owned = { 0 }; /* strings the sources point at */
  cleanup_free char *path = dockerfile_path (b);
  if (syntax)
    {
      /* As BuildKit's forwardGateway: "cmdline" also tells a Dockerfile
         frontend not to look for a syntax line again. */
      attr_push (&kv, "source", frontend);
      attr_push (&kv, "cmdline", syntax);
    }
  if (path)
    {
      char *slash = strrchr (path, '/');
      attr_push (&kv, "filename", slash ? slash + 1 : path);
      ps_strv_push (&owned, slash ? "" : ".");
      if (slash)
        {
          free (owned.v[owned.n - 1]);
          owned.v[owned.n - 1] = xstrndup (path, (size_t) (slash - path));
        }
      sources[n_sources++] = (struct solve_source) { "dockerfile", owned.v[owned.n - 1], 0, NULL };
    }
  if (o->context_dir)
    sources[n_sources++] = (struct solve_source) { "context", o->context_dir, b->context_bytes, NULL };
  else if (o->remote)
    attr_push (&kv, "context", o->remote);
  if (o->target && *o->target)
    attr_push (&kv, "target", o->target);
  for (size_t i = 0; i < o->build_args.n; i++)
    {
      const char *eq = strchr (o->build_args.v[i], '=');
      if (eq == NULL)
        continue;
      cleanup_free char *k = xasprintf ("build-arg:%.*s", (int) (eq - o->build_args.v[i]), o->build_args.v[i]);
      attr_push (&kv, k, eq + 1);
    }
  for (size_t i = 0; i < o->labels.n; i++)
    {
      const char *eq = strchr (o->labels.v[i], '=');
      cleanup_free char *k = xasprintf ("label:%.*s", eq ? (int) (eq - o->labels.v[i]) : (int) strlen (o->labels.v[i]),
                                        o->labels.v[i]);
      attr_push (&kv, k, eq ? eq + 1 : "");
    }
  if (o->nocache)
    attr_push (&kv, "no-cache", "");
  if (o->platforms.n)
    {
      cleanup_free char *p = strv_join (&o->platforms);
      attr_push (&kv, "platform", p);
    }
  if (o->add_hosts.n)
    {
      ps_buf hosts = { 0 };
      for (size_t i = 0; i < o->add_hosts.n; i++)
        {
          const char *colon = strchr (o->add_hosts.v[i], ':');
          if (colon == NULL)
            continue;
          ps_buf_printf (&hosts, "%s%.*s=%s", hosts.len ? "," : "", (int) (colon - o->add_hosts.v[i]),
                         o->add_hosts.v[i], colon + 1);
        }
      attr_push (&kv, "add-hosts", hosts.data ? hosts.data : "");
      ps_buf_free (&hosts);
    }
  if (o->network && *o->network)
    attr_push (&kv, "force-network-mode", o->network);
  if (o->shm_size > 0)
    {
      cleanup_free char *v = xasprintf ("%lld", (long long) o->shm_size);
      attr_push (&kv, "shm-size", v);
    }
  if (o->ulimits.n)
    {
      cleanup_free char *v = strv_join (&o->ulimits);
      attr_push (&kv, "ulimit", v);
    }
  if (o->pull == BUILD_PULL_ALWAYS)
    attr_push (&kv, "image-resolve-mode", "pull");
  else if (o->pull == BUILD_PULL_NEVER)
    attr_push (&kv, "image-resolve-mode", "local");
  for (size_t i = 0; i < o->build_contexts.n; i++)
    {
      const char *nv = o->build_contexts.v[i], *eq = strchr (nv, '=');
      if (eq == NULL)
        continue;
      cleanup_free char *name = xstrndup (nv, (size_t) (eq - nv));
      cleanup_free char *k = xasprintf ("context:%s", name);
      if (eq[1] == '/' && n_sources < sizeof sources / sizeof sources[0])
        {
          /* a directory podsolve holds: a local source of that name */
          ps_strv_push (&owned, xstrdup (name));
          sources[n_sources++] = (struct solve_source) { owned.v[owned.n - 1], (char *) eq + 1, 0, NULL };
          cleanup_free char *v = xasprintf ("local:%s", name);
          attr_push (&kv, k, v);
        }
      else
        attr_push (&kv, k, eq + 1);
    }
  if (o->cache_from.n || o->cache_to.n)
    solver_job_emit_warning (job, NULL, 1,
                             "cache imports and exports are not used by builds through a gateway frontend yet "
                             "(podsolve's LLB engine keeps its own per-step cache)",
                             NULL, NULL);

  struct solve_attrs attrs = { kv.v, kv.n / 2 };
  const char *session = b->client_session;
  if (b->session)
    session = b->session->secrets_session_id ? b->session->secrets_session_id : b->session->session_id;
  struct frontend_image_req req = {
    .image = frontend,
    /* the frontend image is resolved as the build's images are */
    .resolve_mode = o->pull == BUILD_PULL_ALWAYS ? "pull" : o->pull == BUILD_PULL_NEVER ? "local" : NULL,
    .opts = &attrs,
    .sources = sources,
    .n_sources = n_sources,
    .session = session,
    .entitlements = &b->entitlements,
    .job_dir = solver_job_dir (job),
    .authfile = o->authfile,
    .state_dir = b->state_dir,
  };
  int r = frontend_image_run (job, &req, image_id, err);
  for (size_t i = 0; r == 0 && i < o->tags.n; i++)
    if (buildah_callv (NULL, err, "tag", *image_id, o->tags.v[i], NULL) < 0)
      r = ps_error_wrap (err, "tag %s", o->tags.v[i]);
  ps_strv_free (&kv);
  ps_strv_free (&owned);
  if (r < 0)
    {
      free (*image_id);
      *image_id = NULL;
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      ev.error = xstrdup ((*err)->msg);
      solver_job_emit (job, &ev);
      return -1;
    }
  return 0;
}

static int
frontend_build (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err)
{
  /* A job that deferred its running slot (a client-side gateway build)
     takes it here: its sources are in and no earlier result was reused. */
  if (solver_job_take_slot (job, err) < 0)
    return -1;
  {
    size_t len = 0;
    cleanup_free char *text = dockerfile_text (b, &len);
    cleanup_free char *syntax = NULL;
    cleanup_free char *frontend = build_frontend (b, text, len, &syntax);
    if (frontend)
      return unpack_deferred_context (job, b, err) < 0 ? -1
                                                         : frontend_image_build (job, b, frontend, syntax, image_id, err);
    if (syntax && b->legacy)
      {
        /* Docker's legacy builder ignores the line; so does this one, aloud. */
        cleanup_free char *msg
            = xasprintf ("syntax=%s is ignored: the classic build API builds with buildah's Dockerfile dialect; "
                         "build in BuildKit mode (docker buildx, DOCKER_BUILDKIT=1, POST /solve) to use that "
                         "frontend", syntax);
        solver_job_emit_warning (job, NULL, 1, msg, NULL, NULL);
      }
  }
  /* Files with the request, secrets and agents from the client's session. */
  struct session_sources *client = NULL;
  int ret = dockerfile_build_check_dialect (b, err);
  if (ret == 0 && b->session == NULL && b->client_session)
    {
      size_t len = 0;
      cleanup_free char *text = dockerfile_text (b, &len);
      if (text)
        ret = dockerfile_client_session_inputs (job, b, text, &client, err);
    }
  if (ret < 0)
    {
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      ev.error = xstrdup ((*err)->msg);
      solver_job_emit (job, &ev);
      return -1;
    }
  ret = buildah_build (job, b, image_id, err);
  session_sources_free (client);
  return ret;
}

/* The build's Dockerfile parsed, or NULL (not at hand, or buildah will say
   what is wrong with it). */
static dockerfile *
dockerfile_parsed (const struct dockerfile_build *b)
{
  size_t len = 0;
  cleanup_free char *text = dockerfile_text (b, &len);
  dockerfile *df = NULL;
  ps_error *perr = NULL;
  if (text == NULL || dockerfile_parse (text, len, "Dockerfile", &df, &perr) < 0)
    {
      ps_error_free (perr);
      return NULL;
    }
  return df;
}

/* A build whose whole result came from a shared cache: its steps, as
   buildah would have announced them, each reused. */
static void
replay_cached_steps (solver_job *job, const struct dockerfile_build *b, const char *repo)
{
  cleanup_dockerfile dockerfile *df = dockerfile_parsed (b);
  if (df == NULL)
    return;
  size_t first = 0;
  while (first < df->n_insns && strcmp (df->insns[first].keyword, "ARG") == 0)
    first++;
  size_t nstages = 0;
  for (size_t i = first; i < df->n_insns; i++)
    nstages += strcmp (df->insns[i].keyword, "FROM") == 0;
  buildah_progress *progress = buildah_progress_new (job, b->definition_digest);
  size_t stage = 0, step = 0, nsteps = 0;
  for (size_t i = first; i < df->n_insns; i++)
    {
      if (strcmp (df->insns[i].keyword, "FROM") == 0)
        {
          stage++;
          step = 0;
          nsteps = 1;
          while (i + nsteps < df->n_insns && strcmp (df->insns[i + nsteps].keyword, "FROM") != 0)
            nsteps++;
        }
      step++;
      cleanup_free char *line = nstages > 1 ? xasprintf ("[%zu/%zu] STEP %zu/%zu: %s", stage, nstages, step, nsteps,
                                                          df->insns[i].original)
                                            : xasprintf ("STEP %zu/%zu: %s", step, nsteps, df->insns[i].original);
      buildah_progress_line (progress, line, strlen (line), false);
      if (i + 1 == df->n_insns)
        {
          cleanup_free char *note = xasprintf ("the whole build's result, from cache %s\n", repo);
          solver_job_emit_log (job, buildah_progress_current_vertex (progress), 1, note, strlen (note), NULL);
        }
      buildah_progress_cached (progress, NULL);
    }
  buildah_progress_free (progress);
}

/* buildah build, its output as the job's progress; with a cache import, a
   result the same inputs left in that cache first (result_cache.h). */
static int
buildah_build (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err)
{
  struct cache_registry_access access = cache_access (&b->opts);
  cleanup_free char *shared = NULL;
  if (b->keyed_by_tar)
    shared = b->tar_shared_key ? xstrdup (b->tar_shared_key) : NULL;
  else if (b->opts.cache_from.n > 0 || b->opts.cache_to.n > 0)
    {
      size_t len = 0;
      cleanup_free char *text = dockerfile_text (b, &len);
      shared = text ? result_cache_shared_key (b, text) : NULL;
    }
  for (size_t i = 0; shared && i < b->opts.cache_from.n; i++)
    if (result_cache_shared_pull (b->opts.cache_from.v[i], shared, &access, &b->opts.tags, image_id) == 1)
      {
        ps_info ("job %s: the whole build's result is in cache %s: image %.12s", solver_job_id (job),
                 b->opts.cache_from.v[i], *image_id);
        replay_cached_steps (job, b, b->opts.cache_from.v[i]);
        if (b->context_tar)
          ps_info ("job %s: build context tar not unpacked: the whole result was reused", solver_job_id (job));
        return 0;
      }
  if (unpack_deferred_context (job, b, err) < 0)
    return -1;
  const ps_strv *imports = b->opts.cache_from_refs.n > 0 ? &b->opts.cache_from_refs : &b->opts.cache_from;
  for (size_t i = 0; i < imports->n; i++)
    cache_registry_import (job, imports->v[i], &access);

  int r = b->opts.platforms.n == 0 ? run_buildah (job, b, NULL, false, image_id, err)
                                   : build_platforms (job, b, image_id, err);
  ps_error *xerr = NULL;
  /* buildah 1.28 takes one --cache-to, the last: the result goes there too. */
  if (r == 0 && shared && b->opts.cache_to.n > 0
      && result_cache_shared_push (b->opts.cache_to.v[b->opts.cache_to.n - 1], shared, *image_id, &access, &xerr)
             < 0)
    {
      solver_job_emit_warning (job, NULL, 1, xerr->msg, NULL, NULL);
      ps_error_free (xerr);
    }
  return r;
}

/* While buildah starts, its first line when the Dockerfile says what it
   will be (dockerfile_buildah_first_step). */
static void
announce_first_step (const struct dockerfile_build *b, buildah_progress *progress)
{
  cleanup_dockerfile dockerfile *df = dockerfile_parsed (b);
  if (df == NULL)
    return;
  cleanup_free char *line = dockerfile_buildah_first_step (df);
  if (line)
    buildah_progress_announce (progress, line);
}

/* One `buildah build`: for every platform asked (platform NULL), or for
   `platform` alone and without the tags (one run of a multi-platform
   build); `nocache` forces --no-cache.  On failure the ERROR event is
   emitted here. */
static int
run_buildah (solver_job *job, struct dockerfile_build *b, const char *platform, bool nocache, char **image_id,
             ps_error **err)
{
  struct cache_registry_access access = cache_access (&b->opts);
  struct build_options one = b->opts; /* shallow: the argv only */
  char *platform_v[] = { (char *) platform, NULL };
  if (platform)
    {
      one.platforms = (ps_strv) { .v = platform_v, .n = 1 };
      if (b->opts.platforms.n > 1)
        one.tags = (ps_strv) { 0 };
    }
  one.nocache = one.nocache || nocache;
  ps_strv argv = { 0 };
  build_options_to_argv (&one, &argv);
  struct ps_child child;
  orphan_watch *watch = orphans_build_started (!b->opts.rm && !b->opts.forcerm);
  int ret = ps_child_spawn_env (argv.v, b->opts.env.v, &child, err);
  ps_strv_free (&argv);
  if (ret < 0)
    {
      orphans_build_ended (watch, false);
      return ps_error_wrap (err, "buildah build");
    }
  /* buildah killed from outside must not leave a RUN step running, nor
     runc's record of its container. */
  ps_child_watch_below_then (&child, runc_state_remove_killed, NULL);
  solver_job_set_cancel_hook (job, cancel_child, (void *) (intptr_t) child.pid);

  struct line_readers lr = { buildah_progress_new (job, b->definition_digest), { { false, { 0 } }, { true, { 0 } } } };
  buildah_progress *progress = lr.progress;
  buildah_progress_set_context_dir (progress, b->opts.context_dir);
  if (platform && b->opts.platforms.n > 1)
    buildah_progress_set_platform (progress, platform);
  else
    announce_first_step (b, progress);
  ps_child_pump (&child, read_lines, &lr);
  struct line_reader *readers = lr.r;
  /* Both pipes closed: buildah is exiting.  Forget the hook before reaping,
     so a late cancel can never signal a recycled pid. */
  solver_job_set_cancel_hook (job, NULL, NULL);
  int status = ps_child_wait (&child);
  ps_buf_free (&readers[0].pending);
  ps_buf_free (&readers[1].pending);

  bool cancelled = solver_job_cancelled (job);
  /* A build stopped outside a RUN step leaves its working container. */
  orphans_build_ended (watch, cancelled || status > 128);
  struct solver_event ev = { 0 };
  if (status == 0 && !cancelled)
    {
      /* The ID is buildah's last stdout line (--iidfile would suppress it
         and the "--> id" lines Podman's clients see). */
      buildah_progress_finish (progress, true, NULL);
      *image_id = xstrdup (buildah_progress_image_id (progress));
      ret = 0;
      /* buildah 1.28 takes one --cache-to, the last. */
      const ps_strv *arg_keys = buildah_progress_arg_cache_keys (progress);
      ps_error *xerr = NULL;
      if (b->opts.cache_to.n > 0
          && cache_registry_export_arg_steps (b->opts.cache_to.v[b->opts.cache_to.n - 1], arg_keys, &access, &xerr) < 0)
        {
          solver_job_emit_warning (job, NULL, 1, xerr->msg, NULL, NULL);
          ps_error_free (xerr);
        }
    }
  else
    {
      const char *msg = buildah_progress_error (progress);
      cleanup_free char *fallback = NULL;
      if (cancelled)
        msg = "build cancelled";
      else if (msg == NULL)
        {
          /* No "Error:" line from buildah: it died without a word, most
             likely killed from outside (the OOM killer, an operator). */
          cleanup_free char *how = ps_exit_text (status);
          msg = fallback = status > 128 ? xasprintf ("buildah build was %s", how)
                                        : xasprintf ("buildah build exited with status %d", status);
        }
      /* A base image in storage for other platforms only sent buildah to a
         registry: say so before what the registry said. */
      cleanup_free char *explained = NULL;
      if (!cancelled && b->platform_notes.n > 0 && (strstr (msg, "pinging") || strstr (msg, "initializing source")
                                                    || strstr (msg, "pull") || strstr (msg, "manifest unknown")))
        {
          ps_buf why = { 0 };
          for (size_t i = 0; i < b->platform_notes.n; i++)
            ps_buf_printf (&why, "%s; ", b->platform_notes.v[i]);
          ps_buf_printf (&why, "pulling one failed: %s", msg);
          msg = explained = ps_buf_steal (&why);
        }
      buildah_progress_finish (progress, false, msg);
      ev.kind = SOLVER_EV_ERROR;
      ev.error = xstrdup (msg);
      const char *vtx = buildah_progress_current_vertex (progress);
      ev.vertex = vtx ? xstrdup (vtx) : NULL;
      ev.exit_code = buildah_progress_exit_code (progress);
      if (ev.exit_code == 0)
        ev.exit_code = exit_code_from_message (msg);
      solver_job_emit (job, &ev);
      ps_error_set (err, 500, "%s", msg);
      ret = -1;
    }
  buildah_progress_free (progress);
  return ret;
}

static int
fail_event (solver_job *job, ps_error **err)
{
  struct solver_event ev = { .kind = SOLVER_EV_ERROR };
  ev.error = xstrdup ((*err)->msg);
  solver_job_emit (job, &ev);
  return -1;
}

/* One platform's image, checked: buildah 1.28's layer cache takes a stage
   FROM scratch built for one platform for any other, so a result for the
   wrong platform is built again without the cache. */
static int
build_one_platform (solver_job *job, struct dockerfile_build *b, const char *platform, char **image_id,
                    ps_error **err)
{
  if (run_buildah (job, b, platform, false, image_id, err) < 0)
    return -1;
  cleanup_free char *got = platform_of_image (*image_id);
  if (got == NULL || platform_equal (got, platform))
    return 0;
  ps_info ("build for %s gave a cached %s image %.12s: building it again without the cache", platform, got,
            *image_id);
  free (*image_id);
  *image_id = NULL;
  return run_buildah (job, b, platform, true, image_id, err);
}

/* A build with --platform: each platform's image on its own run (one
   platform: the plain build, checked); several: a manifest list of them,
   made and tagged only once every platform built, so a failed build tags
   nothing. */
static int
build_platforms (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err)
{
  const struct build_options *o = &b->opts;
  {
    size_t len = 0;
    cleanup_free char *text = dockerfile_text (b, &len);
    if (platform_preflight (b, text, len, dockerfile_shown (b), &b->platform_notes, err) < 0)
      return fail_event (job, err);
  }
  if (o->platforms.n == 1)
    {
      if (run_buildah (job, b, o->platforms.v[0], false, image_id, err) < 0)
        return -1;
      cleanup_free char *got = platform_of_image (*image_id);
      if (got == NULL || platform_equal (got, o->platforms.v[0]))
        return 0;
      free (*image_id);
      *image_id = NULL;
      return run_buildah (job, b, o->platforms.v[0], true, image_id, err);
    }

  ps_strv ids = { 0 };
  int ret = 0;
  for (size_t i = 0; i < o->platforms.n && ret == 0; i++)
    {
      cleanup_free char *id = NULL;
      ret = build_one_platform (job, b, o->platforms.v[i], &id, err);
      if (ret == 0)
        {
          ps_strv_push (&b->platform_images, o->platforms.v[i]);
          ps_strv_push (&b->platform_images, id);
          ps_strv_push (&ids, id);
        }
    }
  if (ret == 0)
    {
      char rnd[17];
      ps_random_hex (rnd, 8);
      b->list_name = xasprintf ("localhost/podsolve-platforms-%s", rnd);
      cleanup_free char *list_id = NULL;
      ret = buildah_callv (&list_id, err, "manifest", "create", b->list_name, NULL);
      if (ret == 0)
        {
          list_id[strcspn (list_id, "\n")] = '\0';
          b->list_id = xstrdup (list_id);
        }
      for (size_t i = 0; ret == 0 && i < ids.n; i++)
        ret = buildah_callv (NULL, err, "manifest", "add", b->list_name, ids.v[i], NULL);
      for (size_t i = 0; ret == 0 && i < o->tags.n; i++)
        ret = buildah_callv (NULL, err, "tag", b->list_name, o->tags.v[i], NULL);
      if (ret < 0)
        {
          ps_error_wrap (err, "manifest list of %zu platforms", o->platforms.n);
          fail_event (job, err);
          dockerfile_build_release_list (b);
        }
      else
        *image_id = xstrdup (b->list_id);
    }
  ps_strv_free (&ids);
  return ret;
}

void
dockerfile_build_release_list (struct dockerfile_build *b)
{
  if (b->list_name == NULL)
    return;
  /* Untags the list when it has other names; removes it (not the
     platforms' images: build cache) when it has none. */
  ps_error *e = NULL;
  if (buildah_callv (NULL, &e, "manifest", "rm", b->list_name, NULL) < 0)
    {
      ps_warn ("remove the manifest list %s: %s", b->list_name, e->msg);
      ps_error_free (e);
    }
  free (b->list_name);
  b->list_name = NULL;
}

int
dockerfile_build_run (solver_job *job, void *userdata, ps_error **err)
{
  struct dockerfile_build *b = userdata;
  cleanup_free char *image_id = NULL;
  if (dockerfile_frontend_run (job, b, &image_id, err) < 0)
    return -1;
  if (b->session && b->session->output_type && dockerfile_transfer_export (job, b, image_id, err) < 0)
    {
      dockerfile_build_release_list (b);
      struct solver_event e = { .kind = SOLVER_EV_ERROR };
      e.error = xasprintf ("export to client: %s", (*err)->msg);
      solver_job_emit (job, &e);
      return -1;
    }
  dockerfile_build_release_list (b);
  struct solver_event ev = { .kind = SOLVER_EV_RESULT };
  ev.image_id = steal_pointer (&image_id);
  ev.tags = xcalloc (b->opts.client_tags.n + 1, sizeof (char *));
  for (size_t i = 0; i < b->opts.client_tags.n; i++)
    ev.tags[i] = xstrdup (b->opts.client_tags.v[i]);
  solver_job_emit (job, &ev);
  return 0;
}
