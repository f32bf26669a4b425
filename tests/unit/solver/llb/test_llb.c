/* test_llb.c — LLB definitions as a BuildKit client sends them (ops packed
 * with the protobuf-c types, digests computed from the bytes, the terminal
 * op last), decoded by solver/llb: a graph using every supported op type
 * comes out in topological order with BuildKit's vertex names, and every
 * malformed definition is refused before anything could run — a 400 (413
 * for size limits) naming the op digest and the problem. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/stat.h>
#include <unistd.h>

#include "solver/llb/llb.h"
#include "solver/llb/local.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

/* ---- building definitions ------------------------------------------------ */

/* A Definition under construction: op bytes in def order, plus
   llb.customname metadata. */
struct defb
{
  uint8_t **bytes;
  size_t *len;
  char **digest; /* each its own allocation: pointers stay valid as ops are added */
  size_t n, cap;
  const char *name_for[8]; /* metadata key (an op digest) */
  const char *name[8];     /* its llb.customname */
  size_t n_names;
};

static void
defb_free (struct defb *d)
{
  for (size_t i = 0; i < d->n; i++)
    {
      free (d->bytes[i]);
      free (d->digest[i]);
    }
  free (d->bytes);
  free (d->len);
  free (d->digest);
  memset (d, 0, sizeof *d);
}

/* Append op bytes as given; returns the op's digest (valid until defb_free). */
static const char *
add_raw (struct defb *d, const void *bytes, size_t len)
{
  if (d->n == d->cap)
    {
      d->cap = d->cap ? 2 * d->cap : 16;
      d->bytes = xrealloc (d->bytes, d->cap * sizeof *d->bytes);
      d->len = xrealloc (d->len, d->cap * sizeof *d->len);
      d->digest = xrealloc (d->digest, d->cap * sizeof *d->digest);
    }
  d->bytes[d->n] = xmalloc (len + 1);
  if (len)
    memcpy (d->bytes[d->n], bytes, len);
  d->len[d->n] = len;
  char hex[65];
  ps_sha256_hex (bytes, len, hex);
  d->digest[d->n] = xasprintf ("sha256:%s", hex);
  return d->digest[d->n++];
}

static const char *
add_op (struct defb *d, const Pb__Op *op)
{
  size_t len = pb__op__get_packed_size (op);
  cleanup_free uint8_t *buf = xmalloc (len + 1);
  pb__op__pack (op, buf);
  return add_raw (d, buf, len);
}

/* Forget the last op added. */
static void
drop_last (struct defb *d)
{
  d->n--;
  free (d->bytes[d->n]);
  free (d->digest[d->n]);
}

static void
set_name (struct defb *d, const char *digest, const char *name)
{
  d->name_for[d->n_names] = digest;
  d->name[d->n_names++] = name;
}

/* Op.inputs storage for a test op. */
struct edges
{
  Pb__Input in[8];
  Pb__Input *p[8];
};

static void
edge (Pb__Op *op, struct edges *e, const char *digest, int64_t index)
{
  size_t i = op->n_inputs++;
  e->in[i] = (Pb__Input) PB__INPUT__INIT;
  e->in[i].digest = (char *) digest;
  e->in[i].index = index;
  e->p[i] = &e->in[i];
  op->inputs = e->p;
}

static const char *
add_terminal (struct defb *d, const char *digest, int64_t index)
{
  Pb__Op op = PB__OP__INIT;
  struct edges e;
  edge (&op, &e, digest, index);
  return add_op (d, &op);
}

/* A source op as the Go client writes it: docker-image sources carry the
   platform, every op an empty constraints message. */
static const char *
add_source (struct defb *d, const char *identifier)
{
  Pb__Op op = PB__OP__INIT;
  Pb__SourceOp src = PB__SOURCE_OP__INIT;
  Pb__Platform plat = PB__PLATFORM__INIT;
  Pb__WorkerConstraints wc = PB__WORKER_CONSTRAINTS__INIT;
  Pb__SourceOp__AttrsEntry attr = PB__SOURCE_OP__ATTRS_ENTRY__INIT;
  Pb__SourceOp__AttrsEntry *attrs[] = { &attr };
  src.identifier = (char *) identifier;
  if (strncmp (identifier, "local://", 8) == 0)
    {
      attr.key = "local.session";
      attr.value = "s3ss10n";
      src.n_attrs = 1;
      src.attrs = attrs;
    }
  if (strncmp (identifier, "docker-image://", 15) == 0)
    {
      plat.architecture = "amd64";
      plat.os = "linux";
      op.platform = &plat;
    }
  op.constraints = &wc;
  op.op_case = PB__OP__OP_SOURCE;
  op.source = &src;
  return add_op (d, &op);
}

/* exec `sh -c make` on rootfs `root` (mount "/", output 0), after `hook`
   (may be NULL) has bent it into the shape a test needs. */
typedef void (*exec_hook) (Pb__Op *op, Pb__ExecOp *x);

static const char *
add_exec (struct defb *d, const char *root, exec_hook hook)
{
  Pb__Op op = PB__OP__INIT;
  struct edges e;
  edge (&op, &e, root, 0);
  Pb__ExecOp x = PB__EXEC_OP__INIT;
  Pb__Meta meta = PB__META__INIT;
  char *args[] = { "sh", "-c", "make" };
  meta.n_args = 3;
  meta.args = args;
  Pb__Mount rootfs = PB__MOUNT__INIT;
  rootfs.input = 0;
  rootfs.dest = "/";
  rootfs.output = 0;
  Pb__Mount *mounts[] = { &rootfs };
  x.meta = &meta;
  x.n_mounts = 1;
  x.mounts = mounts;
  op.op_case = PB__OP__OP_EXEC;
  op.exec = &x;
  if (hook)
    hook (&op, &x);
  return add_op (d, &op);
}

/* mkdir /out on `base` (NULL: scratch), after `hook`. */
typedef void (*file_hook) (Pb__Op *op, Pb__FileOp *f);

static const char *
add_mkdir (struct defb *d, const char *base, const char *path, file_hook hook)
{
  Pb__Op op = PB__OP__INIT;
  struct edges e;
  if (base)
    edge (&op, &e, base, 0);
  Pb__FileOp f = PB__FILE_OP__INIT;
  Pb__FileAction a = PB__FILE_ACTION__INIT;
  Pb__FileActionMkDir mk = PB__FILE_ACTION_MK_DIR__INIT;
  Pb__FileAction *actions[] = { &a };
  mk.path = (char *) path;
  mk.mode = 0755;
  mk.makeparents = true;
  a.input = base ? 0 : -1;
  a.secondaryinput = -1;
  a.output = 0;
  a.action_case = PB__FILE_ACTION__ACTION_MKDIR;
  a.mkdir = &mk;
  f.n_actions = 1;
  f.actions = actions;
  op.op_case = PB__OP__OP_FILE;
  op.file = &f;
  if (hook)
    hook (&op, &f);
  return add_op (d, &op);
}

/* merge of the given inputs, each MergeInput i -> Op.inputs[i]. */
static const char *
add_merge (struct defb *d, size_t n, const char *const *digests)
{
  Pb__Op op = PB__OP__INIT;
  Pb__Input *in = xcalloc (n, sizeof *in);
  Pb__Input **inp = xcalloc (n, sizeof *inp);
  Pb__MergeInput *mi = xcalloc (n, sizeof *mi);
  Pb__MergeInput **mip = xcalloc (n, sizeof *mip);
  for (size_t i = 0; i < n; i++)
    {
      in[i] = (Pb__Input) PB__INPUT__INIT;
      in[i].digest = (char *) digests[i];
      inp[i] = &in[i];
      mi[i] = (Pb__MergeInput) PB__MERGE_INPUT__INIT;
      mi[i].input = (int64_t) i;
      mip[i] = &mi[i];
    }
  Pb__MergeOp m = PB__MERGE_OP__INIT;
  m.n_inputs = n;
  m.inputs = mip;
  op.n_inputs = n;
  op.inputs = inp;
  op.op_case = PB__OP__OP_MERGE;
  op.merge = &m;
  const char *dg = add_op (d, &op);
  free (in);
  free (inp);
  free (mi);
  free (mip);
  return dg;
}

static uint8_t *
pack_def (const struct defb *d, size_t *len)
{
  Pb__Definition def = PB__DEFINITION__INIT;
  cleanup_free ProtobufCBinaryData *ops = xcalloc (d->n + 1, sizeof *ops);
  for (size_t i = 0; i < d->n; i++)
    {
      ops[i].data = d->bytes[i];
      ops[i].len = d->len[i];
    }
  def.n_def = d->n;
  def.def = ops;
  Pb__Definition__MetadataEntry me[8], *mep[8];
  Pb__OpMetadata md[8];
  Pb__OpMetadata__DescriptionEntry de[8], *dep[8];
  for (size_t i = 0; i < d->n_names; i++)
    {
      de[i] = (Pb__OpMetadata__DescriptionEntry) PB__OP_METADATA__DESCRIPTION_ENTRY__INIT;
      de[i].key = "llb.customname";
      de[i].value = (char *) d->name[i];
      dep[i] = &de[i];
      md[i] = (Pb__OpMetadata) PB__OP_METADATA__INIT;
      md[i].n_description = 1;
      md[i].description = &dep[i];
      me[i] = (Pb__Definition__MetadataEntry) PB__DEFINITION__METADATA_ENTRY__INIT;
      me[i].key = (char *) d->name_for[i];
      me[i].value = &md[i];
      mep[i] = &me[i];
    }
  def.n_metadata = d->n_names;
  def.metadata = mep;
  *len = pb__definition__get_packed_size (&def);
  uint8_t *buf = xmalloc (*len + 1);
  pb__definition__pack (&def, buf);
  return buf;
}

static int
decode (const struct defb *d, struct llb_graph **g, ps_error **err)
{
  size_t len;
  cleanup_free uint8_t *buf = pack_def (d, &len);
  return llb_graph_from_protobuf (buf, len, g, err);
}

/* The definition must be refused with `status`, the message containing
   `what` and (unless NULL) the digest of the op at fault.  Frees d. */
static void
expect_error (struct defb *d, int status, const char *what, const char *digest)
{
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  int r = decode (d, &g, &err);
  ck_assert_msg (r < 0, "expected a %d about \"%s\", but the definition was accepted", status, what);
  ck_assert_ptr_null (g);
  ck_assert_msg (err->status == status, "status %d, expected %d: %s", err->status, status, err->msg);
  ck_assert_msg (strstr (err->msg, what) != NULL, "\"%s\" not in: %s", what, err->msg);
  if (digest)
    ck_assert_msg (strstr (err->msg, digest) != NULL, "op %s not named in: %s", digest, err->msg);
  ps_error_free (err);
  defb_free (d);
}

static struct llb_graph *
expect_graph (const struct defb *d)
{
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  int r = decode (d, &g, &err);
  ck_assert_msg (r == 0, "definition refused: %s", err ? err->msg : "?");
  return g;
}

static const struct llb_vertex *
vertex (const struct llb_graph *g, const char *digest)
{
  for (size_t i = 0; i < g->n_vertices; i++)
    if (strcmp (g->vertices[i].digest, digest) == 0)
      return &g->vertices[i];
  ck_abort_msg ("no vertex %s", digest);
  return NULL;
}

static void
assert_topological (const struct llb_graph *g)
{
  for (size_t i = 0; i < g->n_vertices; i++)
    for (size_t k = 0; k < g->vertices[i].n_inputs; k++)
      ck_assert_msg (g->vertices[i].inputs[k] < &g->vertices[i], "vertex %zu (%s) comes before its input %zu", i,
                     g->vertices[i].name, k);
}

/* ---- a graph with every supported op type -------------------------------- */

struct full
{
  const char *alpine, *local, *files, *run, *merged, *diffed, *copied, *top;
};

static const char *full_run_args[] = { "sh", "-c", "cp -r /data /built" };

/* alpine, local context, scratch + mkdir/mkfile, an exec with bind, cache,
   tmpfs, secret and ssh mounts producing two outputs, merge, diff, a copy
   from the context with a chown by name, and a merge on top. */
static void
build_full (struct defb *d, struct full *ids)
{
  ids->alpine = add_source (d, "docker-image://docker.io/library/alpine:latest");
  ids->local = add_source (d, "local://context");

  { /* scratch: mkdir /out (no output), mkfile /out/hello on its result */
    Pb__Op op = PB__OP__INIT;
    Pb__FileOp f = PB__FILE_OP__INIT;
    Pb__FileAction a0 = PB__FILE_ACTION__INIT, a1 = PB__FILE_ACTION__INIT;
    Pb__FileActionMkDir mkdir = PB__FILE_ACTION_MK_DIR__INIT;
    Pb__FileActionMkFile mkfile = PB__FILE_ACTION_MK_FILE__INIT;
    Pb__FileAction *actions[] = { &a0, &a1 };
    mkdir.path = "/out";
    mkdir.mode = 0755;
    mkdir.makeparents = true;
    mkdir.timestamp = -1;
    mkfile.path = "/out/hello";
    mkfile.mode = 0644;
    mkfile.data = (ProtobufCBinaryData){ 3, (uint8_t *) "hi\n" };
    mkfile.timestamp = -1;
    a0.input = -1;
    a0.secondaryinput = -1;
    a0.output = -1;
    a0.action_case = PB__FILE_ACTION__ACTION_MKDIR;
    a0.mkdir = &mkdir;
    a1.input = 0; /* no op inputs: 0 + 0 = action 0's result */
    a1.secondaryinput = -1;
    a1.output = 0;
    a1.action_case = PB__FILE_ACTION__ACTION_MKFILE;
    a1.mkfile = &mkfile;
    f.n_actions = 2;
    f.actions = actions;
    op.op_case = PB__OP__OP_FILE;
    op.file = &f;
    ids->files = add_op (d, &op);
  }

  { /* RUN on alpine with the files at /data */
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, ids->alpine, 0);
    edge (&op, &e, ids->files, 0);
    Pb__ExecOp x = PB__EXEC_OP__INIT;
    Pb__Meta meta = PB__META__INIT;
    char *env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
    meta.n_args = 3;
    meta.args = (char **) full_run_args;
    meta.n_env = 1;
    meta.env = env;
    meta.cwd = "/";
    Pb__Mount root = PB__MOUNT__INIT, data = PB__MOUNT__INIT, cache = PB__MOUNT__INIT, tmp = PB__MOUNT__INIT,
              secret = PB__MOUNT__INIT, ssh = PB__MOUNT__INIT;
    Pb__CacheOpt cache_opt = PB__CACHE_OPT__INIT;
    Pb__TmpfsOpt tmp_opt = PB__TMPFS_OPT__INIT;
    Pb__SecretOpt secret_opt = PB__SECRET_OPT__INIT;
    Pb__SSHOpt ssh_opt = PB__SSHOPT__INIT;
    root.input = 0, root.dest = "/", root.output = 0;
    data.input = 1, data.dest = "/data", data.output = 1;
    cache.input = -1, cache.dest = "/root/.cache", cache.output = -1, cache.mounttype = PB__MOUNT_TYPE__CACHE;
    cache_opt.id = "go-build", cache_opt.sharing = PB__CACHE_SHARING_OPT__LOCKED, cache.cacheopt = &cache_opt;
    tmp.input = -1, tmp.dest = "/tmp", tmp.output = -1, tmp.mounttype = PB__MOUNT_TYPE__TMPFS;
    tmp_opt.size = 64 << 20, tmp.tmpfsopt = &tmp_opt;
    secret.input = -1, secret.dest = "/run/secrets/tok", secret.output = -1, secret.mounttype = PB__MOUNT_TYPE__SECRET;
    secret_opt.id = "tok", secret_opt.mode = 0400, secret.secretopt = &secret_opt;
    ssh.input = -1, ssh.dest = "/run/ssh", ssh.output = -1, ssh.mounttype = PB__MOUNT_TYPE__SSH;
    ssh_opt.id = "default", ssh.sshopt = &ssh_opt;
    Pb__Mount *mounts[] = { &root, &data, &cache, &tmp, &secret, &ssh };
    x.meta = &meta;
    x.n_mounts = ARRAY_SIZE (mounts);
    x.mounts = mounts;
    op.op_case = PB__OP__OP_EXEC;
    op.exec = &x;
    ids->run = add_op (d, &op);
  }

  { /* merge (alpine, the RUN's /data output) */
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, ids->alpine, 0);
    edge (&op, &e, ids->run, 1);
    Pb__MergeOp m = PB__MERGE_OP__INIT;
    Pb__MergeInput m0 = PB__MERGE_INPUT__INIT, m1 = PB__MERGE_INPUT__INIT;
    Pb__MergeInput *mi[] = { &m0, &m1 };
    m0.input = 0;
    m1.input = 1;
    m.n_inputs = 2;
    m.inputs = mi;
    op.op_case = PB__OP__OP_MERGE;
    op.merge = &m;
    ids->merged = add_op (d, &op);
  }

  { /* diff alpine -> the RUN's rootfs */
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, ids->alpine, 0);
    edge (&op, &e, ids->run, 0);
    Pb__DiffOp df = PB__DIFF_OP__INIT;
    Pb__LowerDiffInput lower = PB__LOWER_DIFF_INPUT__INIT;
    Pb__UpperDiffInput upper = PB__UPPER_DIFF_INPUT__INIT;
    lower.input = 0;
    upper.input = 1;
    df.lower = &lower;
    df.upper = &upper;
    op.op_case = PB__OP__OP_DIFF;
    op.diff = &df;
    ids->diffed = add_op (d, &op);
  }

  { /* COPY --chown=app . /app onto the merge */
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, ids->merged, 0);
    edge (&op, &e, ids->local, 0);
    Pb__FileOp f = PB__FILE_OP__INIT;
    Pb__FileAction a = PB__FILE_ACTION__INIT;
    Pb__FileActionCopy cp = PB__FILE_ACTION_COPY__INIT;
    Pb__ChownOpt chown = PB__CHOWN_OPT__INIT;
    Pb__UserOpt user = PB__USER_OPT__INIT;
    Pb__NamedUserOpt byname = PB__NAMED_USER_OPT__INIT;
    Pb__FileAction *actions[] = { &a };
    byname.name = "app";
    byname.input = 0;
    user.user_case = PB__USER_OPT__USER_BY_NAME;
    user.byname = &byname;
    chown.user = &user;
    cp.src = "/";
    cp.dest = "/app";
    cp.owner = &chown;
    cp.mode = -1;
    cp.timestamp = -1;
    cp.dircopycontents = true;
    cp.createdestpath = true;
    cp.allowwildcard = true;
    a.input = 0;
    a.secondaryinput = 1;
    a.output = 0;
    a.action_case = PB__FILE_ACTION__ACTION_COPY;
    a.copy = &cp;
    f.n_actions = 1;
    f.actions = actions;
    op.op_case = PB__OP__OP_FILE;
    op.file = &f;
    ids->copied = add_op (d, &op);
  }

  const char *top[] = { ids->diffed, ids->copied };
  ids->top = add_merge (d, 2, top);
  add_terminal (d, ids->top, 0);
  set_name (d, ids->run, "RUN cp -r /data /built");
}

START_TEST (full_graph_decodes_in_topological_order_with_buildkit_names)
{
  struct defb d = { 0 };
  struct full ids;
  build_full (&d, &ids);
  struct llb_graph *g = expect_graph (&d);

  ck_assert_uint_eq (g->n_vertices, 8);
  assert_topological (g);
  const char *alpine_name = "docker-image://docker.io/library/alpine:latest";

  const struct llb_vertex *alpine = vertex (g, ids.alpine);
  ck_assert_str_eq (alpine->name, alpine_name);
  ck_assert_ptr_null (alpine->meta);
  ck_assert_uint_eq (alpine->n_inputs, 0);
  ck_assert_uint_eq (alpine->n_outputs, 1);
  ck_assert_uint_eq (alpine->def_index, 0);
  ck_assert_str_eq (alpine->op->platform->architecture, "amd64");

  ck_assert_str_eq (vertex (g, ids.local)->name, "local://context");
  ck_assert_str_eq (vertex (g, ids.files)->name, "mkdir /out, mkfile /out/hello");

  const struct llb_vertex *run = vertex (g, ids.run);
  ck_assert_str_eq (run->name, "RUN cp -r /data /built"); /* llb.customname */
  ck_assert_ptr_nonnull (run->meta);
  ck_assert_uint_eq (run->n_outputs, 2);
  ck_assert_uint_eq (run->n_inputs, 2);
  ck_assert_ptr_eq (run->inputs[0], alpine);
  ck_assert_ptr_eq (run->inputs[1], vertex (g, ids.files));
  ck_assert_int_eq (run->op->exec->mounts[2]->mounttype, PB__MOUNT_TYPE__CACHE);
  ck_assert_str_eq (run->op->exec->mounts[2]->cacheopt->id, "go-build");

  const struct llb_vertex *merged = vertex (g, ids.merged);
  ck_assert_str_eq (merged->name, "merge (docker-image://docker.io/library/alpine:latest, RUN cp -r /data /built)");
  ck_assert_ptr_eq (merged->inputs[1], run);
  ck_assert_int_eq (merged->input_index[1], 1);

  const struct llb_vertex *diffed = vertex (g, ids.diffed);
  ck_assert_str_eq (diffed->name, "diff (docker-image://docker.io/library/alpine:latest) -> (RUN cp -r /data /built)");
  ck_assert_int_eq (diffed->input_index[1], 0);

  const struct llb_vertex *copied = vertex (g, ids.copied);
  ck_assert_str_eq (copied->name, "copy / /app");
  ck_assert_ptr_eq (copied->inputs[1], vertex (g, ids.local));

  ck_assert_ptr_eq (g->result, vertex (g, ids.top));
  ck_assert_int_eq (g->result_index, 0);
  ck_assert_str_eq (g->result->name, "merge (diff (docker-image://docker.io/library/alpine:latest) -> (RUN cp -r "
                                     "/data /built), copy / /app)");
  ck_assert_ptr_eq (&g->vertices[g->n_vertices - 1], g->result);
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

START_TEST (op_order_in_def_does_not_matter_but_terminal_is_last)
{
  struct defb d = { 0 };
  struct full ids;
  build_full (&d, &ids);
  /* Users before their inputs: reverse everything but the terminal. */
  for (size_t i = 0, j = d.n - 2; i < j; i++, j--)
    {
      uint8_t *b = d.bytes[i];
      size_t l = d.len[i];
      char *dg = d.digest[i];
      d.bytes[i] = d.bytes[j], d.len[i] = d.len[j], d.digest[i] = d.digest[j];
      d.bytes[j] = b, d.len[j] = l, d.digest[j] = dg;
    }
  struct llb_graph *g = expect_graph (&d);
  ck_assert_uint_eq (g->n_vertices, 8);
  assert_topological (g);
  ck_assert_str_eq (g->result->name, "merge (diff (docker-image://docker.io/library/alpine:latest) -> (RUN cp "
                                         "-r /data /built), copy / /app)");
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

/* buildkit-protocols.md §6.1: the bytes BuildKit's Go client marshals for
   docker-image://docker.io/library/alpine:latest on linux/amd64, and its
   digest.  protobuf-c packs the same op to the same bytes. */
START_TEST (go_client_bytes_and_digest)
{
  static const char id[] = "docker-image://docker.io/library/alpine:latest";
  const char *want = "sha256:665ba8b2cdc0cb0200e2a42a6b3c0f8f684089f4cd1b81494fbb9805879120f7";
  uint8_t op[80];
  size_t n = 0;
  memcpy (op, "\x1a\x30\x0a\x2e", 4), n = 4;
  memcpy (op + n, id, 46), n += 46;
  memcpy (op + n, "\x52\x0e\x0a\x05" "amd64" "\x12\x05" "linux" "\x5a\x00", 18), n += 18;

  struct defb d = { 0 };
  ck_assert_str_eq (add_raw (&d, op, n), want);
  add_terminal (&d, want, 0);
  ck_assert_uint_eq (d.len[1], 2 + 2 + 71); /* 0a 49 0a 47 "sha256:…" */
  struct llb_graph *g = expect_graph (&d);
  ck_assert_uint_eq (g->n_vertices, 1);
  ck_assert_str_eq (g->result->digest, want);
  ck_assert_str_eq (g->result->name, id);
  llb_graph_free (g);
  defb_free (&d);

  /* protobuf-c packs the same op to the same bytes */
  ck_assert_str_eq (add_source (&d, id), want);
  ck_assert_uint_eq (d.len[0], n);
  ck_assert_mem_eq (d.bytes[0], op, n);
  defb_free (&d);
}
END_TEST

START_TEST (repeated_ops_are_one_vertex_and_unneeded_ops_are_dropped)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  add_source (&d, "docker-image://docker.io/library/alpine:latest");
  add_source (&d, "docker-image://docker.io/library/busybox:latest"); /* nothing uses it */
  const char *run = add_exec (&d, a, NULL);
  add_terminal (&d, run, 0);
  struct llb_graph *g = expect_graph (&d);
  ck_assert_uint_eq (g->n_vertices, 2);
  ck_assert_str_eq (g->vertices[0].digest, a);
  ck_assert_uint_eq (g->vertices[0].def_index, 0);
  ck_assert_str_eq (g->vertices[1].name, "sh -c make");
  llb_graph_free (g);
  defb_free (&d);

  /* repeats anywhere: the first occurrence stands for all */
  const char *ctx = add_source (&d, "local://context");
  a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  add_source (&d, "local://context");
  run = add_exec (&d, a, NULL);
  add_source (&d, "docker-image://docker.io/library/alpine:latest");
  add_source (&d, "local://context");
  add_terminal (&d, run, 0);
  g = expect_graph (&d);
  ck_assert_uint_eq (g->n_vertices, 2);
  ck_assert_uint_eq (g->vertices[0].def_index, 1);
  ck_assert_uint_eq (g->vertices[1].def_index, 3);
  ck_assert_str_ne (g->vertices[0].digest, ctx);
  llb_graph_free (g);
  defb_free (&d);

  /* ... but a dropped op is validated all the same. */
  a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  const char *bad = add_source (&d, "oci-layout://store@sha256:abcd");
  add_terminal (&d, a, 0);
  expect_error (&d, 400, "source scheme \"oci-layout\" is not supported", bad);
}
END_TEST

START_TEST (metadata_for_unknown_digests_is_ignored)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "local://context");
  add_terminal (&d, a, 0);
  set_name (&d, "sha256:0000000000000000000000000000000000000000000000000000000000000000", "ghost");
  set_name (&d, "not a digest", "ghost");
  struct llb_graph *g = expect_graph (&d);
  ck_assert_str_eq (g->result->name, "local://context");
  ck_assert_ptr_null (g->result->meta);
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

/* Each action's result feeds the next: mkdir, symlink, rm; only the last
   is an output. */
static void
mkdir_symlink_rm (Pb__Op *op, Pb__FileOp *f)
{
  static Pb__FileAction ln = PB__FILE_ACTION__INIT, rm = PB__FILE_ACTION__INIT;
  static Pb__FileActionSymlink sym = PB__FILE_ACTION_SYMLINK__INIT;
  static Pb__FileActionRm rmp = PB__FILE_ACTION_RM__INIT;
  static Pb__FileAction *actions[3];
  sym.oldpath = "/a";
  sym.newpath = "/b";
  ln.input = 1, ln.secondaryinput = -1, ln.output = -1;
  ln.action_case = PB__FILE_ACTION__ACTION_SYMLINK, ln.symlink = &sym;
  rmp.path = "/c";
  rmp.allownotfound = true;
  rm.input = 2, rm.secondaryinput = -1, rm.output = 0;
  rm.action_case = PB__FILE_ACTION__ACTION_RM, rm.rm = &rmp;
  actions[0] = f->actions[0];
  actions[0]->output = -1;
  actions[1] = &ln;
  actions[2] = &rm;
  f->actions = actions;
  f->n_actions = 3;
}

START_TEST (file_op_name_lists_its_actions)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  const char *f = add_mkdir (&d, a, "/a", mkdir_symlink_rm);
  add_terminal (&d, f, 0);
  struct llb_graph *g = expect_graph (&d);
  ck_assert_str_eq (g->result->name, "mkdir /a, symlink /b -> /a, rm /c");
  ck_assert_uint_eq (g->result->n_outputs, 1);
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

/* A chain of merges, each of the previous one twice: default names nest,
   doubling each time; they stay bounded. */
START_TEST (nested_default_names_are_bounded)
{
  struct defb d = { 0 };
  const char *prev = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  for (int i = 0; i < 40; i++)
    {
      const char *two[] = { prev, prev };
      prev = add_merge (&d, 2, two);
    }
  add_terminal (&d, prev, 0);
  struct llb_graph *g = expect_graph (&d);
  ck_assert_uint_eq (g->n_vertices, 41);
  ck_assert_uint_le (strlen (g->result->name), PS_MAX_LLB_NAME);
  ck_assert (ps_str_has_suffix (g->result->name, "..."));
  ck_assert (ps_str_has_prefix (g->result->name, "merge (merge (merge ("));
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

/* ---- malformed definitions ------------------------------------------------ */

START_TEST (every_truncation_of_a_definition_is_400)
{
  struct defb d = { 0 };
  struct full ids;
  build_full (&d, &ids);
  d.n_names = 0; /* metadata comes last; without it every prefix is broken */
  size_t len;
  cleanup_free uint8_t *buf = pack_def (&d, &len);
  for (size_t cut = 0; cut < len; cut++)
    {
      struct llb_graph *g = NULL;
      ps_error *err = NULL;
      ck_assert_msg (llb_graph_from_protobuf (buf, cut, &g, &err) < 0, "prefix of %zu bytes accepted", cut);
      ck_assert_msg (err->status == 400, "prefix %zu: %d %s", cut, err->status, err->msg);
      ps_error_free (err);
    }
  defb_free (&d);
}
END_TEST

START_TEST (truncated_op_is_400_naming_it)
{
  struct defb d = { 0 };
  uint8_t op[64] = { 0x1a, 0x13, 0x0a, 0x11 };
  memcpy (op + 4, "local://context", 15); /* the length says 17: cut short */
  const char *bad = add_raw (&d, op, 19);
  add_terminal (&d, bad, 0);
  expect_error (&d, 400, "(def[0]): cannot decode: not a marshalled pb.Op", bad);
}
END_TEST

START_TEST (fewer_than_two_ops_is_400)
{
  struct defb d = { 0 };
  expect_error (&d, 400, "definition has 0 ops", NULL);
  add_source (&d, "local://context");
  expect_error (&d, 400, "definition has 1 op;", NULL);
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  ck_assert_int_lt (llb_graph_from_protobuf ((const uint8_t *) "\x0a\x05hello\xff", 8, &g, &err), 0);
  ck_assert_int_eq (err->status, 400);
  ck_assert (strstr (err->msg, "not a marshalled pb.Definition"));
  ps_error_free (err);
}
END_TEST

START_TEST (input_naming_no_op_is_400)
{
  struct defb d = { 0 };
  const char *run = add_exec (&d, "sha256:4444444444444444444444444444444444444444444444444444444444444444", NULL);
  add_terminal (&d, run, 0);
  expect_error (&d, 400, "input 0: \"sha256:4444444444444444444444444444444444444444444444444444444444444444\" is "
                         "not the digest of any op in the definition",
                run);

  const char *a = add_source (&d, "local://context");
  add_terminal (&d, "sha256:1111111111111111111111111111111111111111111111111111111111111111", 0);
  (void) a;
  expect_error (&d, 400, "is not the digest of any op", NULL);
}
END_TEST

/* A cycle needs op X to name Y's digest while Y names X's, and a digest
   is the SHA-256 of the bytes that contain the other digest: no such pair
   is constructible.  A client that fabricates the references writes
   digests no op has, which is a missing input; the cycle check itself is
   exercised directly on llb_toposort below. */
START_TEST (fabricated_cycle_is_a_missing_input)
{
  struct defb d = { 0 };
  const char *claimed_x = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  const char *y = add_exec (&d, claimed_x, NULL); /* Y "depends on" X by X's claimed digest */
  const char *x = add_exec (&d, y, NULL);         /* X depends on Y */
  add_terminal (&d, x, 0);
  expect_error (&d, 400, "is not the digest of any op", y);
}
END_TEST

START_TEST (toposort_orders_inputs_first_and_finds_cycles)
{
  /* 0 <- 1 <- 3, 0 <- 2 <- 3 (a diamond, 3 naming 2 twice) */
  size_t start[] = { 0, 0, 1, 2, 5 };
  size_t deps[] = { 0, 0, 2, 1, 2 };
  size_t order[4], on_cycle = 99;
  ck_assert_int_eq (llb_toposort (4, start, deps, order, &on_cycle), 0);
  ck_assert_uint_eq (order[0], 0);
  ck_assert_uint_eq (order[3], 3);
  ck_assert_uint_eq (on_cycle, 99);

  /* 0; 1 <- 0; 2 <- 1, 3; 3 <- 2; 4 <- 3: the cycle is 2 <-> 3, 4 only
     hangs off it and 0, 1 sort fine. */
  size_t start2[] = { 0, 0, 1, 3, 4, 5 };
  size_t deps2[] = { 0, 1, 3, 2, 3 };
  size_t order2[5];
  ck_assert_int_eq (llb_toposort (5, start2, deps2, order2, &on_cycle), -1);
  ck_assert_msg (on_cycle == 2 || on_cycle == 3, "node %zu is not on the cycle", on_cycle);

  /* an op that is its own input */
  size_t start3[] = { 0, 0, 1 };
  size_t deps3[] = { 1 };
  ck_assert_int_eq (llb_toposort (2, start3, deps3, order2, &on_cycle), -1);
  ck_assert_uint_eq (on_cycle, 1);
}
END_TEST

START_TEST (terminal_op_must_be_last_and_only_last)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "local://context");
  const char *t = add_terminal (&d, a, 0);
  add_source (&d, "docker-image://docker.io/library/alpine:latest");
  expect_error (&d, 400, "(def[1]): is terminal-shaped (inputs only, no operation) but is not the last op", t);

  a = add_source (&d, "local://context");
  const char *b = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  expect_error (&d, 400, "the last op must be the terminal op (inputs only, naming the result), not a source op", b);

  a = add_source (&d, "local://context");
  t = add_terminal (&d, a, 0);
  add_terminal (&d, a, 0); /* the same bytes twice: the first is not last */
  expect_error (&d, 400, "(def[1]): is terminal-shaped", t);

  a = add_source (&d, "local://context");
  b = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  {
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, a, 0);
    edge (&op, &e, b, 0);
    t = add_op (&d, &op);
  }
  expect_error (&d, 400, "the terminal op must have exactly one input, the result (it has 2)", t);

  add_source (&d, "local://context");
  t = add_raw (&d, "", 0);
  expect_error (&d, 400, "exactly one input, the result (it has 0)", t);

  /* nothing may take the terminal op as an input */
  a = add_source (&d, "local://context");
  struct defb scratch = { 0 };
  cleanup_free char *term = xstrdup (add_terminal (&scratch, a, 0));
  defb_free (&scratch);
  const char *user = add_exec (&d, term, NULL);
  add_terminal (&d, a, 0);
  expect_error (&d, 400, "input 0 refers to the terminal op", user);
}
END_TEST

START_TEST (output_index_out_of_range_is_400)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "local://context");
  add_terminal (&d, a, 1);
  expect_error (&d, 400, "the terminal op's input (the result): output index 1 is out of range (source op sha256:",
                NULL);

  a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  const char *run = add_exec (&d, a, NULL); /* one output: the rootfs */
  const char *top;
  {
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, run, 1);
    Pb__MergeOp m = PB__MERGE_OP__INIT;
    Pb__MergeInput mi = PB__MERGE_INPUT__INIT, *mip[] = { &mi };
    m.n_inputs = 1;
    m.inputs = mip;
    op.op_case = PB__OP__OP_MERGE;
    op.merge = &m;
    top = add_op (&d, &op);
  }
  add_terminal (&d, top, 0);
  expect_error (&d, 400, "input 0: output index 1 is out of range (exec op", top);
}
END_TEST

static void
negative_input_index (Pb__Op *op, Pb__ExecOp *x)
{
  op->inputs[0]->index = -1;
}

START_TEST (negative_input_index_is_400)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "local://context");
  const char *run = add_exec (&d, a, negative_input_index);
  add_terminal (&d, run, 0);
  expect_error (&d, 400, "input 0: output index -1 is negative", run);
}
END_TEST

/* ---- limits ------------------------------------------------------------- */

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

START_TEST (hundred_thousand_ops_is_413_without_decoding_them)
{
  struct defb d = { 0 };
  add_source (&d, "docker-image://docker.io/library/alpine:latest");
  Pb__Definition def = PB__DEFINITION__INIT;
  size_t n = 100000;
  cleanup_free ProtobufCBinaryData *ops = xcalloc (n, sizeof *ops);
  for (size_t i = 0; i < n; i++)
    ops[i] = (ProtobufCBinaryData){ d.len[0], d.bytes[0] };
  def.n_def = n;
  def.def = ops;
  size_t len = pb__definition__get_packed_size (&def);
  cleanup_free uint8_t *buf = xmalloc (len);
  pb__definition__pack (&def, buf);

  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  double t0 = now_s ();
  ck_assert_int_lt (llb_graph_from_protobuf (buf, len, &g, &err), 0);
  double took = now_s () - t0;
  ck_assert_int_eq (err->status, 413);
  ck_assert_str_eq (err->msg, "definition has more than 10000 ops, the limit");
  ck_assert_msg (took < 2.0, "took %.2fs", took);
  ps_error_free (err);

  /* the same in the JSON form */
  ps_buf json = { 0 };
  cleanup_free char *b64 = ps_base64_encode (d.bytes[0], d.len[0]);
  ps_buf_puts (&json, "{\"def\":[");
  for (size_t i = 0; i < n; i++)
    ps_buf_printf (&json, "%s\"%s\"", i ? "," : "", b64);
  ps_buf_puts (&json, "]}");
  err = NULL;
  ck_assert_int_lt (llb_graph_from_json (json.data, &g, &err), 0);
  ck_assert_int_eq (err->status, 413);
  ck_assert (strstr (err->msg, "100000 ops, over the limit of 10000"));
  ps_error_free (err);
  ps_buf_free (&json);
  defb_free (&d);
}
END_TEST

START_TEST (op_limit_is_inclusive_and_linear)
{
  struct defb d = { 0 };
  const char *prev = add_source (&d, "docker-image://docker.io/library/alpine:latest");
  char path[32];
  for (int i = 0; i < PS_MAX_LLB_OPS - 2; i++)
    {
      snprintf (path, sizeof path, "/d%d", i);
      prev = add_mkdir (&d, prev, path, NULL);
    }
  add_terminal (&d, prev, 0);
  ck_assert_uint_eq (d.n, PS_MAX_LLB_OPS);
  struct llb_graph *g = expect_graph (&d);
  ck_assert_uint_eq (g->n_vertices, PS_MAX_LLB_OPS - 1);
  assert_topological (g);
  ck_assert_str_eq (g->result->name, "mkdir /d9997");
  llb_graph_free (g);

  drop_last (&d);
  prev = add_mkdir (&d, prev, "/one-too-many", NULL);
  add_terminal (&d, prev, 0);
  expect_error (&d, 413, "more than 10000 ops, the limit", NULL);
}
END_TEST

START_TEST (oversized_definition_and_op_are_413)
{
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  cleanup_free uint8_t *big = xcalloc (1, PS_MAX_LLB_BYTES + 1);
  ck_assert_int_lt (llb_graph_from_protobuf (big, PS_MAX_LLB_BYTES + 1, &g, &err), 0);
  ck_assert_int_eq (err->status, 413);
  ck_assert (strstr (err->msg, "over the limit of 16777216 bytes"));
  ps_error_free (err);

  /* one mkfile with more inline data than an op may carry */
  struct defb d = { 0 };
  {
    Pb__Op op = PB__OP__INIT;
    Pb__FileOp f = PB__FILE_OP__INIT;
    Pb__FileAction a = PB__FILE_ACTION__INIT, *ap[] = { &a };
    Pb__FileActionMkFile mk = PB__FILE_ACTION_MK_FILE__INIT;
    mk.path = "/big";
    mk.data.len = PS_MAX_LLB_OP_BYTES;
    mk.data.data = big;
    a.input = -1, a.secondaryinput = -1, a.output = 0;
    a.action_case = PB__FILE_ACTION__ACTION_MKFILE;
    a.mkfile = &mk;
    f.n_actions = 1, f.actions = ap;
    op.op_case = PB__OP__OP_FILE, op.file = &f;
    add_terminal (&d, add_op (&d, &op), 0);
  }
  expect_error (&d, 413, "bytes, over the limit of 8388608 bytes for one op", NULL);

  /* an op with more inputs than allowed */
  const char *a = add_source (&d, "local://context");
  size_t n = PS_MAX_LLB_OP_INPUTS + 1;
  const char **many = xcalloc (n, sizeof *many);
  for (size_t i = 0; i < n; i++)
    many[i] = a;
  const char *m = add_merge (&d, n, many);
  free (many);
  add_terminal (&d, m, 0);
  expect_error (&d, 413, "op has 1025 inputs, over the limit of 1024", m);
}
END_TEST

static size_t
put_varint (uint8_t *p, uint64_t v)
{
  size_t n = 0;
  for (; v >= 0x80; v >>= 7)
    p[n++] = (uint8_t) (v | 0x80);
  p[n++] = (uint8_t) v;
  return n;
}

/* An op within the byte limits that protobuf-c would blow up: 4 million
   empty Meta.extraHosts entries (2 bytes each on the wire, a ~50-byte
   struct each decoded). */
START_TEST (decoding_beyond_the_memory_budget_is_413)
{
  size_t n_hosts = 4000000, inner = 2 * n_hosts;
  cleanup_free uint8_t *op = xmalloc (inner + 32);
  size_t n = 0;
  op[n++] = 0x12; /* Op.exec */
  uint8_t len_meta[10];
  size_t lm = put_varint (len_meta, inner);
  n += put_varint (op + n, 1 + lm + inner);
  op[n++] = 0x0a; /* ExecOp.meta */
  memcpy (op + n, len_meta, lm), n += lm;
  for (size_t i = 0; i < n_hosts; i++)
    op[n++] = 0x32, op[n++] = 0x00; /* Meta.extraHosts {} */
  ck_assert_uint_le (n, PS_MAX_LLB_OP_BYTES);

  struct defb d = { 0 };
  const char *big = add_raw (&d, op, n);
  add_terminal (&d, big, 0);
  expect_error (&d, 413, "takes more than 128 MiB of memory, the limit", big);
}
END_TEST

/* ---- exec ----------------------------------------------------------------- */

static void
no_mounts (Pb__Op *op, Pb__ExecOp *x)
{
  x->n_mounts = 0;
}

static void
no_args (Pb__Op *op, Pb__ExecOp *x)
{
  x->meta->n_args = 0;
}

static void
no_root (Pb__Op *op, Pb__ExecOp *x)
{
  x->mounts[0]->dest = "/work";
}

static void
mount_type_7 (Pb__Op *op, Pb__ExecOp *x)
{
  x->mounts[0]->mounttype = 7;
}

static void
root_is_tmpfs (Pb__Op *op, Pb__ExecOp *x)
{
  x->mounts[0]->mounttype = PB__MOUNT_TYPE__TMPFS;
}

static void
mount_input_out_of_range (Pb__Op *op, Pb__ExecOp *x)
{
  x->mounts[0]->input = 1;
}

static void
output_out_of_sequence (Pb__Op *op, Pb__ExecOp *x)
{
  x->mounts[0]->output = 1;
}

static void
network_9 (Pb__Op *op, Pb__ExecOp *x)
{
  x->network = 9;
}

/* a second mount of `type` at /m without its options */
static void
add_bare_mount (Pb__ExecOp *x, Pb__MountType type)
{
  static Pb__Mount extra;
  static Pb__Mount *mounts[2];
  extra = (Pb__Mount) PB__MOUNT__INIT;
  extra.input = -1;
  extra.output = -1;
  extra.dest = "/m";
  extra.mounttype = type;
  mounts[0] = x->mounts[0];
  mounts[1] = &extra;
  x->mounts = mounts;
  x->n_mounts = 2;
}

static void
cache_without_id (Pb__Op *op, Pb__ExecOp *x)
{
  add_bare_mount (x, PB__MOUNT_TYPE__CACHE);
}

static void
secret_without_id (Pb__Op *op, Pb__ExecOp *x)
{
  add_bare_mount (x, PB__MOUNT_TYPE__SECRET);
}

START_TEST (bad_exec_ops_are_400_naming_the_op)
{
  static const struct
  {
    exec_hook hook;
    const char *what;
  } cases[] = {
    { no_mounts, "exec has no mounts; it needs at least the root file system mounted at \"/\"" },
    { no_args, "exec has no args (meta.args is empty)" },
    { no_root, "exec has no root mount (a mount with dest \"/\")" },
    { mount_type_7, "exec mount 0 (/): unknown mount type 7 (known: BIND 0, SECRET 1, SSH 2, CACHE 3, TMPFS 4)" },
    { root_is_tmpfs, "exec mount 0: the root file system (\"/\") must be a bind mount" },
    { mount_input_out_of_range, "exec mount 0 (/): input 1 is out of range (-1 for empty, or 0..0)" },
    { output_out_of_sequence, "exec mount 0 (/): output 1 is out of sequence" },
    { network_9, "exec: unknown network mode 9" },
    { cache_without_id, "exec mount 1 (/m): a cache mount needs cacheOpt.ID" },
    { secret_without_id, "exec mount 1 (/m): a secret mount needs secretOpt.ID" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct defb d = { 0 };
      const char *a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
      const char *run = add_exec (&d, a, cases[i].hook);
      add_terminal (&d, run, 0);
      expect_error (&d, 400, cases[i].what, run);
    }
}
END_TEST

/* ---- source, file, merge, diff, build, passthrough, unknown -------------- */

START_TEST (bad_sources_are_400_naming_the_scheme)
{
  static const struct
  {
    const char *id, *what;
  } cases[] = {
    { "oci-layout://store@sha256:abcd", "source scheme \"oci-layout\" is not supported (supported: docker-image, "
                                        "local, git, http, https)" },
    { "docker-image+blob://x", "source scheme \"docker-image+blob\" is not supported" },
    { "alpine", "source identifier \"alpine\" is not of the form scheme://ref" },
    { "://x", "is not of the form scheme://ref" },
    { "docker-image://", "source identifier \"docker-image://\" has an empty ref" },
    /* quoted safely: protobuf-c does not check UTF-8, error messages end up in JSON */
    { "\xff\x01" "caf\xc3\xa9://x", "source scheme \"??caf\xc3\xa9\" is not supported" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct defb d = { 0 };
      const char *s = add_source (&d, cases[i].id);
      add_terminal (&d, s, 0);
      expect_error (&d, 400, cases[i].what, s);
    }
  struct defb d = { 0 };
  const char *a = add_source (&d, "local://context");
  Pb__Op op = PB__OP__INIT;
  struct edges e;
  edge (&op, &e, a, 0);
  Pb__SourceOp src = PB__SOURCE_OP__INIT;
  src.identifier = "git://github.com/moby/buildkit#v0.13.0";
  op.op_case = PB__OP__OP_SOURCE, op.source = &src;
  const char *s = add_op (&d, &op);
  add_terminal (&d, s, 0);
  expect_error (&d, 400, "a source op takes no inputs (it has 1)", s);
}
END_TEST

static void
file_no_actions (Pb__Op *op, Pb__FileOp *f)
{
  f->n_actions = 0;
}

static void
file_action_unset (Pb__Op *op, Pb__FileOp *f)
{
  f->actions[0]->action_case = PB__FILE_ACTION__ACTION__NOT_SET;
}

static void
file_empty_path (Pb__Op *op, Pb__FileOp *f)
{
  f->actions[0]->mkdir->path = "";
}

static void
file_input_out_of_range (Pb__Op *op, Pb__FileOp *f)
{
  f->actions[0]->input = 1; /* one op input, and no earlier action */
}

static void
file_no_output (Pb__Op *op, Pb__FileOp *f)
{
  f->actions[0]->output = -1;
}

/* two actions: the first names the second's result (a forward reference) */
static void
file_forward_reference (Pb__Op *op, Pb__FileOp *f)
{
  static Pb__FileAction second;
  static Pb__FileAction *actions[2];
  second = *f->actions[0];
  second.input = 1;
  second.output = -1;
  actions[0] = f->actions[0];
  actions[1] = &second;
  f->actions[0]->input = 2;
  f->actions = actions;
  f->n_actions = 2;
}

static void
file_duplicate_output (Pb__Op *op, Pb__FileOp *f)
{
  static Pb__FileAction second;
  static Pb__FileAction *actions[2];
  second = *f->actions[0];
  second.input = 1;
  actions[0] = f->actions[0];
  actions[1] = &second;
  f->actions = actions;
  f->n_actions = 2;
}

static void
file_chown_unset (Pb__Op *op, Pb__FileOp *f)
{
  static Pb__ChownOpt chown = PB__CHOWN_OPT__INIT;
  static Pb__UserOpt user = PB__USER_OPT__INIT;
  chown.user = &user;
  f->actions[0]->mkdir->owner = &chown;
}

START_TEST (bad_file_ops_are_400_naming_the_action)
{
  static const struct
  {
    file_hook hook;
    const char *what;
  } cases[] = {
    { file_no_actions, "file op has no actions" },
    { file_action_unset, "file action 0 has no action (copy, mkfile, mkdir, rm or symlink)" },
    { file_empty_path, "file action 0 (mkdir) has an empty path" },
    { file_input_out_of_range, "file action 0: input 1 is out of range (valid: -1 for empty, 0..0 for the op's "
                               "inputs)" },
    { file_forward_reference, "file action 0: input 2 is out of range" },
    { file_no_output, "file op has no output (every action's output is -1)" },
    { file_duplicate_output, "file action 1: output 0 is already produced by an earlier action" },
    { file_chown_unset, "file action 0: owner.user has neither byName nor byID" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct defb d = { 0 };
      const char *a = add_source (&d, "docker-image://docker.io/library/alpine:latest");
      const char *f = add_mkdir (&d, a, "/out", cases[i].hook);
      add_terminal (&d, f, 0);
      expect_error (&d, 400, cases[i].what, f);
    }
}
END_TEST

START_TEST (bad_merge_and_diff_are_400)
{
  struct defb d = { 0 };
  const char *a = add_source (&d, "local://context");
  const char *m = add_merge (&d, 0, NULL);
  add_terminal (&d, m, 0);
  expect_error (&d, 400, "merge has no inputs", m);

  a = add_source (&d, "local://context");
  {
    Pb__Op op = PB__OP__INIT;
    struct edges e;
    edge (&op, &e, a, 0);
    Pb__MergeOp mo = PB__MERGE_OP__INIT;
    Pb__MergeInput mi = PB__MERGE_INPUT__INIT, *mip[] = { &mi };
    mi.input = 1;
    mo.n_inputs = 1, mo.inputs = mip;
    op.op_case = PB__OP__OP_MERGE, op.merge = &mo;
    m = add_op (&d, &op);
  }
  add_terminal (&d, m, 0);
  expect_error (&d, 400, "merge input 0: 1 is out of range (the op has 1 inputs)", m);

  a = add_source (&d, "local://context");
  Pb__Op op = PB__OP__INIT;
  struct edges e;
  edge (&op, &e, a, 0);
  Pb__DiffOp df = PB__DIFF_OP__INIT;
  Pb__LowerDiffInput lower = PB__LOWER_DIFF_INPUT__INIT;
  Pb__UpperDiffInput upper = PB__UPPER_DIFF_INPUT__INIT;
  lower.input = -1;
  df.lower = &lower;
  op.op_case = PB__OP__OP_DIFF, op.diff = &df;
  const char *dg = add_op (&d, &op);
  add_terminal (&d, dg, 0);
  expect_error (&d, 400, "diff needs both lower and upper", dg);

  a = add_source (&d, "local://context");
  e.in[0].digest = (char *) a;
  upper.input = 5;
  df.upper = &upper;
  dg = add_op (&d, &op);
  add_terminal (&d, dg, 0);
  expect_error (&d, 400, "diff upper: input 5 is out of range (-1 for empty, or 0..0)", dg);

  /* scratch on both sides is a valid (empty) diff */
  a = add_source (&d, "local://context");
  e.in[0].digest = (char *) a;
  upper.input = -1;
  dg = add_op (&d, &op);
  add_terminal (&d, dg, 0);
  struct llb_graph *g = expect_graph (&d);
  ck_assert_str_eq (g->result->name, "diff scratch -> scratch");
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

START_TEST (build_passthrough_and_unknown_ops_are_400)
{
  struct defb d = { 0 };
  Pb__Op op = PB__OP__INIT;
  Pb__BuildOp build = PB__BUILD_OP__INIT;
  op.op_case = PB__OP__OP_BUILD, op.build = &build;
  const char *b = add_op (&d, &op);
  add_terminal (&d, b, 0);
  expect_error (&d, 400, "build ops (nested LLB builds) are not supported", b);

  Pb__PassthroughOp pass = PB__PASSTHROUGH_OP__INIT;
  int64_t outs[] = { 0 };
  pass.id = "ref-1", pass.n_outputs = 1, pass.outputs = outs;
  op.op_case = PB__OP__OP_PASSTHROUGH, op.passthrough = &pass;
  b = add_op (&d, &op);
  add_terminal (&d, b, 0);
  expect_error (&d, 400, "passthrough ops (gateway frontend results) are not supported", b);

  /* an op type from a newer BuildKit: field 12, an empty message */
  b = add_raw (&d, "\x62\x00", 2);
  add_terminal (&d, b, 0);
  expect_error (&d, 400, "unknown op type (protobuf field 12;", b);

  /* ... and one in the terminal's place */
  add_source (&d, "local://context");
  b = add_raw (&d, "\x4a\x00", 2);
  expect_error (&d, 400, "unknown op type (protobuf field 9;", b);
}
END_TEST

/* ---- the JSON forms -------------------------------------------------------- */

START_TEST (json_base64_string_form)
{
  struct defb d = { 0 };
  struct full ids;
  build_full (&d, &ids);
  size_t len;
  cleanup_free uint8_t *buf = pack_def (&d, &len);
  cleanup_free char *b64 = ps_base64_encode (buf, len);
  cleanup_free char *json = xasprintf ("\"%s\"", b64);
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  ck_assert_msg (llb_graph_from_json (json, &g, &err) == 0, "%s", err ? err->msg : "");
  ck_assert_uint_eq (g->n_vertices, 8);
  ck_assert_str_eq (vertex (g, ids.run)->name, "RUN cp -r /data /built");
  llb_graph_free (g);
  defb_free (&d);
}
END_TEST

START_TEST (json_object_form_with_metadata)
{
  struct defb d = { 0 };
  struct full ids;
  build_full (&d, &ids);
  ps_buf json = { 0 };
  ps_buf_puts (&json, "{\"def\":[");
  for (size_t i = 0; i < d.n; i++)
    {
      cleanup_free char *b64 = ps_base64_encode (d.bytes[i], d.len[i]);
      ps_buf_printf (&json, "%s\"%s\"", i ? "," : "", b64);
    }
  ps_buf_printf (&json,
                 "],\"metadata\":{\"%s\":{\"description\":{\"llb.customname\":\"[stage 1/2] RUN make\","
                 "\"com.docker.dockerfile.v1.frontend\":\"x\"},\"ignore_cache\":true,\"caps\":{\"exec.meta.base\":"
                 "true},\"export_cache\":{\"Value\":true},\"progress_group\":{\"id\":\"pg1\",\"name\":\"stage 1\","
                 "\"weak\":true},\"linux_resources\":{\"memory\":1073741824,\"cpuQuota\":\"50000\","
                 "\"cpusetCpus\":\"0-1\"}},"
                 "\"%s\":{\"progressGroup\":{\"id\":\"pg1\"},\"ignoreCache\":false,"
                 /* repeated keys: the last wins (found by fuzz_llb: overflowed the caps array) */
                 "\"caps\":{\"a\":true},\"caps\":{\"b\":true,\"c\":false},\"description\":{\"x\":\"1\"},"
                 "\"description\":{\"llb.customname\":\"FROM alpine\"}},"
                 "\"sha256:notanopofthisdefinition\":{\"ignore_cache\":true}},"
                 "\"Source\":{\"locations\":{}}}",
                 ids.run, ids.alpine);
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  ck_assert_msg (llb_graph_from_json (json.data, &g, &err) == 0, "%s", err ? err->msg : "");
  const struct llb_vertex *run = vertex (g, ids.run);
  ck_assert_str_eq (run->name, "[stage 1/2] RUN make");
  ck_assert (run->meta->ignore_cache);
  ck_assert_uint_eq (run->meta->n_caps, 1);
  ck_assert_str_eq (run->meta->caps[0]->key, "exec.meta.base");
  ck_assert (run->meta->export_cache->value);
  ck_assert_str_eq (run->meta->progress_group->name, "stage 1");
  ck_assert (run->meta->progress_group->weak);
  ck_assert_int_eq (run->meta->linux_resources->memory, 1073741824);
  ck_assert_int_eq (run->meta->linux_resources->cpuquota, 50000);
  ck_assert_str_eq (run->meta->linux_resources->cpusetcpus, "0-1");
  const struct llb_vertex *alpine = vertex (g, ids.alpine);
  ck_assert_str_eq (alpine->meta->progress_group->id, "pg1");
  ck_assert_uint_eq (alpine->meta->n_caps, 2);
  ck_assert_str_eq (alpine->meta->caps[1]->key, "c");
  ck_assert_str_eq (alpine->name, "FROM alpine");
  ck_assert_ptr_null (vertex (g, ids.local)->meta);
  llb_graph_free (g);
  ps_buf_free (&json);
  defb_free (&d);
}
END_TEST

START_TEST (bad_json_definitions_are_400_naming_the_field)
{
  static const struct
  {
    const char *json, *what;
  } cases[] = {
    { "{", "definition is not valid JSON" },
    { "[]", "definition: expected base64 of a pb.Definition or" },
    { "\"!!!!\"", "definition: not valid base64" },
    { "\"=\"", "definition: not valid base64" }, /* fuzz: ps_base64_decode wrote before its buffer */
    { "\"===\"", "definition: not valid base64" },
    { "\"CgA=CgA=\"", "definition: not valid base64" },
    { "{\"def\":[\"==\"]}", "definition.def[0]: expected a base64 string" },
    { "\"\"", "definition has 0 ops" },
    { "{\"def\":\"CgA=\"}", "definition.def: expected an array of base64-encoded pb.Op bytes" },
    { "{\"metadata\":{}}", "definition.def: expected an array" },
    { "{\"def\":[\"CgA=\",1]}", "definition.def[1]: expected a base64 string" },
    { "{\"def\":[],\"defs\":[]}", "definition: unknown key \"defs\" (accepted: def, metadata, Source)" },
    { "{\"def\":[],\"metadata\":[]}", "definition.metadata: expected an object keyed by op digest" },
    { "{\"def\":[],\"metadata\":{\"sha256:a\":{\"ignore_cache\":\"yes\"}}}",
      "definition.metadata[\"sha256:a\"].ignore_cache: expected true or false" },
    { "{\"def\":[],\"metadata\":{\"sha256:a\":{\"worker_constraint\":{}}}}",
      "definition.metadata[\"sha256:a\"]: unknown key \"worker_constraint\"" },
    { "{\"def\":[],\"metadata\":{\"sha256:a\":{\"description\":{\"llb.customname\":5}}}}",
      "definition.metadata[\"sha256:a\"].description.llb.customname: expected a string" },
    { "{\"def\":[],\"metadata\":{\"sha256:a\":{\"linux_resources\":{\"cpuShares\":-1}}}}",
      "linux_resources.cpuShares: expected a non-negative integer" },
    { "{\"def\":[],\"metadata\":{\"sha256:a\":{\"linux_resources\":{\"memory\":1.5}}}}",
      "linux_resources.memory: expected an integer" },
    { "{\"def\":[],\"metadata\":{\"sha256:a\":{\"export_cache\":{\"on\":true}}}}",
      "export_cache: unknown key \"on\" (accepted: Value)" },
    { "{\"def\":[]}", "definition has 0 ops" },
    { "{\"def\":[\"CgA=\"]}", "definition has 1 op;" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++)
    {
      struct llb_graph *g = NULL;
      ps_error *err = NULL;
      ck_assert_msg (llb_graph_from_json (cases[i].json, &g, &err) < 0, "%s accepted", cases[i].json);
      ck_assert_ptr_null (g);
      ck_assert_msg (err->status == 400, "%s: %d %s", cases[i].json, err->status, err->msg);
      ck_assert_msg (strstr (err->msg, cases[i].what) != NULL, "%s: \"%s\" not in: %s", cases[i].json, cases[i].what,
                     err->msg);
      ps_error_free (err);
    }
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  ck_assert_int_lt (llb_graph_from_json (NULL, &g, &err), 0);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

/* ---- local source filters ------------------------------------------------- */

static Pb__SourceOp *
local_source (const char *include, const char *exclude, const char *follow)
{
  static Pb__SourceOp src;
  static Pb__SourceOp__AttrsEntry e[3], *ep[3];
  pb__source_op__init (&src);
  src.identifier = (char *) "local://ctx";
  size_t n = 0;
  const char *keys[] = { "local.includepatterns", "local.excludepatterns", "local.followpaths" };
  const char *vals[] = { include, exclude, follow };
  for (size_t i = 0; i < 3; i++)
    if (vals[i])
      {
        pb__source_op__attrs_entry__init (&e[n]);
        e[n].key = (char *) keys[i];
        e[n].value = (char *) vals[i];
        ep[n] = &e[n];
        n++;
      }
  src.n_attrs = n;
  src.attrs = ep;
  return &src;
}

static void
touch (const char *root, const char *rel)
{
  char *path = NULL;
  ck_assert_int_ge (asprintf (&path, "%s/%s", root, rel), 0);
  for (char *p = path + strlen (root) + 1; (p = strchr (p, '/')) != NULL; p++)
    {
      *p = '\0';
      mkdir (path, 0755);
      *p = '/';
    }
  ps_error *err = NULL;
  ck_assert_int_eq (ps_write_file (path, rel, strlen (rel), 0644, &err), 0);
  free (path);
}

static bool
staged (const char *root, const char *rel)
{
  char *path = NULL;
  ck_assert_int_ge (asprintf (&path, "%s/%s", root, rel), 0);
  struct stat st;
  bool there = lstat (path, &st) == 0;
  free (path);
  return there;
}

/* Stage a fixed tree through one filter; returns the staging dir. */
static char *
stage_with (const char *include, const char *exclude, const char *follow)
{
  char *tmp = test_mkdtemp ();
  char *src = NULL, *dest = NULL;
  ck_assert_int_ge (asprintf (&src, "%s/src", tmp), 0);
  ck_assert_int_ge (asprintf (&dest, "%s/dest", tmp), 0);
  free (tmp);
  mkdir (src, 0755);
  const char *files[] = { "a.txt", "b.log", "sub/c.txt", "sub/d.log", "other/e.txt", "other/deep/f.txt" };
  for (size_t i = 0; i < ARRAY_SIZE (files); i++)
    touch (src, files[i]);
  struct llb_local_filter f;
  ps_error *err = NULL;
  ck_assert_int_eq (llb_local_filter_parse (local_source (include, exclude, follow), "sha256:x", &f, &err), 0);
  ck_assert_int_eq (llb_local_stage (src, dest, &f, &err), 0);
  llb_local_filter_free (&f);
  free (src);
  return dest;
}

/* Remove the whole temporary tree of a staging dir and free its name. */
static void
unstage (char *dest)
{
  *strrchr (dest, '/') = '\0';
  test_rm_tree (&dest);
}

START_TEST (local_filter_includes_excludes_and_follow_paths)
{
  char *d = stage_with ("[\"*.txt\",\"sub\"]", "[\"**/*.log\"]", NULL);
  ck_assert (staged (d, "a.txt") && staged (d, "sub/c.txt"));
  ck_assert (!staged (d, "b.log") && !staged (d, "sub/d.log"));
  ck_assert (!staged (d, "other")); /* nothing selected below it: not even the directory */
  unstage (d);

  d = stage_with (NULL, "[\"other\",\"!other/deep\"]", NULL);
  ck_assert (staged (d, "a.txt") && staged (d, "other/deep/f.txt"));
  ck_assert (!staged (d, "other/e.txt"));
  unstage (d);

  d = stage_with (NULL, NULL, "[\"other/deep/f.txt\"]");
  ck_assert (staged (d, "other/deep/f.txt") && !staged (d, "a.txt") && !staged (d, "other/e.txt"));
  unstage (d);
}
END_TEST

START_TEST (local_filter_attrs_must_be_lists_of_strings)
{
  const char *bad[] = { "not json", "{\"a\":1}", "[1]", "[\"\"]", "[\"[unterminated\"]" };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      struct llb_local_filter f;
      ps_error *err = NULL;
      ck_assert_int_eq (llb_local_filter_parse (local_source (NULL, bad[i], NULL), "sha256:op", &f, &err), -1);
      ck_assert_int_eq (err->status, 400);
      ck_assert_msg (strstr (err->msg, "sha256:op") != NULL, "%s", err->msg);
      ps_error_free (err);
    }
  struct llb_local_filter f;
  ps_error *err = NULL;
  ck_assert_int_eq (llb_local_filter_parse (local_source ("null", "[]", ""), "sha256:op", &f, &err), 0);
  ck_assert (llb_local_filter_empty (&f));
  llb_local_filter_free (&f);
}
END_TEST

PS_TEST_SUITE (llb)
{
  Suite *s = suite_create ("llb");
  TCase *tc = tcase_create ("graph");
  tcase_add_test (tc, full_graph_decodes_in_topological_order_with_buildkit_names);
  tcase_add_test (tc, op_order_in_def_does_not_matter_but_terminal_is_last);
  tcase_add_test (tc, go_client_bytes_and_digest);
  tcase_add_test (tc, repeated_ops_are_one_vertex_and_unneeded_ops_are_dropped);
  tcase_add_test (tc, metadata_for_unknown_digests_is_ignored);
  tcase_add_test (tc, file_op_name_lists_its_actions);
  tcase_add_test (tc, nested_default_names_are_bounded);
  suite_add_tcase (s, tc);

  tc = tcase_create ("malformed");
  tcase_add_test (tc, every_truncation_of_a_definition_is_400);
  tcase_add_test (tc, truncated_op_is_400_naming_it);
  tcase_add_test (tc, fewer_than_two_ops_is_400);
  tcase_add_test (tc, input_naming_no_op_is_400);
  tcase_add_test (tc, fabricated_cycle_is_a_missing_input);
  tcase_add_test (tc, toposort_orders_inputs_first_and_finds_cycles);
  tcase_add_test (tc, terminal_op_must_be_last_and_only_last);
  tcase_add_test (tc, output_index_out_of_range_is_400);
  tcase_add_test (tc, negative_input_index_is_400);
  tcase_add_test (tc, bad_exec_ops_are_400_naming_the_op);
  tcase_add_test (tc, bad_sources_are_400_naming_the_scheme);
  tcase_add_test (tc, bad_file_ops_are_400_naming_the_action);
  tcase_add_test (tc, bad_merge_and_diff_are_400);
  tcase_add_test (tc, build_passthrough_and_unknown_ops_are_400);
  suite_add_tcase (s, tc);

  tc = tcase_create ("limits");
  tcase_set_timeout (tc, 60); /* valgrind */
  tcase_add_test (tc, hundred_thousand_ops_is_413_without_decoding_them);
  tcase_add_test (tc, op_limit_is_inclusive_and_linear);
  tcase_add_test (tc, oversized_definition_and_op_are_413);
  tcase_add_test (tc, decoding_beyond_the_memory_budget_is_413);
  suite_add_tcase (s, tc);

  tc = tcase_create ("json");
  tcase_add_test (tc, json_base64_string_form);
  tcase_add_test (tc, json_object_form_with_metadata);
  tcase_add_test (tc, bad_json_definitions_are_400_naming_the_field);
  suite_add_tcase (s, tc);

  tc = tcase_create ("local");
  tcase_add_test (tc, local_filter_includes_excludes_and_follow_paths);
  tcase_add_test (tc, local_filter_attrs_must_be_lists_of_strings);
  suite_add_tcase (s, tc);
  return s;
}
