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
#include "solver/orphans.h"
#include "solver/dockerfile/buildah_output.h"
#include "solver/dockerfile/parse.h"
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
      if (b->opts.dockerfiles.n > 0 && dockerfile_read (b->opts.dockerfiles.v[0], &df_text, NULL, NULL, NULL) == 0)
        key = result_cache_key (b, df_text);
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
  return frontend_build (job, b, image_id, err);
}

int
dockerfile_build_check_dialect (const struct dockerfile_build *b, ps_error **err)
{
  if (b->opts.remote != NULL || b->opts.dockerfiles.n == 0 || strstr (b->opts.dockerfiles.v[0], "://") != NULL)
    return 0;
  const char *df = b->opts.dockerfiles.v[0];
  cleanup_free char *path
      = df[0] == '/' || b->opts.context_dir == NULL ? xstrdup (df) : xasprintf ("%s/%s", b->opts.context_dir, df);
  /* The name the user knows: never a server path. */
  const char *shown = b->dockerfile_name && *b->dockerfile_name ? b->dockerfile_name : df;
  if (shown[0] == '/')
    shown = strrchr (shown, '/') + 1;
  cleanup_free char *text = NULL;
  size_t len = 0;
  if (dockerfile_read (path, &text, &len, NULL, NULL) < 0)
    return 0; /* buildah says what is wrong with the file */
  cleanup_dockerfile dockerfile *parsed = NULL;
  if (dockerfile_parse (text, len, shown, &parsed, err) < 0)
    return -1;
  return dockerfile_check_buildah (parsed, shown, err);
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

static int
frontend_build (solver_job *job, struct dockerfile_build *b, char **image_id, ps_error **err)
{
  if (dockerfile_build_check_dialect (b, err) < 0)
    {
      struct solver_event ev = { .kind = SOLVER_EV_ERROR };
      ev.error = xstrdup ((*err)->msg);
      solver_job_emit (job, &ev);
      return -1;
    }
  struct cache_registry_access access = cache_access (&b->opts);
  const ps_strv *imports = b->opts.cache_from_refs.n > 0 ? &b->opts.cache_from_refs : &b->opts.cache_from;
  for (size_t i = 0; i < imports->n; i++)
    cache_registry_import (job, imports->v[i], &access);

  ps_strv argv = { 0 };
  build_options_to_argv (&b->opts, &argv);
  struct ps_child child;
  orphan_watch *watch = orphans_build_started (!b->opts.rm && !b->opts.forcerm);
  int ret = ps_child_spawn_env (argv.v, b->opts.env.v, &child, err);
  ps_strv_free (&argv);
  if (ret < 0)
    {
      orphans_build_ended (watch, false);
      return ps_error_wrap (err, "buildah build");
    }
  solver_job_set_cancel_hook (job, cancel_child, (void *) (intptr_t) child.pid);

  struct line_readers lr = { buildah_progress_new (job, b->definition_digest), { { false, { 0 } }, { true, { 0 } } } };
  buildah_progress *progress = lr.progress;
  buildah_progress_set_context_dir (progress, b->opts.context_dir);
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
        msg = fallback = xasprintf ("buildah build exited with status %d", status);
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

int
dockerfile_build_run (solver_job *job, void *userdata, ps_error **err)
{
  struct dockerfile_build *b = userdata;
  cleanup_free char *image_id = NULL;
  if (dockerfile_frontend_run (job, b, &image_id, err) < 0)
    return -1;
  if (b->session && b->session->output_type && dockerfile_transfer_export (job, b, image_id, err) < 0)
    {
      struct solver_event e = { .kind = SOLVER_EV_ERROR };
      e.error = xasprintf ("export to client: %s", (*err)->msg);
      solver_job_emit (job, &e);
      return -1;
    }
  struct solver_event ev = { .kind = SOLVER_EV_RESULT };
  ev.image_id = steal_pointer (&image_id);
  ev.tags = xcalloc (b->opts.client_tags.n + 1, sizeof (char *));
  for (size_t i = 0; i < b->opts.client_tags.n; i++)
    ev.tags[i] = xstrdup (b->opts.client_tags.v[i]);
  solver_job_emit (job, &ev);
  return 0;
}
