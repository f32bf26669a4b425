/* llb.h — a BuildKit LLB definition (pb.Definition, buildkit-protocols.md
 * §6) decoded and validated into a graph the LLB executor can run op by op
 * without checking anything again.
 *
 * Everything is checked before anything runs: every op decodes; digests
 * are recomputed from the exact op bytes; every input names an op of the
 * definition and an output that op has; the graph is acyclic; the last op
 * is the terminal op; op types, mount types, source schemes and every
 * index inside an op are known and in range.  A failure is a 400 naming
 * the op ("op sha256:… (def[3]): ...") and the problem, or a 413 when a
 * size limit below is exceeded.
 *
 * Only the ops the terminal op depends on become vertices; others are
 * still validated (a broken op anywhere is the client's bug), then
 * dropped, as BuildKit never solves them either. */
#ifndef SOLVER_LLB_H
#define SOLVER_LLB_H

#include "common/ps.h"
#include "schema/ops.pb-c.h"

/* Largest Definition accepted, in bytes: BuildKit's own gRPC server takes
   at most 16 MiB per message (containerd defaults.DefaultMaxRecvMsgSize),
   so no BuildKit client can rely on sending more. */
#define PS_MAX_LLB_BYTES (16 * 1024 * 1024)

/* Memory protobuf-c may allocate decoding one Definition and its ops.
   protobuf-c allocates a struct for every message, ~50 bytes for a 2-byte
   empty one, so bytes alone do not bound it: 16 MiB of empty sub-messages
   would take 400 MiB.  Real ops decode to a few KiB each (10000 of them
   stay under 64 MiB); strings and inline data are copied once. */
#define PS_MAX_LLB_DECODED_BYTES (128 * 1024 * 1024)

/* Ops in one Definition (and entries in its metadata map): a large
   multi-stage Dockerfile makes a few hundred; 10000 leaves two orders of
   magnitude and keeps validation, naming and scheduling cheap. */
#define PS_MAX_LLB_OPS 10000

/* Largest single op: argv, mounts and paths are KiBs; only inline file
   data (FileActionMkFile.data: Dockerfile heredocs, llb.Mkfile) is big,
   and half the definition is room enough for that. */
#define PS_MAX_LLB_OP_BYTES (PS_MAX_LLB_BYTES / 2)

/* Inputs of one op: a merge of every stage of a big build, or of every
   COPY --link layer, is tens.  Bounds the per-op edge arrays. */
#define PS_MAX_LLB_OP_INPUTS 1024

/* Longest vertex display name kept (default names nest input names:
   "merge (a, b)"; without a bound a chain of merges doubles each time). */
#define PS_MAX_LLB_NAME 4096

struct llb_vertex
{
  char digest[72];             /* "sha256:<hex>" of the exact op bytes */
  Pb__Op *op;                  /* decoded; owned by the graph */
  const Pb__OpMetadata *meta;  /* Definition.metadata[digest]; may be NULL */
  struct llb_vertex **inputs;  /* resolved Op.inputs, same order */
  int64_t *input_index;        /* Op.inputs[i].index: which output of inputs[i] */
  size_t n_inputs;
  const char *name;            /* llb.customname, or BuildKit's default name; the client's
                                  bytes, not checked to be UTF-8 */
  size_t n_outputs;            /* exec: mounts with output >= 0 (outputs are numbered in
                                  mount order); file: actions with output >= 0; others 1 */
  size_t def_index;            /* position of the op's first occurrence in Definition.def */
  char *name_alloc;            /* private: owns `name` when it is computed */
};

struct llb_graph
{
  Pb__Definition *def;         /* the decoded Definition (op bytes, metadata) */
  struct llb_vertex *vertices; /* topologically ordered: inputs before users */
  size_t n_vertices;
  struct llb_vertex *result;   /* the terminal op's input; always the last vertex, as every
                                  other vertex is one of its dependencies */
  int64_t result_index;        /* ... and which of its outputs is the result */
};

/* Decode and validate a marshalled pb.Definition (what BuildKit's Go
   client sends; a multipart application/x-protobuf part).  On success
   *out is a new graph for llb_graph_free(). */
int llb_graph_from_protobuf (const uint8_t *data, size_t len, struct llb_graph **out, ps_error **err);

/* The /solve JSON "definition" value (solve_request.definition_json): a
   JSON string holding base64 of a marshalled pb.Definition, or
   {"def":["<base64 op bytes>",...],"metadata":{"<digest>":{...}}} — Go's
   encoding/json form of pb.Definition, OpMetadata keys as BuildKit's Go
   JSON tags ("ignore_cache", "description", "export_cache", "caps",
   "progress_group", "linux_resources") or their protojson camelCase. */
int llb_graph_from_json (const char *definition_json, struct llb_graph **out, ps_error **err);

void llb_graph_free (struct llb_graph *g);

/* The value of source attr `key` (SourceOp.attrs), or NULL. */
const char *llb_source_attr (const Pb__SourceOp *s, const char *key);

/* Kahn's algorithm over nodes 0..n-1, node i depending on
   deps[dep_start[i] .. dep_start[i+1]-1] (repeats allowed).  Writes into
   order[n] every node after all of its dependencies (deterministically:
   a FIFO seeded in index order).
   Returns 0, or -1 with *on_cycle set to a node that lies on a cycle.
   Declared here for the unit tests: in a real Definition a cycle needs a
   SHA-256 fixed point, so every fabricated back-reference is caught as a
   missing input first — the check stays as the executor's guarantee. */
int llb_toposort (size_t n, const size_t *dep_start, const size_t *deps, size_t *order, size_t *on_cycle);

#endif
