/* grpc_bridge.c — moby.buildkit.v1.frontend.LLBBridge, the gateway API a
 * client-side build (buildx, buildctl: BuildKit's client.Build) drives
 * while its Control.Solve waits (grpc-clients.md §3).  Every call names
 * its build with the metadata `buildkit-controlapi-buildid`; the build,
 * its refs and the work live in solver/gateway.c.  NewContainer and the
 * exec/container RPCs are not served (UNIMPLEMENTED). */
#define _GNU_SOURCE
#include "handlers/grpc.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "schema/apicaps.pb-c.h"
#include "schema/bridge_request.h"
#include "schema/gateway.pb-c.h"
#include "session/session_limits.h"
#include "solver/gateway.h"
#include "solver/job.h"

#define BRIDGE_PATH(m) "/moby.buildkit.v1.frontend.LLBBridge/" m
#define BUILD_ID_KEY "buildkit-controlapi-buildid"

/* What Ping claims: only what the methods below really do
   (frontend/gateway/pb/caps.go).  Left out on purpose: solve.inlinereturn
   (SolveRequest.Final), returnmap and multi-platform results,
   gateway.solve.metadata,
   gateway.exec*, source.metaresolver's image attestations and http
   checksum requests. */
static const char *const frontend_caps[] = {
  "solve.base",        "resolveimage", "resolveimage.resolvemode", "readfile", "return", "readdir", "statfile",
  "importcaches",      "proto.refarray", "gateway.evaluate", "gateway.solve.evaluate", "gateway.warnings",
  "source.metaresolver", "frontend.inputs",
};

/* The LLB the engine (solver/llb/) runs (solver/pb/caps.go); ssh mounts
   forward the client's agent (solver/llb/exec.c, session/sshforward.c).
   Hints the engine may ignore without changing a result are claimed too
   (local sources' sharedkeyhint, differ and unique; meta.exportcache),
   since BuildKit's llb package refuses to marshal an op whose options
   name a cap the daemon lacks. */
static const char *const llb_caps[] = {
  "source.image",  "source.image.resolvemode", "source.local", "source.local.unique", "source.local.sessionid",
  "source.local.includepatterns", "source.local.followpaths", "source.local.excludepatterns",
  "source.local.sharedkeyhint", "source.local.differ", "source.git", "source.git.keepgitdir", "source.git.fullurl",
  "source.git.skipsubmodules", "source.git.checksum", "source.http", "source.http.checksum", "source.http.perm",
  "soruce.http.uidgid", /* sic: BuildKit's spelling */
  "exec.meta.base", "exec.meta.network", "exec.meta.proxyenv", "exec.meta.security", "exec.meta.ulimit",
  "exec.mount.bind", "exec.mount.bind.readwrite-nooutput", "exec.mount.cache", "exec.mount.cache.sharing",
  "exec.mount.selector", "exec.mount.tmpfs", "exec.mount.tmpfs.size", "exec.mount.secret", "exec.mount.ssh",
  "exec.secretenv",
  "exec.validexitcode", "file.base", "file.rm.wildcard", "file.copy.includeexcludepatterns",
  "file.copy.modestring", "file.copy.alwaysreplaceexistingdestpaths", "file.symlink.create", "constraints",
  "platform", "meta.ignorecache", "meta.description", "meta.exportcache", "mergeop", "diffop",
  /* remote caches of type s3 (api-docs/s3.md): buildx drops --cache-to and
     --cache-from type=s3 silently unless the daemon claims this */
  "cache.s3",
};

/* ---- helpers ------------------------------------------------------------------ */

/* Receive and decode the one request message; NULL when the call was
   finished here (transport error, or INVALID_ARGUMENT for bytes that are
   not a `d`). */
static ProtobufCMessage *
recv_request (grpc_call *call, const ProtobufCMessageDescriptor *d)
{
  cleanup_free void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_request (call, &msg, &len) < 0)
    return NULL;
  ProtobufCMessage *m = protobuf_c_message_unpack (d, NULL, len, msg);
  if (m == NULL)
    grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "malformed %s", d->short_name);
  return m;
}

/* The build the call belongs to (waits for it as BuildKit does), or NULL
   when the call was finished here.  A frontend container's stdio
   connection serves one build, its tag (its calls carry no metadata: in
   BuildKit the llbBridgeForwarder is one per frontend). */
static gateway_build *
call_build (grpc_call *call)
{
  const char *bound = grpc_call_tag (call);
  const char *id = bound ? bound : grpc_call_metadata (call, BUILD_ID_KEY);
  if (id == NULL || *id == '\0')
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "no " BUILD_ID_KEY " metadata: LLBBridge calls belong "
                                                            "to a Control.Solve");
      return NULL;
    }
  gateway_build *b = gateway_build_lookup (id, GATEWAY_BUILD_WAIT_MS);
  /* The build is registered when its Control.Solve's job starts; a job
     still queued behind --max-parallel (the ninth of eight builds at once)
     is waited for as long as it waits, and once more after it starts. */
  for (int waits_after_start = 0; b == NULL && waits_after_start < 2;)
    {
      solver_job *job = solver_jobs_lookup (id);
      enum solver_job_state st = job ? solver_job_state (job) : SOLVER_JOB_FAILED;
      if (job)
        solver_job_unref (job);
      if (st == SOLVER_JOB_RUNNING)
        waits_after_start++;
      else if (st != SOLVER_JOB_QUEUED)
        break;
      b = gateway_build_lookup (id, GATEWAY_BUILD_WAIT_MS);
    }
  if (b == NULL)
    grpc_call_finish (call, GRPC_STATUS_NOT_FOUND, "no such build %s", id);
  return b;
}

/* The request of a call that belongs to a build: the message and the build
   (*b, a reference the caller drops), or NULL when the call was finished
   here (malformed request, no or unknown build id). */
static ProtobufCMessage *
begin_call (grpc_call *call, const ProtobufCMessageDescriptor *d, gateway_build **b)
{
  ProtobufCMessage *m = recv_request (call, d);
  if (m == NULL)
    return NULL;
  *b = call_build (call);
  if (*b == NULL)
    {
      protobuf_c_message_free_unpacked (m, NULL);
      return NULL;
    }
  return m;
}

static void
reply (grpc_call *call, const ProtobufCMessage *m)
{
  size_t n = protobuf_c_message_get_packed_size (m);
  cleanup_free uint8_t *buf = xmalloc (n + 1);
  protobuf_c_message_pack (m, buf);
  ps_error *err = NULL;
  if (grpc_call_send (call, buf, n, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  grpc_call_finish (call, GRPC_STATUS_OK, "%s", "");
}

static void
finish_error (grpc_call *call, ps_error *err)
{
  grpc_call_finish_error (call, err);
  ps_error_free (err);
}

static bool
call_gone (void *ud)
{
  return grpc_call_cancelled (ud);
}

/* ---- Ping --------------------------------------------------------------------- */

static Moby__Buildkit__V1__Apicaps__APICap **
caps_list (const char *const *ids, size_t n, Moby__Buildkit__V1__Apicaps__APICap *store)
{
  Moby__Buildkit__V1__Apicaps__APICap **v = xcalloc (n + 1, sizeof *v);
  for (size_t i = 0; i < n; i++)
    {
      moby__buildkit__v1__apicaps__apicap__init (&store[i]);
      store[i].id = (char *) ids[i];
      store[i].enabled = true;
      v[i] = &store[i];
    }
  return v;
}

static void
bridge_ping (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  ProtobufCMessage *m = begin_call (call, &moby__buildkit__v1__frontend__ping_request__descriptor, &b);
  if (m == NULL)
    return;
  protobuf_c_message_free_unpacked (m, NULL);
  Moby__Buildkit__V1__Apicaps__APICap fstore[ARRAY_SIZE (frontend_caps)], lstore[ARRAY_SIZE (llb_caps)];
  Moby__Buildkit__V1__Frontend__PongResponse resp = MOBY__BUILDKIT__V1__FRONTEND__PONG_RESPONSE__INIT;
  resp.n_frontendapicaps = ARRAY_SIZE (frontend_caps);
  resp.frontendapicaps = caps_list (frontend_caps, ARRAY_SIZE (frontend_caps), fstore);
  resp.n_llbcaps = ARRAY_SIZE (llb_caps);
  resp.llbcaps = caps_list (llb_caps, ARRAY_SIZE (llb_caps), lstore);
  reply (call, &resp.base);
  free (resp.frontendapicaps);
  free (resp.llbcaps);
  gateway_build_unref (b);
}

/* ---- Solve -------------------------------------------------------------------- */

static void
bridge_solve (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__SolveRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__solve_request__descriptor, &b);
  if (req == NULL)
    return;
  struct bridge_solve bs;
  cleanup_free char *ref_id = NULL;
  ps_error *err = NULL;
  int r = schema_bridge_solve (req, &bs, &err);
  if (r == 0)
    {
      struct gateway_input *inputs = xcalloc (bs.n_inputs + 1, sizeof *inputs);
      for (size_t i = 0; i < bs.n_inputs; i++)
        inputs[i] = (struct gateway_input){ bs.inputs[i].name, bs.inputs[i].definition, bs.inputs[i].len };
      struct gateway_solve_req sr = {
        .frontend = bs.frontend,
        .frontend_opt = &bs.frontend_opt,
        .definition = bs.definition,
        .definition_len = bs.definition_len,
        .cache_imports = bs.cache_imports,
        .n_cache_imports = bs.n_cache_imports,
        .inputs = inputs,
        .n_inputs = bs.n_inputs,
      };
      r = gateway_build_solve (b, &sr, call_gone, call, &ref_id, &err);
      free (inputs);
    }
  if (r < 0)
    {
      ps_debug ("LLBBridge.Solve: %s", err->msg);
      finish_error (call, err);
    }
  else
    {
      /* As BuildKit's gateway: the result (a Ref with its definition, or
         the deprecated bare id) when the client can take it, else the
         deprecated SolveResponse.ref. */
      Moby__Buildkit__V1__Frontend__SolveResponse resp = MOBY__BUILDKIT__V1__FRONTEND__SOLVE_RESPONSE__INIT;
      Moby__Buildkit__V1__Frontend__Result res = MOBY__BUILDKIT__V1__FRONTEND__RESULT__INIT;
      Moby__Buildkit__V1__Frontend__Ref ref = MOBY__BUILDKIT__V1__FRONTEND__REF__INIT;
      char *id = ref_id ? ref_id : (char *) "";
      if (req->allowresultreturn)
        {
          if (req->allowresultarrayref)
            {
              ref.id = id;
              ref.def = bs.definition ? req->definition : NULL;
              res.result_case = MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REF;
              res.ref = &ref;
            }
          else
            {
              res.result_case = MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REF_DEPRECATED;
              res.refdeprecated = id;
            }
          resp.result = &res;
        }
      else
        resp.ref = id;
      reply (call, &resp.base);
    }
  schema_bridge_solve_free (&bs);
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

/* ---- Return ------------------------------------------------------------------- */

static void
bridge_return (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__ReturnRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__return_request__descriptor, &b);
  if (req == NULL)
    return;
  ps_error *err = NULL;
  const char *id = NULL;
  int code = req->error ? req->error->code : 0;
  const char *message = req->error ? req->error->message : NULL;
  int r = code == 0 ? schema_bridge_result_ref (req->result, &id, &err) : 0;
  cleanup_free char *config = NULL;
  if (r == 0 && req->result)
    config = schema_bridge_result_image_config (req->result);
  if (r == 0)
    r = gateway_build_return (b, id, code, message, config, &err);
  if (r < 0)
    finish_error (call, err);
  else
    {
      Moby__Buildkit__V1__Frontend__ReturnResponse resp = MOBY__BUILDKIT__V1__FRONTEND__RETURN_RESPONSE__INIT;
      reply (call, &resp.base);
    }
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

/* ---- reading refs ------------------------------------------------------------- */

static void
bridge_read_file (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__ReadFileRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__read_file_request__descriptor, &b);
  if (req == NULL)
    return;
  ps_buf data = { 0 };
  ps_error *err = NULL;
  /* room for the response's own field header inside the message limit */
  size_t max = PS_GRPC_MAX_MESSAGE - 16;
  if (gateway_ref_read_file (b, req->ref, req->filepath, req->range != NULL, req->range ? req->range->offset : 0,
                             req->range ? req->range->length : 0, max, &data, &err) < 0)
    finish_error (call, err);
  else
    {
      Moby__Buildkit__V1__Frontend__ReadFileResponse resp = MOBY__BUILDKIT__V1__FRONTEND__READ_FILE_RESPONSE__INIT;
      resp.data.data = (uint8_t *) data.data;
      resp.data.len = data.len;
      reply (call, &resp.base);
    }
  ps_buf_free (&data);
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

static void
bridge_read_dir (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__ReadDirRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__read_dir_request__descriptor, &b);
  if (req == NULL)
    return;
  Fsutil__Types__Stat **entries = NULL;
  size_t n = 0;
  ps_error *err = NULL;
  if (gateway_ref_read_dir (b, req->ref, req->dirpath, req->includepattern, &entries, &n, &err) < 0)
    finish_error (call, err);
  else
    {
      Moby__Buildkit__V1__Frontend__ReadDirResponse resp = MOBY__BUILDKIT__V1__FRONTEND__READ_DIR_RESPONSE__INIT;
      resp.n_entries = n;
      resp.entries = entries;
      if (protobuf_c_message_get_packed_size (&resp.base) > PS_GRPC_MAX_MESSAGE)
        grpc_call_finish (call, GRPC_STATUS_RESOURCE_EXHAUSTED, "ReadDir %s: %zu entries do not fit in a message",
                          req->dirpath, n);
      else
        reply (call, &resp.base);
    }
  for (size_t i = 0; i < n; i++)
    {
      gateway_stat_free (entries[i]);
      free (entries[i]);
    }
  free (entries);
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

static void
bridge_stat_file (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__StatFileRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__stat_file_request__descriptor, &b);
  if (req == NULL)
    return;
  Fsutil__Types__Stat st;
  fsutil__types__stat__init (&st);
  ps_error *err = NULL;
  if (gateway_ref_stat (b, req->ref, req->path, &st, &err) < 0)
    finish_error (call, err);
  else
    {
      Moby__Buildkit__V1__Frontend__StatFileResponse resp = MOBY__BUILDKIT__V1__FRONTEND__STAT_FILE_RESPONSE__INIT;
      resp.stat = &st;
      reply (call, &resp.base);
      gateway_stat_free (&st);
    }
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

static void
bridge_evaluate (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__EvaluateRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__evaluate_request__descriptor, &b);
  if (req == NULL)
    return;
  ps_error *err = NULL;
  if (gateway_build_ref_check (b, req->ref, &err) < 0)
    finish_error (call, err);
  else
    {
      Moby__Buildkit__V1__Frontend__EvaluateResponse resp = MOBY__BUILDKIT__V1__FRONTEND__EVALUATE_RESPONSE__INIT;
      reply (call, &resp.base);
    }
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

/* ---- images and inputs ----------------------------------------------------------- */

static void
bridge_resolve_image_config (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__ResolveImageConfigRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__resolve_image_config_request__descriptor, &b);
  if (req == NULL)
    return;
  cleanup_free char *digest = NULL;
  cleanup_free char *config = NULL;
  ps_error *err = NULL;
  if (req->n_sourcepolicies > 0)
    {
      ps_error_set (&err, 501, "ResolveImageConfig: SourcePolicies are not supported by podsolve");
      finish_error (call, err);
    }
  else if (gateway_resolve_image_config (b, req->ref, req->resolvemode, &digest, &config, &err) < 0)
    finish_error (call, err);
  else
    {
      Moby__Buildkit__V1__Frontend__ResolveImageConfigResponse resp
          = MOBY__BUILDKIT__V1__FRONTEND__RESOLVE_IMAGE_CONFIG_RESPONSE__INIT;
      resp.digest = digest;
      resp.config.data = (uint8_t *) config;
      resp.config.len = strlen (config);
      resp.ref = req->ref;
      reply (call, &resp.base);
    }
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

/* ResolveSourceMeta: what BuildKit's grpcclient does itself for a daemon
   without the call — an image's digest and config through
   ResolveImageConfig (the identifier kept), any other source handed back
   as it came, with no metadata. */
static void
bridge_resolve_source_meta (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__ResolveSourceMetaRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__resolve_source_meta_request__descriptor, &b);
  if (req == NULL)
    return;
  ps_error *err = NULL;
  const char *id = req->source && req->source->identifier ? req->source->identifier : "";
  Moby__Buildkit__V1__Frontend__ResolveSourceMetaResponse resp
      = MOBY__BUILDKIT__V1__FRONTEND__RESOLVE_SOURCE_META_RESPONSE__INIT;
  Moby__Buildkit__V1__Frontend__ResolveSourceImageResponse image
      = MOBY__BUILDKIT__V1__FRONTEND__RESOLVE_SOURCE_IMAGE_RESPONSE__INIT;
  cleanup_free char *digest = NULL;
  cleanup_free char *config = NULL;
  resp.source = req->source;
  if (req->source == NULL)
    {
      ps_error_set (&err, 400, "ResolveSourceMeta: no Source");
      finish_error (call, err);
    }
  else if (req->n_sourcepolicies > 0)
    {
      ps_error_set (&err, 501, "ResolveSourceMeta: SourcePolicies are not supported by podsolve");
      finish_error (call, err);
    }
  else if (!ps_str_has_prefix (id, "docker-image://"))
    reply (call, &resp.base);
  else if (gateway_resolve_image_config (b, id + strlen ("docker-image://"), req->resolvemode, &digest, &config,
                                         &err) < 0)
    finish_error (call, err);
  else
    {
      image.digest = digest;
      if (!(req->image && req->image->noconfig))
        {
          image.config.data = (uint8_t *) config;
          image.config.len = strlen (config);
        }
      resp.image = &image;
      reply (call, &resp.base);
    }
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

static void
bridge_inputs (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  ProtobufCMessage *m = begin_call (call, &moby__buildkit__v1__frontend__inputs_request__descriptor, &b);
  if (m == NULL)
    return;
  protobuf_c_message_free_unpacked (m, NULL);
  size_t n = 0;
  const struct gateway_input *in = gateway_build_inputs (b, &n);
  Moby__Buildkit__V1__Frontend__InputsResponse resp = MOBY__BUILDKIT__V1__FRONTEND__INPUTS_RESPONSE__INIT;
  Moby__Buildkit__V1__Frontend__InputsResponse__DefinitionsEntry *entries = xcalloc (n + 1, sizeof *entries);
  Moby__Buildkit__V1__Frontend__InputsResponse__DefinitionsEntry **v = xcalloc (n + 1, sizeof *v);
  Pb__Definition **defs = xcalloc (n + 1, sizeof *defs);
  bool bad = false;
  for (size_t i = 0; i < n; i++)
    {
      moby__buildkit__v1__frontend__inputs_response__definitions_entry__init (&entries[i]);
      entries[i].key = (char *) in[i].name;
      defs[i] = pb__definition__unpack (NULL, in[i].len, in[i].definition);
      bad |= defs[i] == NULL;
      entries[i].value = defs[i];
      v[i] = &entries[i];
    }
  if (bad)
    grpc_call_finish (call, GRPC_STATUS_INTERNAL, "a frontend input is not a valid definition");
  else
    {
      resp.n_definitions = n;
      resp.definitions = v;
      reply (call, &resp.base);
    }
  for (size_t i = 0; i < n; i++)
    if (defs[i])
      pb__definition__free_unpacked (defs[i], NULL);
  free (defs);
  free (v);
  free (entries);
  gateway_build_unref (b);
}

/* ---- Warn --------------------------------------------------------------------- */

static void
bridge_warn (grpc_call *call, void *ud)
{
  gateway_build *b = NULL;
  Moby__Buildkit__V1__Frontend__WarnRequest *req = (void *) begin_call (call, &moby__buildkit__v1__frontend__warn_request__descriptor, &b);
  if (req == NULL)
    return;
  /* The byte fields become text (a NUL inside would end it early). */
  cleanup_free char *short_msg = NULL;
  char **details = NULL;
  schema_bridge_warn_text (req, &short_msg, &details);
  gateway_build_warn (b, req->digest, req->level, short_msg, (const char *const *) details, req->url);
  ps_strv_free_raw (details);
  Moby__Buildkit__V1__Frontend__WarnResponse resp = MOBY__BUILDKIT__V1__FRONTEND__WARN_RESPONSE__INIT;
  reply (call, &resp.base);
  protobuf_c_message_free_unpacked (&req->base, NULL);
  gateway_build_unref (b);
}

const struct grpc_method grpc_bridge_methods[] = {
  { BRIDGE_PATH ("Ping"), bridge_ping, NULL },
  { BRIDGE_PATH ("Solve"), bridge_solve, NULL },
  { BRIDGE_PATH ("Return"), bridge_return, NULL },
  { BRIDGE_PATH ("ReadFile"), bridge_read_file, NULL },
  { BRIDGE_PATH ("ReadDir"), bridge_read_dir, NULL },
  { BRIDGE_PATH ("StatFile"), bridge_stat_file, NULL },
  { BRIDGE_PATH ("Evaluate"), bridge_evaluate, NULL },
  { BRIDGE_PATH ("ResolveImageConfig"), bridge_resolve_image_config, NULL },
  { BRIDGE_PATH ("ResolveSourceMeta"), bridge_resolve_source_meta, NULL },
  { BRIDGE_PATH ("Inputs"), bridge_inputs, NULL },
  { BRIDGE_PATH ("Warn"), bridge_warn, NULL },
};
const size_t grpc_bridge_n_methods = ARRAY_SIZE (grpc_bridge_methods);
