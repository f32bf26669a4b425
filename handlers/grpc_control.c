/* grpc_control.c — BuildKit's control service, moby.buildkit.v1.Control,
 * as podsolved serves it over gRPC (POST /grpc, --buildkit-listen):
 *
 *   ListWorkers         the one worker podsolved is (solver/worker.h)
 *   Info                podsolve's version
 *   DiskUsage, Prune    the build cache (solver/cache_prune.h), as
 *                       /build/prune sees it
 *   Status              a job's event log (solver/job.h) as StatusResponse
 *                       messages (schema/status_response.h)
 *   ListenBuildHistory, UNIMPLEMENTED: podsolve keeps no build history
 *   UpdateBuildHistory  (see control_listen_build_history)
 *
 * Each method is one function; each request is one protobuf-c message, a
 * malformed one is INVALID_ARGUMENT.
 *
 * Solve (direct mode): the protobuf SolveRequest becomes /solve's request
 * (schema/control_request.c) and runs as the same plan, job and exporters
 * as POST /solve; the call waits for the job and answers its exporter
 * response, or the job's error.  A client that cancels the call cancels
 * the job.  Gateway mode (Frontend "" and no Definition): the same plan
 * with solver/gateway.h's frontend, the client driving the build over
 * LLBBridge (handlers/grpc_bridge.c) until it returns a result the
 * exporters export.
 *
 * Session: the grpchijack tunnel (session/tunnel.c).  BytesMessages carry
 * a byte stream on which the client is the HTTP/2 server and podsolved the
 * client, exactly as after POST /session. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/process.h"
#include "control.pb-c.h"
#include "handlers/grpc.h"
#include "handlers/stream.h"
#include "schema/control_request.h"
#include "schema/ctrfilter.h"
#include "schema/status_response.h"
#include "server/config.h"
#include "session/grpc.h"
#include "session/session.h"
#include "session/tunnel.h"
#include "solver/buildah.h"
#include "solver/cache_gc.h"
#include "solver/cache_prune.h"
#include "solver/gateway.h"
#include "solver/job.h"
#include "solver/solve.h"
#include "solver/worker.h"
#include "worker.pb-c.h"

#define CONTROL "/moby.buildkit.v1.Control/"

/* ---- plumbing ----------------------------------------------------------------- */

/* The one request message of a unary or server-streaming call, decoded;
   NULL when the call has been finished already (no message, a malformed
   one, a transport failure). */
static ProtobufCMessage *
recv_request (grpc_call *call, const ProtobufCMessageDescriptor *desc)
{
  void *data = NULL;
  size_t len = 0;
  ps_error *err = NULL;
  if (grpc_call_recv_one (call, &data, &len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return NULL;
    }
  ProtobufCMessage *m = protobuf_c_message_unpack (desc, NULL, len, data);
  free (data);
  if (m == NULL)
    grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s message", desc->name);
  return m;
}

static int
send_message (grpc_call *call, const ProtobufCMessage *m, ps_error **err)
{
  size_t len = protobuf_c_message_get_packed_size (m);
  cleanup_free uint8_t *buf = xmalloc (len ? len : 1);
  protobuf_c_message_pack (m, buf);
  return grpc_call_send (call, buf, len, err);
}

/* Send a unary call's response and end the call. */
static void
reply (grpc_call *call, const ProtobufCMessage *m)
{
  ps_error *err = NULL;
  if (send_message (call, m, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

/* End the call with a ps_error and free it. */
static void
fail (grpc_call *call, ps_error *err)
{
  grpc_call_finish_error (call, err);
  ps_error_free (err);
}

static Google__Protobuf__Timestamp *
timestamp (Google__Protobuf__Timestamp *slot, int64_t ns)
{
  if (ns <= 0)
    return NULL;
  google__protobuf__timestamp__init (slot);
  slot->seconds = ns / 1000000000LL;
  slot->nanos = (int32_t) (ns % 1000000000LL);
  return slot;
}

/* What BuildKit reports as its version: podsolve's. */
static void
buildkit_version (Moby__Buildkit__V1__Types__BuildkitVersion *v)
{
  moby__buildkit__v1__types__buildkit_version__init (v);
  v->package = (char *) "github.com/containers/podsolve";
  v->version = (char *) PODSOLVE_VERSION;
  v->revision = (char *) ""; /* not recorded at build time (as /version's GitCommit) */
}

/* ---- ListWorkers ----------------------------------------------------------------- */

#define LABEL_PREFIX "org.mobyproject.buildkit.worker."

struct worker_view
{
  const char *id;
  Moby__Buildkit__V1__Types__WorkerRecord__LabelsEntry *labels;
  size_t n_labels;
  char *platforms; /* "linux/amd64,linux/arm64" */
};

/* BuildKit's worker filter fields: id, labels.<key>, platforms. */
static bool
worker_field (void *obj, const char *const *path, size_t n, const char **value)
{
  const struct worker_view *w = obj;
  if (n == 1 && strcmp (path[0], "id") == 0)
    return (*value = w->id), true;
  if (n == 1 && strcmp (path[0], "platforms") == 0)
    return (*value = w->platforms), true;
  if (n >= 2 && strcmp (path[0], "labels") == 0)
    {
      /* labels.org.mobyproject... unquoted splits the key at its dots. */
      cleanup_free char *key = xstrdup (path[1]);
      for (size_t i = 2; i < n; i++)
        {
          char *k = xasprintf ("%s.%s", key, path[i]);
          free (key);
          key = k;
        }
      for (size_t i = 0; i < w->n_labels; i++)
        if (strcmp (w->labels[i].key, key) == 0)
          return (*value = w->labels[i].value), true;
    }
  return false;
}

static void
control_list_workers (grpc_call *call, void *ud)
{
  Moby__Buildkit__V1__ListWorkersRequest *req
      = (Moby__Buildkit__V1__ListWorkersRequest *) recv_request (call, &moby__buildkit__v1__list_workers_request__descriptor);
  if (req == NULL)
    return;
  ps_error *err = NULL;
  ctr_filter *filter = NULL;
  int r = schema_ctr_filter_parse (req->filter, req->n_filter, &filter, &err);
  moby__buildkit__v1__list_workers_request__free_unpacked (req, NULL);
  if (r < 0)
    return fail (call, err);

  char host[256] = "";
  gethostname (host, sizeof host - 1);
  cleanup_free char *gateway = worker_host_gateway_ip ();
  /* Labels in a fixed order: the map's wire order is ours to choose. */
  const char *kv[][2] = {
    { LABEL_PREFIX "executor", buildah_isolation () },
    { LABEL_PREFIX "hostname", host },
    { LABEL_PREFIX "network", "host" }, /* RUN steps use the host's network */
    { LABEL_PREFIX "snapshotter", buildah_storage_driver () },
    { LABEL_PREFIX "moby.host-gateway-ip", gateway },
  };
  Moby__Buildkit__V1__Types__WorkerRecord__LabelsEntry labels[ARRAY_SIZE (kv)];
  Moby__Buildkit__V1__Types__WorkerRecord__LabelsEntry *label_ptrs[ARRAY_SIZE (kv)];
  size_t n_labels = 0;
  for (size_t i = 0; i < ARRAY_SIZE (kv); i++)
    {
      if (kv[i][1] == NULL)
        continue;
      moby__buildkit__v1__types__worker_record__labels_entry__init (&labels[n_labels]);
      labels[n_labels].key = (char *) kv[i][0];
      labels[n_labels].value = (char *) kv[i][1];
      label_ptrs[n_labels] = &labels[n_labels];
      n_labels++;
    }

  ps_strv plats = { 0 };
  worker_platforms (&plats);
  Pb__Platform *platforms = xcalloc (plats.n + 1, sizeof *platforms);
  Pb__Platform **platform_ptrs = xcalloc (plats.n + 1, sizeof *platform_ptrs);
  ps_buf joined = { 0 };
  for (size_t i = 0; i < plats.n; i++)
    {
      /* "os/arch[/variant]", split in place */
      char *os = plats.v[i], *arch = strchr (os, '/');
      *arch++ = '\0';
      char *variant = strchr (arch, '/');
      if (variant)
        *variant++ = '\0';
      pb__platform__init (&platforms[i]);
      platforms[i].os = os;
      platforms[i].architecture = arch;
      platforms[i].variant = variant ? variant : (char *) "";
      platform_ptrs[i] = &platforms[i];
      cleanup_free char *name = variant ? xasprintf ("%s/%s/%s", os, arch, variant) : xasprintf ("%s/%s", os, arch);
      if (i)
        ps_buf_append (&joined, ",", 1);
      ps_buf_append (&joined, name, strlen (name));
    }
  ps_buf_append (&joined, "", 1);

  Moby__Buildkit__V1__Types__BuildkitVersion version;
  buildkit_version (&version);
  Moby__Buildkit__V1__Types__WorkerRecord w = MOBY__BUILDKIT__V1__TYPES__WORKER_RECORD__INIT;
  w.id = (char *) worker_id (ps_cfg.state_dir);
  w.n_labels = n_labels;
  w.labels = label_ptrs;
  w.n_platforms = plats.n;
  w.platforms = platform_ptrs;
  /* The GC policy of --gc-keep-storage / --gc-keep-duration, as one rule
     over every entry; none without them (the cache shrinks only when a
     client prunes it). */
  Moby__Buildkit__V1__Types__GCPolicy gcp = MOBY__BUILDKIT__V1__TYPES__GCPOLICY__INIT;
  Moby__Buildkit__V1__Types__GCPolicy *gcps[1] = { &gcp };
  const struct cache_gc_policy *policy = cache_gc_policy ();
  if (policy)
    {
      gcp.all = true;
      gcp.keepduration = policy->keep_duration_ns;
      gcp.maxusedspace = (int64_t) policy->keep_bytes;
      w.n_gcpolicy = 1;
      w.gcpolicy = gcps;
    }
  w.buildkitversion = &version;

  struct worker_view view = { .id = w.id, .labels = labels, .n_labels = n_labels, .platforms = joined.data };
  Moby__Buildkit__V1__Types__WorkerRecord *wp = &w;
  Moby__Buildkit__V1__ListWorkersResponse resp = MOBY__BUILDKIT__V1__LIST_WORKERS_RESPONSE__INIT;
  if (schema_ctr_filter_match (filter, worker_field, &view))
    {
      resp.n_record = 1;
      resp.record = &wp;
    }
  reply (call, &resp.base);

  schema_ctr_filter_free (filter);
  ps_buf_free (&joined);
  free (platform_ptrs);
  free (platforms);
  ps_strv_free (&plats);
}

/* ---- Info ------------------------------------------------------------------------ */

static void
control_info (grpc_call *call, void *ud)
{
  ProtobufCMessage *req = recv_request (call, &moby__buildkit__v1__info_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked (req, NULL);
  Moby__Buildkit__V1__Types__BuildkitVersion version;
  buildkit_version (&version);
  Moby__Buildkit__V1__InfoResponse resp = MOBY__BUILDKIT__V1__INFO_RESPONSE__INIT;
  resp.buildkitversion = &version;
  reply (call, &resp.base);
}

/* ---- DiskUsage and Prune ----------------------------------------------------------- */

/* BuildKit's usage record filter fields (cache/manager.go adaptUsageInfo):
   id, type, description, mutable, immutable, inuse, shared, private,
   parents. */
static bool
usage_field (void *obj, const char *const *path, size_t n, const char **value)
{
  const struct cache_prune_entry *e = obj;
  const char *f = n == 1 ? path[0] : "";
  *value = "";
  if (strcmp (f, "id") == 0)
    return (*value = e->id), true;
  if (strcmp (f, "type") == 0)
    return (*value = e->type), true;
  if (strcmp (f, "description") == 0)
    return (*value = cache_type_description (e->type)), true;
  if (strcmp (f, "mutable") == 0)
    return cache_type_mutable (e->type);
  if (strcmp (f, "immutable") == 0)
    return !cache_type_mutable (e->type);
  if (strcmp (f, "private") == 0)
    return true; /* nothing is shared between records */
  return false;  /* inuse, shared, parents: never */
}

static bool
usage_select (const struct cache_prune_entry *e, void *data)
{
  return schema_ctr_filter_match (data, usage_field, (void *) e);
}

/* One UsageRecord for a cache entry (borrowing its strings). */
static void
usage_record (Moby__Buildkit__V1__UsageRecord *u, Google__Protobuf__Timestamp ts[2], const struct cache_prune_entry *e)
{
  moby__buildkit__v1__usage_record__init (u);
  u->id = e->id;
  u->mutable_ = cache_type_mutable (e->type);
  u->size = (int64_t) e->size;
  u->createdat = timestamp (&ts[0], e->created_ns);
  u->lastusedat = timestamp (&ts[1], e->last_used_ns);
  u->description = (char *) cache_type_description (e->type);
  u->recordtype = (char *) e->type;
}

static void
control_disk_usage (grpc_call *call, void *ud)
{
  Moby__Buildkit__V1__DiskUsageRequest *req
      = (Moby__Buildkit__V1__DiskUsageRequest *) recv_request (call, &moby__buildkit__v1__disk_usage_request__descriptor);
  if (req == NULL)
    return;
  ps_error *err = NULL;
  ctr_filter *filter = NULL;
  struct cache_prune_opts o = { .keep_duration_ns = req->agelimit, .select = usage_select };
  int r = schema_ctr_filter_parse (req->filter, req->n_filter, &filter, &err);
  if (r == 0 && req->agelimit < 0)
    r = ps_error_set (&err, 400, "ageLimit must not be negative");
  moby__buildkit__v1__disk_usage_request__free_unpacked (req, NULL);
  struct cache_prune_report rep = { 0 };
  o.select_data = filter;
  if (r == 0)
    r = cache_usage (ps_cfg.state_dir, &o, &rep, &err);
  schema_ctr_filter_free (filter);
  if (r < 0)
    return fail (call, err);

  Moby__Buildkit__V1__UsageRecord *records = xcalloc (rep.n_deleted + 1, sizeof *records);
  Moby__Buildkit__V1__UsageRecord **ptrs = xcalloc (rep.n_deleted + 1, sizeof *ptrs);
  Google__Protobuf__Timestamp *ts = xcalloc (2 * rep.n_deleted + 1, sizeof *ts);
  for (size_t i = 0; i < rep.n_deleted; i++)
    {
      usage_record (&records[i], &ts[2 * i], &rep.deleted[i]);
      ptrs[i] = &records[i];
    }
  Moby__Buildkit__V1__DiskUsageResponse resp = MOBY__BUILDKIT__V1__DISK_USAGE_RESPONSE__INIT;
  resp.n_record = rep.n_deleted;
  resp.record = ptrs;
  reply (call, &resp.base);
  free (ts);
  free (ptrs);
  free (records);
  cache_prune_report_free (&rep);
}

static bool
prune_give_up (void *data)
{
  return grpc_call_cancelled (data);
}

/* Prune as /build/prune does (waiting for running builds, at most
   PS_PRUNE_WAIT_MS, then FAILED_PRECONDITION), then one UsageRecord per
   removed entry. */
static void
control_prune (grpc_call *call, void *ud)
{
  Moby__Buildkit__V1__PruneRequest *req
      = (Moby__Buildkit__V1__PruneRequest *) recv_request (call, &moby__buildkit__v1__prune_request__descriptor);
  if (req == NULL)
    return;
  ps_error *err = NULL;
  ctr_filter *filter = NULL;
  struct cache_prune_opts o = {
    .all = req->all,
    .keep_duration_ns = req->keepduration,
    .max_used_bytes = req->maxusedspace > 0 ? (uint64_t) req->maxusedspace : 0,
    .reserved_bytes = req->reservedspace > 0 ? (uint64_t) req->reservedspace : 0,
    .select = usage_select,
    .give_up = prune_give_up,
    .give_up_data = call,
    .wait_ms = PS_PRUNE_WAIT_MS,
  };
  int r = 0;
  if (req->keepduration < 0 || req->maxusedspace < 0 || req->reservedspace < 0 || req->minfreespace < 0)
    r = ps_error_set (&err, 400, "keepDuration, reservedSpace, maxUsedSpace and minFreeSpace must not be negative");
  else if (req->minfreespace)
    r = ps_error_set (&err, 400, "min-free-space is not supported by podsolve (use keep-storage or max-used-space)");
  if (r == 0)
    r = schema_ctr_filter_parse (req->filter, req->n_filter, &filter, &err);
  moby__buildkit__v1__prune_request__free_unpacked (req, NULL);
  struct cache_prune_report rep = { 0 };
  o.select_data = filter;
  if (r == 0)
    r = cache_prune (ps_cfg.state_dir, &o, &rep, &err);
  schema_ctr_filter_free (filter);
  if (r < 0)
    return fail (call, err);

  for (size_t i = 0; i < rep.n_deleted && r == 0; i++)
    {
      Moby__Buildkit__V1__UsageRecord u;
      Google__Protobuf__Timestamp ts[2];
      usage_record (&u, ts, &rep.deleted[i]);
      r = send_message (call, &u.base, &err);
    }
  cache_prune_report_free (&rep);
  if (r < 0)
    return fail (call, err);
  grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

/* ---- Status ------------------------------------------------------------------------ */

/* The job with `ref`, waiting up to PS_STATUS_JOB_WAIT_MS for it to be
   registered (a client asks for the status of the Solve it is about to
   send: buildx opens Status before Solve, so the wait is woken by the
   registration itself, and looks at the client every PS_STREAM_POLL_MS);
   NULL when it never came or the client left. */
static solver_job *
wait_for_job (grpc_call *call, const char *ref)
{
  int64_t deadline = ps_deadline_ns_after_ms (PS_STATUS_JOB_WAIT_MS);
  for (;;)
    {
      int64_t left_ms = (deadline - ps_monotonic_ns ()) / 1000000;
      solver_job *job = solver_jobs_wait_for (ref, left_ms < PS_STREAM_POLL_MS ? (int) (left_ms > 0 ? left_ms : 0)
                                                                               : PS_STREAM_POLL_MS);
      if (job || grpc_call_cancelled (call) || ps_deadline_passed (deadline))
        return job;
    }
}

/* Every event of the job's log, replayed and then followed, one
   StatusResponse message per progress event; OK once the job's final
   event went out (its result or error is Solve's to report). */
static void
control_status (grpc_call *call, void *ud)
{
  Moby__Buildkit__V1__StatusRequest *req
      = (Moby__Buildkit__V1__StatusRequest *) recv_request (call, &moby__buildkit__v1__status_request__descriptor);
  if (req == NULL)
    return;
  cleanup_free char *ref = xstrdup (req->ref);
  moby__buildkit__v1__status_request__free_unpacked (req, NULL);
  if (*ref == '\0')
    return grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "StatusRequest.Ref is empty");

  solver_job *job = wait_for_job (call, ref);
  if (job == NULL)
    {
      if (grpc_call_cancelled (call))
        return grpc_call_finish (call, GRPC_STATUS_CANCELLED, "the client went away");
      return grpc_call_finish (call, GRPC_STATUS_NOT_FOUND, "no such job %s", ref);
    }

  struct event_encoder *enc = schema_status_response_encoder_new ();
  ps_buf msg = { 0 };
  ps_error *err = NULL;
  for (size_t idx = 0;;)
    {
      if (grpc_call_cancelled (call))
        {
          grpc_call_finish (call, GRPC_STATUS_CANCELLED, "the client went away");
          break;
        }
      bool done = false;
      const struct solver_event *ev = solver_job_next (job, idx, PS_STREAM_POLL_MS, &done);
      if (ev == NULL)
        {
          if (done)
            {
              grpc_call_finish (call, GRPC_STATUS_OK, NULL);
              break;
            }
          continue;
        }
      idx++;
      ps_buf_reset (&msg);
      event_encoder_encode (enc, ev, &msg);
      if (msg.len && grpc_call_send (call, msg.data, msg.len, &err) < 0)
        {
          fail (call, err);
          break;
        }
      if (ev->kind == SOLVER_EV_RESULT || ev->kind == SOLVER_EV_ERROR)
        {
          grpc_call_finish (call, GRPC_STATUS_OK, NULL);
          break;
        }
    }
  ps_buf_free (&msg);
  event_encoder_free (enc);
  solver_job_unref (job);
}

/* ---- build history ---------------------------------------------------------------- */

/* UNIMPLEMENTED, on purpose.  buildx (driver/driver.go historyAPISupported)
   probes with ListenBuildHistory{Ref:"buildx-test-history-api-feature",
   EarlyExit:true}: a clean end of stream turns the history API on, and then
   every build is followed by ListenBuildHistory{Ref:<its ref>} whose
   records buildx reads from the containerd content store (provenance for
   the metadata file, `buildx history` logs, traces and inspect), and
   Docker Desktop is told a build ref to open.  podsolve keeps no build
   records and has no content store, so an empty stream would claim a
   history that is not there (an extra "resolving provenance" step on
   every build, build refs that lead nowhere).  Any error makes buildx
   treat the API as absent and build as with an older BuildKit, which is
   the truth.  The request is still decoded, so garbage is INVALID_ARGUMENT
   like everywhere else. */
static void
control_listen_build_history (grpc_call *call, void *ud)
{
  ProtobufCMessage *req = recv_request (call, &moby__buildkit__v1__build_history_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked (req, NULL);
  grpc_call_finish (call, GRPC_STATUS_UNIMPLEMENTED, "podsolve keeps no build history");
}

static void
control_update_build_history (grpc_call *call, void *ud)
{
  ProtobufCMessage *req = recv_request (call, &moby__buildkit__v1__update_build_history_request__descriptor);
  if (req == NULL)
    return;
  protobuf_c_message_free_unpacked (req, NULL);
  grpc_call_finish (call, GRPC_STATUS_UNIMPLEMENTED, "podsolve keeps no build history");
}

/* ---- Control.Solve ------------------------------------------------------------ */

/* How often a waiting Solve looks at its call (a cancel is noticed within this). */
#define CONTROL_SOLVE_POLL_MS 200

static bool
solve_call_gone (void *ud)
{
  return grpc_call_cancelled (ud);
}

/* Gateway mode: the result comes from the client over LLBBridge (the build
   is named by Ref); FrontendInputs are served to it by LLBBridge.Inputs. */
static struct solve_gateway
solve_gateway_new (grpc_call *call, const Moby__Buildkit__V1__SolveRequest *rq, const struct solve_request *sr)
{
  size_t n = rq->n_frontendinputs;
  struct gateway_input *inputs = xcalloc (n + 1, sizeof *inputs);
  for (size_t i = 0; i < n; i++)
    inputs[i] = gateway_input_pack (rq->frontendinputs[i]->key, rq->frontendinputs[i]->value);
  struct gateway_build_opts o = {
    .session = sr->session,
    .entitlements = &sr->entitlements,
    .state_dir = ps_cfg.state_dir,
    .max_context_bytes = ps_cfg.max_context_bytes,
    .inputs = inputs,
    .n_inputs = n,
    .cache_imports = sr->cache_imports,
    .n_cache_imports = sr->n_cache_imports,
    .cache_exports = sr->cache_exports,
    .n_cache_exports = sr->n_cache_exports,
    .cancelled = solve_call_gone,
    .cancelled_ud = call,
  };
  struct solve_gateway gw = { gateway_frontend_run, gateway_frontend_new (sr->ref, &o), gateway_frontend_free };
  for (size_t i = 0; i < n; i++)
    free ((uint8_t *) inputs[i].definition);
  free (inputs);
  return gw;
}

/* `sr` and `gw` (gateway mode, or zeroed) are consumed. */
static int
solve_start (struct solve_request *sr, const uint8_t *definition, size_t definition_len,
             const struct solve_gateway *gw, const char *client, solver_job **out, ps_error **err)
{
  char hex[17];
  ps_random_hex (hex, 8);
  cleanup_free char *dir = xasprintf ("%s/solves/%s", ps_cfg.state_dir, hex);
  bool allowed = true;
  for (size_t i = 0; i < sr->entitlements.n && allowed; i++)
    allowed = config_check_entitlement (sr->entitlements.v[i], err) == 0;
  if (!allowed || ps_mkdir_p (dir, 0700, err) < 0)
    {
      schema_solve_request_free (sr);
      if (gw->ud_free)
        gw->ud_free (gw->ud);
      return -1;
    }
  cleanup_free char *ref = sr->ref ? xstrdup (sr->ref) : NULL;
  const char *kind = gw->run ? "gateway" : sr->has_definition ? "llb" : "dockerfile.v0";
  struct solve_env env = {
    .job_dir = dir,
    .output_roots = &ps_cfg.output_roots,
    .state_dir = ps_cfg.state_dir,
    .max_context_bytes = ps_cfg.max_context_bytes,
    .definition = definition,
    .definition_len = definition_len,
    .gateway = *gw, /* the plan owns it from here */
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
  cleanup_free char *what = xasprintf ("Control.Solve (%s)", kind);
  handler_log_job_start (NULL, job, what, client, NULL);
  /* A client-side gateway build waits for its client first; buildx's
     probe (a build returning nothing) never does any work. */
  if (gw->run)
    solver_job_defer_slot (job);
  if (solver_job_start (job, solve_run, plan, (void (*) (void *)) solve_plan_free, err) < 0)
    {
      solver_jobs_unregister (job);
      solve_plan_free (plan);
      solver_job_unref (job);
      ps_rm_rf (dir, NULL);
      return -1;
    }
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
  if (grpc_call_recv_request (call, &msg, &len) < 0)
    return;
  Moby__Buildkit__V1__SolveRequest *rq = moby__buildkit__v1__solve_request__unpack (NULL, len, msg);
  free (msg);
  if (rq == NULL)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "SolveRequest: not a valid protobuf message");
      return;
    }
  struct solve_request sr;
  cleanup_free uint8_t *definition = NULL;
  size_t def_len = 0;
  bool internal = false;
  int r = schema_control_solve_request (rq, &sr, &definition, &def_len, &internal, &err);
  struct solve_gateway gw = { 0 };
  if (r == 0 && schema_control_solve_is_gateway (rq))
    gw = solve_gateway_new (call, rq, &sr);
  moby__buildkit__v1__solve_request__free_unpacked (rq, NULL);
  solver_job *job = NULL;
  if (r == 0)
    r = solve_start (&sr, definition, def_len, &gw, grpc_call_metadata (call, "user-agent"), &job, &err);
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

/* ---- Control.Session (grpchijack): session/tunnel.c --------------------------- */

static void
control_session (grpc_call *call, void *ud)
{
  (void) ud;
  session_tunnel_serve (call);
}

/* ---- the table -------------------------------------------------------------------- */

const struct grpc_method grpc_control_methods[] = {
  { CONTROL "ListWorkers", control_list_workers, NULL },
  { CONTROL "Info", control_info, NULL },
  { CONTROL "DiskUsage", control_disk_usage, NULL },
  { CONTROL "Prune", control_prune, NULL },
  { CONTROL "Status", control_status, NULL },
  { CONTROL "ListenBuildHistory", control_listen_build_history, NULL },
  { CONTROL "UpdateBuildHistory", control_update_build_history, NULL },
  /* Solve (direct mode) and Session */
  { CONTROL "Solve", control_solve, NULL },
  { CONTROL "Session", control_session, NULL },
};
const size_t grpc_control_n_methods = ARRAY_SIZE (grpc_control_methods);
