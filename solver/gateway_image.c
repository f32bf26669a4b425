/* gateway_image.c — BuildKit's gateway.v0 on podsolve: a frontend image's
 * entrypoint runs in a buildah container whose stdin and stdout are one end
 * of a socket pair; the daemon serves LLBBridge on the other end
 * (handlers/grpc.c, through gateway_bridge_server), bound to a gateway
 * build of its own (gateway.c), and solves what the frontend asks for on
 * this job's thread.  The environment is what buildkit's
 * frontend/gateway/gateway.go gives a frontend and grpcclient's
 * RunFromEnvironment reads: BUILDKIT_FRONTEND_OPT_<n>=key=value,
 * BUILDKIT_SESSION_ID, BUILDKIT_WORKERS, BUILDKIT_EXPORTEDPRODUCT. */
#define _GNU_SOURCE
#include "solver/gateway_image.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "solver/buildah.h"
#include "solver/frontend_image.h"
#include "solver/gateway.h"
#include "solver/worker.h"

/* Frontends inside frontends (gateway.v0 solving gateway.v0, or a
   Dockerfile whose syntax names a frontend that solves a Dockerfile with
   a syntax line...): they all run on the job's thread, one inside the
   other. */
#define GATEWAY_IMAGE_MAX_DEPTH 8
static __thread unsigned depth;

/* After Return, how long the frontend gets to exit by itself. */
#define GATEWAY_IMAGE_EXIT_GRACE_MS 5000
/* What stays of its stderr for the error when it fails. */
#define GATEWAY_IMAGE_STDERR_TAIL 2048

static int
idle_ms (void)
{
  const char *v = getenv ("PS_FRONTEND_IDLE_MS");
  int ms = v && *v ? atoi (v) : 0;
  return ms > 0 ? ms : 60 * 1000;
}

/* ---- the image --------------------------------------------------------------------- */

/* The frontend image's id in storage: there already (unless mode "pull"),
   else pulled (never with mode "local"). */
static int
resolve_image (const struct frontend_image_req *r, char **id, ps_error **err)
{
  const char *mode = r->resolve_mode && *r->resolve_mode ? r->resolve_mode : "default";
  bool always = strcmp (mode, "pull") == 0;
  *id = NULL;
  if (!always && buildah_image_id (r->image, id, NULL) == 0 && **id)
    return 0;
  free (*id);
  *id = NULL;
  if (strcmp (mode, "local") == 0)
    return ps_error_set (err, 404, "frontend image %s is not in storage (image-resolve-mode=local never pulls)",
                         r->image);
  cleanup_free char *auth = r->authfile ? xasprintf ("--authfile=%s", r->authfile) : NULL;
  int ret = auth ? buildah_callv (NULL, err, "pull", "--quiet", "--policy=always", auth, r->image, NULL)
                 : buildah_callv (NULL, err, "pull", "--quiet", "--policy=always", r->image, NULL);
  if (ret < 0)
    return ps_error_wrap (err, "frontend image %s is not in storage and could not be pulled", r->image);
  return buildah_image_id (r->image, id, err);
}

/* What the frontend runs as: the image config's Entrypoint (else "/run",
   BuildKit's default), Env, WorkingDir and whether it asks for no network. */
struct frontend_config
{
  ps_strv args;
  ps_strv env;
  char *cwd;
  bool network_none;
};

static int
read_config (const char *image_id, struct frontend_config *fc, ps_error **err)
{
  cleanup_free char *out = NULL;
  const char *args[] = { "inspect", "--type=image", image_id, NULL };
  if (buildah_call (args, &out, err) < 0)
    return ps_error_wrap (err, "frontend image config");
  cJSON *all = cJSON_Parse (out);
  const cJSON *j = cJSON_GetObjectItemCaseSensitive (cJSON_GetObjectItemCaseSensitive (all, "OCIv1"), "config");
  if (!cJSON_IsObject (j))
    {
      cJSON_Delete (all);
      return ps_error_set (err, 500, "frontend image %s: no OCI config in what buildah inspect says", image_id);
    }
  const cJSON *it;
  cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (j, "Entrypoint"))
    if (cJSON_IsString (it))
      ps_strv_push (&fc->args, it->valuestring);
  if (fc->args.n == 0)
    ps_strv_push (&fc->args, "/run");
  cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (j, "Env"))
    if (cJSON_IsString (it))
      ps_strv_push (&fc->env, it->valuestring);
  const cJSON *wd = cJSON_GetObjectItemCaseSensitive (j, "WorkingDir");
  fc->cwd = xstrdup (cJSON_IsString (wd) && *wd->valuestring ? wd->valuestring : "/");
  /* BuildKit runs a frontend on the sandbox network unless its image
     says moby.buildkit.frontend.network.none; podsolve runs it with none
     unless the label says "false": a frontend talks to the daemon over
     its stdio, and anything it fetches goes through LLB. */
  fc->network_none = true;
  const cJSON *nn = cJSON_GetObjectItemCaseSensitive (cJSON_GetObjectItemCaseSensitive (j, "Labels"),
                                                      "moby.buildkit.frontend.network.none");
  if (cJSON_IsString (nn) && (strcmp (nn->valuestring, "false") == 0 || strcmp (nn->valuestring, "0") == 0))
    fc->network_none = false;
  cJSON_Delete (all);
  return 0;
}

static void
config_free (struct frontend_config *fc)
{
  ps_strv_free (&fc->args);
  ps_strv_free (&fc->env);
  free (fc->cwd);
}

/* BUILDKIT_WORKERS: client.WorkerInfo as JSON (ID, Labels, Platforms). */
static char *
workers_json (const char *state_dir)
{
  cJSON *arr = cJSON_CreateArray ();
  cJSON *w = cJSON_CreateObject ();
  cJSON_AddStringToObject (w, "ID", worker_id (state_dir));
  cJSON *labels = cJSON_AddObjectToObject (w, "Labels");
  cJSON_AddStringToObject (labels, "org.mobyproject.buildkit.worker.executor", "buildah");
  cJSON_AddStringToObject (labels, "org.mobyproject.buildkit.worker.snapshotter", buildah_storage_driver ());
  cJSON *plats = cJSON_AddArrayToObject (w, "Platforms");
  ps_strv pv = { 0 };
  worker_platforms (&pv);
  for (size_t i = 0; i < pv.n; i++)
    {
      cJSON *p = cJSON_CreateObject ();
      char *os = pv.v[i], *arch = strchr (os, '/');
      if (arch == NULL)
        {
          cJSON_Delete (p);
          continue;
        }
      *arch++ = '\0';
      char *variant = strchr (arch, '/');
      if (variant)
        *variant++ = '\0';
      cJSON_AddStringToObject (p, "architecture", arch);
      cJSON_AddStringToObject (p, "os", os);
      if (variant)
        cJSON_AddStringToObject (p, "variant", variant);
      cJSON_AddItemToArray (plats, p);
    }
  ps_strv_free (&pv);
  cJSON_AddItemToArray (arr, w);
  char *s = cJSON_PrintUnformatted (arr);
  cJSON_Delete (arr);
  return s;
}

/* ---- the running frontend ---------------------------------------------------------- */

struct frontend_run
{
  solver_job *job;
  const char *image;
  char *vertex;
  struct ps_child child;
  pthread_t pump;       /* its stderr into the vertex's logs */
  bool pump_started;
  pthread_t server;     /* LLBBridge on our end of the socket pair */
  bool server_started;
  int fd;               /* our end */
  char *build_id;
  pthread_mutex_t mu;
  ps_buf tail;          /* the last of its stderr */
  bool exited;
  int status;
  bool server_done;     /* its connection is over */
  char *server_error;   /* and why, when it broke the protocol */
};

static void *
server_main (void *arg)
{
  struct frontend_run *f = arg;
  cleanup_free char *origin = xasprintf ("frontend %s", f->image);
  char *why = gateway_bridge_server () (f->fd, f->build_id, origin);
  pthread_mutex_lock (&f->mu);
  f->server_done = true;
  f->server_error = why;
  pthread_mutex_unlock (&f->mu);
  return NULL;
}

static void
on_stderr (void *ud, int stream, const char *data, size_t len)
{
  struct frontend_run *f = ud;
  if (stream != 2 || data == NULL)
    return;
  solver_job_emit_log (f->job, f->vertex, 2, data, len, NULL);
  pthread_mutex_lock (&f->mu);
  ps_buf_append (&f->tail, data, len);
  if (f->tail.len > GATEWAY_IMAGE_STDERR_TAIL)
    {
      size_t drop = f->tail.len - GATEWAY_IMAGE_STDERR_TAIL;
      memmove (f->tail.data, f->tail.data + drop, f->tail.len - drop);
      f->tail.len -= drop;
      f->tail.data[f->tail.len] = '\0';
    }
  pthread_mutex_unlock (&f->mu);
}

/* Reads its stderr until it closes, then reaps it. */
static void *
pump_main (void *arg)
{
  struct frontend_run *f = arg;
  ps_child_pump (&f->child, on_stderr, f);
  int status = ps_child_wait (&f->child);
  pthread_mutex_lock (&f->mu);
  f->exited = true;
  f->status = status;
  pthread_mutex_unlock (&f->mu);
  return NULL;
}

/* The last line or so of what it wrote, for an error message. */
static char *
stderr_tail (struct frontend_run *f)
{
  pthread_mutex_lock (&f->mu);
  char *s = xstrndup (f->tail.data ? f->tail.data : "", f->tail.len);
  pthread_mutex_unlock (&f->mu);
  size_t n = strlen (s);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
    s[--n] = '\0';
  /* the last three lines at most */
  int lines = 0;
  for (size_t i = n; i > 0; i--)
    if (s[i - 1] == '\n' && ++lines == 3)
      {
        memmove (s, s + i, n - i + 1);
        break;
      }
  return s;
}

/* gateway_build_opts.alive: the frontend must still be running while it
   has not returned. */
static int
frontend_alive (void *ud, ps_error **err)
{
  struct frontend_run *f = ud;
  pthread_mutex_lock (&f->mu);
  bool exited = f->exited;
  int status = f->status;
  cleanup_free char *broke = f->server_error ? xstrdup (f->server_error) : NULL;
  pthread_mutex_unlock (&f->mu);
  if (broke)
    return ps_error_set (err, 502, "frontend %s broke its LLBBridge connection (it must speak gRPC over HTTP/2 on "
                         "stdout): %s", f->image, broke);
  if (!exited)
    return 0;
  cleanup_free char *tail = stderr_tail (f);
  if (status == 0)
    return ps_error_set (err, 502, "frontend %s exited without returning a result%s%s", f->image,
                         *tail ? ": " : "", tail);
  return ps_error_set (err, 502, "frontend %s exited with status %d before returning a result%s%s", f->image,
                       status, *tail ? ": " : "", tail);
}

static void
frontend_stop (struct frontend_run *f, int grace_ms)
{
  if (!f->pump_started)
    return;
  /* Let it finish on its own (it exits once Return is answered), then
     stop it: SIGTERM to buildah removes nothing by itself, the
     container is removed by the caller. */
  int64_t deadline = ps_now_ns () + (int64_t) grace_ms * 1000000;
  for (;;)
    {
      pthread_mutex_lock (&f->mu);
      bool exited = f->exited;
      pthread_mutex_unlock (&f->mu);
      if (exited || ps_now_ns () >= deadline)
        break;
      poll (NULL, 0, 20);
    }
  pthread_mutex_lock (&f->mu);
  bool exited = f->exited;
  pthread_mutex_unlock (&f->mu);
  if (!exited)
    ps_child_terminate (f->child.pid, 2000);
  pthread_join (f->pump, NULL);
  f->pump_started = false;
}

int
gateway_image_run (solver_job *job, const struct frontend_image_req *r, char **image_id, ps_error **err)
{
  *image_id = NULL;
  if (r->image == NULL || *r->image == '\0')
    return ps_error_set (err, 400, "gateway.v0 needs a frontend image (\"source\")");
  if (gateway_bridge_server () == NULL)
    return ps_error_set (err, 501, "gateway frontends are not served by this process");
  if (depth >= GATEWAY_IMAGE_MAX_DEPTH)
    return ps_error_set (err, 508, "frontend %s: more than %d frontends inside one another", r->image,
                         GATEWAY_IMAGE_MAX_DEPTH);

  struct frontend_run f = { .job = job, .image = r->image, .fd = -1 };
  pthread_mutex_init (&f.mu, NULL);
  struct frontend_config fc = { 0 };
  struct buildah_wc wc = { 0 };
  cleanup_free char *image = NULL;
  cleanup_free char *workers = NULL;
  ps_strv argv = { 0 };
  ps_strv env = { 0 };
  int sv[2] = { -1, -1 };
  int ret = -1;
  depth++;

  int64_t started = ps_now_ns ();
  {
    cleanup_free char *material = xasprintf ("frontend %s %u %lld", r->image, depth, (long long) started);
    char vhex[65];
    ps_sha256_hex (material, strlen (material), vhex);
    f.vertex = xasprintf ("sha256:%s", vhex);
  }
  cleanup_free char *vname = xasprintf ("[internal] load frontend %s", r->image);
  solver_job_emit_vertex (job, f.vertex, vname, NULL, started, 0, false, NULL, NULL);

  if (resolve_image (r, &image, err) < 0 || read_config (image, &fc, err) < 0)
    goto out;
  if (buildah_wc_from (image, NULL, false, &wc, err) < 0)
    {
      ps_error_wrap (err, "frontend %s: working container", r->image);
      goto out;
    }

  char hex[17];
  ps_random_hex (hex, 8);
  f.build_id = xasprintf ("frontend-%s", hex);

  /* Its environment: the image's, then the gateway contract. */
  for (size_t i = 0; i < fc.env.n; i++)
    ps_strv_pushf (&env, "--env=%s", fc.env.v[i]);
  for (size_t i = 0; r->opts && i < r->opts->n; i++)
    ps_strv_pushf (&env, "--env=BUILDKIT_FRONTEND_OPT_%zu=%s=%s", i, r->opts->kv[2 * i], r->opts->kv[2 * i + 1]);
  /* The session id its local sources name: the client's, or a stand-in
     when the sources came with the request (they are found by name). */
  ps_strv_pushf (&env, "--env=BUILDKIT_SESSION_ID=%s", r->session && *r->session ? r->session : f.build_id);
  workers = workers_json (r->state_dir);
  ps_strv_pushf (&env, "--env=BUILDKIT_WORKERS=%s", workers);
  ps_strv_push (&env, "--env=BUILDKIT_EXPORTEDPRODUCT=podsolve");

  buildah_argv_init (&argv);
  ps_strv_push (&argv, "run");
  buildah_argv_isolation (&argv, NULL);
  ps_strv_push (&argv, fc.network_none ? "--network=none" : "--network=host");
  ps_strv_pushf (&argv, "--workingdir=%s", fc.cwd);
  for (size_t i = 0; i < env.n; i++)
    ps_strv_push (&argv, env.v[i]);
  ps_strv_push (&argv, wc.ctr);
  ps_strv_push (&argv, "--");
  for (size_t i = 0; i < fc.args.n; i++)
    ps_strv_push (&argv, fc.args.v[i]);

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    {
      ps_error_set_errno (err, 500, errno, "socketpair");
      goto out;
    }
  if (ps_child_spawn_stdio (argv.v, NULL, sv[1], &f.child, err) < 0)
    {
      ps_error_wrap (err, "frontend %s", r->image);
      goto out;
    }
  close (sv[1]);
  sv[1] = -1;
  f.fd = sv[0];
  int e = ps_thread_start (&f.pump, pump_main, &f, 0, false);
  if (e != 0)
    {
      ps_child_terminate (f.child.pid, 0);
      ps_child_wait (&f.child);
      ps_error_set_errno (err, 500, e, "frontend %s: thread", r->image);
      goto out;
    }
  f.pump_started = true;
  e = ps_thread_start (&f.server, server_main, &f, 0, false);
  if (e != 0)
    {
      ps_error_set_errno (err, 500, e, "frontend %s: thread", r->image);
      goto out;
    }
  f.server_started = true;
  ps_info ("job %s: frontend %s (%.12s) started as build %s", solver_job_id (job), r->image, image, f.build_id);
  solver_job_emit_vertex (job, f.vertex, vname, NULL, started, ps_now_ns (), false, NULL, NULL);

  struct gateway_build_opts o = {
    .session = r->session,
    .entitlements = r->entitlements,
    .job_dir = r->job_dir,
    .authfile = r->authfile,
    .state_dir = r->state_dir,
    .max_context_bytes = r->max_context_bytes,
    .cache_imports = r->cache_imports,
    .n_cache_imports = r->n_cache_imports,
    .cache_exports = r->cache_exports,
    .n_cache_exports = r->n_cache_exports,
    .sources = r->sources,
    .n_sources = r->n_sources,
    .inputs = r->inputs,
    .n_inputs = r->n_inputs,
    .alive = frontend_alive,
    .alive_ud = &f,
    .idle_ms = idle_ms (),
  };
  ret = gateway_solve_run (f.build_id, &o, job, image_id, err);
  if (ret == 0 && *image_id == NULL)
    ret = ps_error_set (err, 502, "frontend %s returned no result", r->image);
  if (ret < 0)
    {
      free (*image_id);
      *image_id = NULL;
    }

out:
  if (ret < 0 && *err && ps_str_has_prefix ((*err)->msg, "frontend ") == false)
    ps_error_wrap (err, "frontend %s", r->image);
  /* The frontend goes first (after Return it exits by itself), then its
     connection: shutting our end down ends the server's loop. */
  frontend_stop (&f, ret == 0 ? GATEWAY_IMAGE_EXIT_GRACE_MS : 0);
  if (f.fd >= 0)
    shutdown (f.fd, SHUT_RDWR);
  if (f.server_started)
    pthread_join (f.server, NULL);
  if (sv[0] >= 0)
    close (sv[0]);
  if (sv[1] >= 0)
    close (sv[1]);
  buildah_wc_remove (&wc);
  if (ret < 0)
    solver_job_emit_vertex (job, f.vertex, vname, NULL, started, ps_now_ns (), false, (*err)->msg, NULL);
  depth--;
  ps_strv_free (&argv);
  ps_strv_free (&env);
  config_free (&fc);
  ps_buf_free (&f.tail);
  free (f.server_error);
  pthread_mutex_destroy (&f.mu);
  free (f.vertex);
  free (f.build_id);
  return ret;
}

void
gateway_image_init (void)
{
  frontend_image_set_runner (gateway_image_run);
}
