/* grpc_control.c — the moby.buildkit.v1.Control service on /grpc and
 * --buildkit-listen (grpc-clients.md).  Each method is one function; the
 * table at the end lists them.
 *
 * Solve (direct mode): the protobuf SolveRequest becomes /solve's request
 * (schema/control_request.c) and runs as the same plan, job and exporters
 * as POST /solve; the call waits for the job and answers its exporter
 * response, or the job's error.  A client that cancels the call cancels
 * the job.  Gateway mode (Frontend "" and no Definition) is the client-side
 * gateway's (LLBBridge).
 *
 * Session: the grpchijack tunnel.  BytesMessages carry a byte stream on
 * which the client is the HTTP/2 server and podsolved the client, exactly
 * as after POST /session: one end of a socketpair goes to the session code
 * (session_serve_upgraded: registry, thread, claims, idle timeout), the
 * other is pumped to and from the call's messages. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/process.h"
#include "handlers/grpc.h"
#include "schema/control.pb-c.h"
#include "schema/control_request.h"
#include "server/config.h"
#include "session/grpc.h"
#include "session/session.h"
#include "solver/job.h"
#include "solver/solve.h"

/* ---- Control.Solve ------------------------------------------------------------ */

/* How often a waiting Solve looks at its call (a cancel is noticed within this). */
#define CONTROL_SOLVE_POLL_MS 200

static int
solve_start (struct solve_request *sr, const uint8_t *definition, size_t definition_len, solver_job **out,
             ps_error **err)
{
  char hex[17];
  ps_random_hex (hex, 8);
  cleanup_free char *dir = xasprintf ("%s/solves/%s", ps_cfg.state_dir, hex);
  if (ps_mkdir_p (dir, 0700, err) < 0)
    {
      schema_solve_request_free (sr);
      return -1;
    }
  cleanup_free char *ref = sr->ref ? xstrdup (sr->ref) : NULL;
  const char *kind = sr->has_definition ? "llb" : "dockerfile.v0";
  struct solve_env env = {
    .job_dir = dir,
    .output_roots = &ps_cfg.output_roots,
    .state_dir = ps_cfg.state_dir,
    .max_context_bytes = ps_cfg.max_context_bytes,
    .definition = definition,
    .definition_len = definition_len,
  };
  struct solve_plan *plan = NULL;
  int ret = solve_plan_new (sr, &env, &plan, err);
  schema_solve_request_free (sr);
  if (ret < 0)
    {
      ps_rm_rf (dir, NULL);
      return -1;
    }
  solver_jobs_expire ((int64_t) ps_cfg.job_ttl_s * 1000);
  solver_job *job = solver_job_new (ref, dir);
  solver_job_set_kind (job, kind);
  if (solver_jobs_register (job, err) < 0)
    {
      solve_plan_free (plan);
      solver_job_unref (job);
      ps_rm_rf (dir, NULL);
      return -1;
    }
  if (solver_job_start (job, solve_run, plan, (void (*) (void *)) solve_plan_free, err) < 0)
    {
      solver_jobs_unregister (job);
      solve_plan_free (plan);
      solver_job_unref (job);
      ps_rm_rf (dir, NULL);
      return -1;
    }
  ps_info ("solve %s: started (Control.Solve)", solver_job_id (job));
  *out = job;
  return 0;
}

/* Follow the job to its end; a call that goes away cancels it. */
static bool
solve_wait (grpc_call *call, solver_job *job)
{
  size_t idx = 0;
  for (;;)
    {
      if (grpc_call_cancelled (call))
        {
          solver_job_cancel (job, "cancelled by the client (Control.Solve)");
          solver_job_wait (job);
          return false;
        }
      bool done = false;
      if (solver_job_next (job, idx, CONTROL_SOLVE_POLL_MS, &done))
        idx++;
      else if (done)
        break;
    }
  solver_job_wait (job);
  return true;
}

static void
solve_answer (grpc_call *call, solver_job *job)
{
  struct solver_job_summary sum;
  solver_job_summarize (job, &sum);
  if (sum.state == SOLVER_JOB_SUCCEEDED)
    {
      size_t len = 0;
      cleanup_free uint8_t *resp = schema_control_solve_response (sum.response, &len);
      ps_error *err = NULL;
      if (grpc_call_send (call, resp, len, &err) < 0)
        {
          ps_info ("solve %s: the client left before the answer: %s", sum.ref, err->msg);
          ps_error_free (err);
        }
      grpc_call_finish (call, GRPC_STATUS_OK, "%s", "");
    }
  else if (sum.state == SOLVER_JOB_CANCELLED)
    grpc_call_finish (call, GRPC_STATUS_CANCELLED, "%s", sum.error ? sum.error : "cancelled");
  else
    grpc_call_finish (call, sum.state == SOLVER_JOB_INTERRUPTED ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_UNKNOWN,
                      "%s", sum.error ? sum.error : "the build failed");
  solver_job_summary_free (&sum);
}

static void
control_solve (grpc_call *call, void *ud)
{
  (void) ud;
  ps_error *err = NULL;
  void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_one (call, &msg, &len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  Moby__Buildkit__V1__SolveRequest *rq = moby__buildkit__v1__solve_request__unpack (NULL, len, msg);
  free (msg);
  if (rq == NULL)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "SolveRequest: not a valid protobuf message");
      return;
    }
  if (schema_control_solve_is_gateway (rq))
    {
      moby__buildkit__v1__solve_request__free_unpacked (rq, NULL);
      grpc_call_finish (call, GRPC_STATUS_UNIMPLEMENTED,
                        "Control.Solve without a frontend or a definition (the client-side gateway) is not "
                        "supported yet");
      return;
    }
  struct solve_request sr;
  cleanup_free uint8_t *definition = NULL;
  size_t def_len = 0;
  bool internal = false;
  int r = schema_control_solve_request (rq, &sr, &definition, &def_len, &internal, &err);
  moby__buildkit__v1__solve_request__free_unpacked (rq, NULL);
  solver_job *job = NULL;
  if (r == 0)
    r = solve_start (&sr, definition, def_len, &job, &err);
  if (r < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  if (solve_wait (call, job))
    solve_answer (call, job);
  else
    grpc_call_finish (call, GRPC_STATUS_CANCELLED, "the client cancelled the solve");
  ps_info ("solve %s: Control.Solve answered%s", solver_job_id (job), internal ? " (internal)" : "");
  solver_job_unref (job);
}

/* ---- Control.Session (grpchijack) ---------------------------------------------- */

#define CONTROL_SESSION_CHUNK (64 * 1024)
/* How often the call side looks whether the session side has ended. */
#define CONTROL_SESSION_POLL_MS 250

struct tunnel
{
  grpc_call *call;
  int fd;                   /* our end of the socketpair */
  atomic_bool session_done; /* the session side ended (EOF or error on fd) */
};

/* The session's end: closed by the session code when it lets go; the
   handler may be gone by then, so it carries only the fd. */
static void
tunnel_release (void *ud)
{
  close ((int) (intptr_t) ud);
}

/* Session -> client: what podsolved's HTTP/2 client writes, as BytesMessages. */
static void *
tunnel_to_client (void *arg)
{
  struct tunnel *t = arg;
  cleanup_free uint8_t *buf = xmalloc (CONTROL_SESSION_CHUNK);
  cleanup_free uint8_t *out = xmalloc (CONTROL_SESSION_CHUNK + 16);
  for (;;)
    {
      ssize_t n = read (t->fd, buf, CONTROL_SESSION_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      Moby__Buildkit__V1__BytesMessage m = MOBY__BUILDKIT__V1__BYTES_MESSAGE__INIT;
      m.data.data = buf;
      m.data.len = (size_t) n;
      size_t len = moby__buildkit__v1__bytes_message__pack (&m, out);
      ps_error *err = NULL;
      if (grpc_call_send (t->call, out, len, &err) < 0)
        {
          ps_error_free (err);
          break;
        }
    }
  atomic_store (&t->session_done, true);
  return NULL;
}

/* Client -> session, on the handler thread, until the client half-closes,
   the call dies or the session side ended. */
static void
tunnel_to_session (struct tunnel *t)
{
  for (;;)
    {
      if (atomic_load (&t->session_done))
        return;
      void *msg = NULL;
      size_t len = 0;
      ps_error *err = NULL;
      int r = grpc_call_recv (t->call, &msg, &len, CONTROL_SESSION_POLL_MS, &err);
      if (r < 0)
        {
          bool timeout = err->status == 504 && !grpc_call_cancelled (t->call) && grpc_call_status (t->call) < 0;
          ps_error_free (err);
          if (timeout)
            continue;
          return;
        }
      if (r == 0)
        return;
      Moby__Buildkit__V1__BytesMessage *m = moby__buildkit__v1__bytes_message__unpack (NULL, len, msg);
      free (msg);
      if (m == NULL)
        return;
      const uint8_t *p = m->data.data;
      size_t left = m->data.len;
      bool ok = true;
      while (left > 0 && ok)
        {
          struct pollfd pfd = { .fd = t->fd, .events = POLLOUT };
          ssize_t w = send (t->fd, p, left, MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w > 0)
            {
              p += w;
              left -= (size_t) w;
            }
          else if (w < 0 && (errno == EAGAIN || errno == EINTR))
            {
              /* the session is slow: wait, but notice it ending */
              if (atomic_load (&t->session_done))
                ok = false;
              else
                poll (&pfd, 1, CONTROL_SESSION_POLL_MS);
            }
          else
            ok = false;
        }
      moby__buildkit__v1__bytes_message__free_unpacked (m, NULL);
      if (!ok)
        return;
    }
}

static void
control_session (grpc_call *call, void *ud)
{
  (void) ud;
  const char **methods = NULL;
  size_t n_methods = grpc_call_metadata_all (call, "x-docker-expose-session-grpc-method", &methods);
  const char *key = grpc_call_metadata (call, "x-docker-expose-session-sharedkey");
  const char *name = grpc_call_metadata (call, "x-docker-expose-session-name");
  struct session_info info = {
    .uuid = grpc_call_metadata (call, "x-docker-expose-session-uuid"),
    .shared_key = key ? key : "",
    .name = name ? name : "",
    .methods = methods,
    .n_methods = n_methods,
  };
  ps_error *err = NULL;
  if (session_info_validate (&info, &err) < 0)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err->msg);
      ps_error_free (err);
      return;
    }
  if (session_registry_has (info.uuid))
    {
      grpc_call_finish (call, GRPC_STATUS_ALREADY_EXISTS, "session %s is open already", info.uuid);
      return;
    }
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    {
      grpc_call_finish (call, GRPC_STATUS_INTERNAL, "socketpair: %s", strerror (errno));
      return;
    }
  struct tunnel t = { .call = call, .fd = sv[1] };
  /* From here the session code owns sv[0]: it closes it (tunnel_release)
     when the session ends, which ends tunnel_to_client's reads. */
  session_serve_upgraded (sv[0], NULL, 0, &info, tunnel_release, (void *) (intptr_t) sv[0]);
  ps_info ("session %s: tunnelled over Control.Session", info.uuid);
  pthread_t th;
  bool have_thread = ps_thread_start (&th, tunnel_to_client, &t, 0, false) == 0;
  if (have_thread)
    tunnel_to_session (&t);
  /* Either side ended: the session sees EOF and leaves the registry. */
  shutdown (t.fd, SHUT_RDWR);
  if (have_thread)
    pthread_join (th, NULL);
  close (t.fd);
  if (grpc_call_cancelled (call))
    grpc_call_finish (call, GRPC_STATUS_CANCELLED, "the client cancelled the session");
  else
    grpc_call_finish (call, GRPC_STATUS_OK, "%s", "");
  ps_info ("session %s: Control.Session ended", info.uuid);
}

/* ---- the table ------------------------------------------------------------------ */

const struct grpc_method grpc_control_methods[] = {
  /* G4a: Solve (direct mode) and Session */
  { "/moby.buildkit.v1.Control/Solve", control_solve, NULL },
  { "/moby.buildkit.v1.Control/Session", control_session, NULL },
};
const size_t grpc_control_n_methods = sizeof grpc_control_methods / sizeof grpc_control_methods[0];
