/* llb.c — pb.Definition bytes (or /solve's JSON forms of it) to a
 * validated, topologically ordered struct llb_graph.
 *
 * The rules are BuildKit's (solver/llbsolver/vertex.go loadLLB,
 * ops/opsutils/validate.go, ops/file.go, frontend/gateway/container
 * PrepareMounts) made stricter where BuildKit would fail only later,
 * mid-build, or where the Go client never sends the shape anyway: every
 * index inside an op is range-checked here, so the executor can index
 * arrays with what it reads from a vertex. */
#define _GNU_SOURCE
#include "solver/llb/llb.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------- */

/* One distinct op of the definition (byte-identical repeats share one). */
struct op_entry
{
  char digest[72];
  size_t def_index; /* first occurrence in Definition.def */
  Pb__Op *op;       /* owned until handed to a vertex */
  const Pb__OpMetadata *meta;
  size_t n_outputs;
  size_t *deps; /* resolved Op.inputs: indexes into builder.ops */
};

static int op_fail (ps_error **err, int status, const struct op_entry *e, const char *fmt, ...) PS_PRINTF (4, 5);

/* "op sha256:… (def[3]): <problem>" */
static int
op_fail (ps_error **err, int status, const struct op_entry *e, const char *fmt, ...)
{
  va_list ap;
  char *msg = NULL;
  va_start (ap, fmt);
  if (vasprintf (&msg, fmt, ap) < 0)
    abort ();
  va_end (ap);
  ps_error_set (err, status, "op %s (def[%zu]): %s", e->digest, e->def_index, msg);
  free (msg);
  return -1;
}

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t
utf8_len (const unsigned char *p)
{
  if (p[0] < 0x80)
    return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf)
    return (p[1] & 0xc0) == 0x80 ? 2 : 0;
  if (p[0] >= 0xe0 && p[0] <= 0xef)
    {
      if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[0] == 0xe0 && p[1] < 0xa0)
          || (p[0] == 0xed && p[1] > 0x9f))
        return 0;
      return 3;
    }
  if (p[0] >= 0xf0 && p[0] <= 0xf4)
    {
      if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80 || (p[0] == 0xf0 && p[1] < 0x90)
          || (p[0] == 0xf4 && p[1] > 0x8f))
        return 0;
      return 4;
    }
  return 0;
}

/* A client's string as an error message quotes it: at most SHOWN_MAX
   bytes, invalid UTF-8 and control characters as '?'.  protobuf-c does
   not check that strings are UTF-8, and the message ends up in JSON. */
#define SHOWN_MAX 160
typedef char shown_buf[SHOWN_MAX + 4];

static const char *
shown (const char *in, shown_buf out)
{
  const unsigned char *p = (const unsigned char *) in;
  size_t o = 0;
  while (*p)
    {
      size_t n = utf8_len (p);
      if (o + (n ? n : 1) > SHOWN_MAX)
        {
          memcpy (out + o, "...", 3);
          o += 3;
          break;
        }
      if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)))
        {
          out[o++] = '?';
          p++;
          continue;
        }
      memcpy (out + o, p, n);
      o += n;
      p += n;
    }
  out[o] = '\0';
  return out;
}

static const char *
op_type_name (const Pb__Op *op)
{
  switch (op->op_case)
    {
    case PB__OP__OP_EXEC:
      return "exec";
    case PB__OP__OP_SOURCE:
      return "source";
    case PB__OP__OP_FILE:
      return "file";
    case PB__OP__OP_BUILD:
      return "build";
    case PB__OP__OP_MERGE:
      return "merge";
    case PB__OP__OP_DIFF:
      return "diff";
    case PB__OP__OP_PASSTHROUGH:
      return "passthrough";
    default:
      return "terminal";
    }
}

/* ---- the Definition's wire shape, before protobuf-c allocates ----------- */

static bool
read_varint (const uint8_t **p, const uint8_t *end, uint64_t *v)
{
  uint64_t x = 0;
  for (unsigned shift = 0; shift < 64; shift += 7)
    {
      if (*p >= end)
        return false;
      uint8_t c = *(*p)++;
      x |= (uint64_t) (c & 0x7f) << shift;
      if (!(c & 0x80))
        {
          *v = x;
          return true;
        }
    }
  return false;
}

/* Count ops and metadata entries and measure each op by walking the
   top-level fields only: protobuf-c sizes its arrays from the input, so a
   few MiB of empty `def` entries would otherwise become an allocation of
   many times that before any limit could be checked. */
static int
scan_definition (const uint8_t *data, size_t len, ps_error **err)
{
  const uint8_t *p = data, *end = data + len;
  size_t n_ops = 0, n_meta = 0;
  while (p < end)
    {
      uint64_t key, n;
      if (!read_varint (&p, end, &key) || key >> 3 == 0)
        goto bad;
      switch (key & 7)
        {
        case 0:
          if (!read_varint (&p, end, &n))
            goto bad;
          break;
        case 1:
          if (end - p < 8)
            goto bad;
          p += 8;
          break;
        case 5:
          if (end - p < 4)
            goto bad;
          p += 4;
          break;
        case 2:
          if (!read_varint (&p, end, &n) || n > (uint64_t) (end - p))
            goto bad;
          if (key >> 3 == 1)
            {
              if (n > PS_MAX_LLB_OP_BYTES)
                return ps_error_set (err, 413, "def[%zu] is %llu bytes, over the limit of %d bytes for one op", n_ops,
                                     (unsigned long long) n, PS_MAX_LLB_OP_BYTES);
              if (++n_ops > PS_MAX_LLB_OPS)
                return ps_error_set (err, 413, "definition has more than %d ops, the limit", PS_MAX_LLB_OPS);
            }
          else if (key >> 3 == 2 && ++n_meta > PS_MAX_LLB_OPS)
            return ps_error_set (err, 413, "definition has more than %d metadata entries, the limit (one per op)",
                                 PS_MAX_LLB_OPS);
          p += n;
          break;
        default: /* groups: never in proto3 */
          goto bad;
        }
    }
  return 0;
bad:
  return ps_error_set (err, 400, "cannot decode the definition: not a marshalled pb.Definition (truncated or malformed "
                                 "protobuf)");
}

/* ---- decoding within a memory budget ------------------------------------- */

/* protobuf-c's allocator for one definition: allocations count against
   PS_MAX_LLB_DECODED_BYTES (frees do not give the budget back), and past
   it fail, which makes protobuf-c's unpack fail and free what it had.
   What it returns is plain malloc memory, freed with the default
   allocator (free_unpacked (m, NULL)). */
struct decode_budget
{
  size_t used;
  bool exceeded;
};

static void *
budget_alloc (void *data, size_t size)
{
  struct decode_budget *b = data;
  if (size > PS_MAX_LLB_DECODED_BYTES - b->used)
    {
      b->exceeded = true;
      return NULL;
    }
  b->used += size;
  return xmalloc (size);
}

static void
budget_free (void *data, void *p)
{
  free (p);
}

/* ---- distinct ops by digest --------------------------------------------- */

struct builder
{
  const Pb__Definition *def;
  ProtobufCAllocator *alloc; /* budgeted */
  struct decode_budget *budget;
  struct op_entry *ops; /* distinct ops in order of first occurrence; the terminal is last */
  size_t n_ops;
  /* Indexes into ops sorted by digest: lookups are binary searches, whose
     cost no client can inflate (a hash table's could be, by grinding op
     bytes until their digests collide in it). */
  size_t *by_digest;
};

/* qsort_r order of indexes into an op_entry array: by digest, then by
   position in def. */
static int
cmp_ops_by_digest (const void *a, const void *b, void *ops)
{
  const struct op_entry *x = (const struct op_entry *) ops + *(const size_t *) a;
  const struct op_entry *y = (const struct op_entry *) ops + *(const size_t *) b;
  int c = strcmp (x->digest, y->digest);
  if (c == 0)
    c = x->def_index < y->def_index ? -1 : x->def_index > y->def_index;
  return c;
}

/* Index into b->ops, or SIZE_MAX. */
static size_t
lookup (const struct builder *b, const char *digest)
{
  size_t lo = 0, hi = b->n_ops;
  while (lo < hi)
    {
      size_t mid = lo + (hi - lo) / 2;
      int c = strcmp (b->ops[b->by_digest[mid]].digest, digest);
      if (c == 0)
        return b->by_digest[mid];
      if (c < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
  return SIZE_MAX;
}

static void
builder_free (struct builder *b)
{
  for (size_t i = 0; i < b->n_ops; i++)
    {
      if (b->ops[i].op)
        pb__op__free_unpacked (b->ops[i].op, NULL);
      free (b->ops[i].deps);
    }
  free (b->ops);
  free (b->by_digest);
}

static bool
has_unknown_fields (const Pb__Op *op, unsigned *first_tag)
{
  if (op->base.n_unknown_fields == 0)
    return false;
  *first_tag = op->base.unknown_fields[0].tag;
  return true;
}

/* ---- per-op rules ------------------------------------------------------- */

static int
check_exec (struct op_entry *e, ps_error **err)
{
  const Pb__ExecOp *x = e->op->exec;
  int64_t n_inputs = (int64_t) e->op->n_inputs;
  if (x->meta == NULL || x->meta->n_args == 0)
    return op_fail (err, 400, e, "exec has no args (meta.args is empty)");
  if (x->n_mounts == 0)
    return op_fail (err, 400, e, "exec has no mounts; it needs at least the root file system mounted at \"/\"");
  if ((unsigned) x->network > PB__NET_MODE__NONE)
    return op_fail (err, 400, e, "exec: unknown network mode %d (known: UNSET 0, HOST 1, NONE 2)", (int) x->network);
  if ((unsigned) x->security > PB__SECURITY_MODE__INSECURE)
    return op_fail (err, 400, e, "exec: unknown security mode %d (known: SANDBOX 0, INSECURE 1)", (int) x->security);
  bool root = false;
  size_t outputs = 0;
  for (size_t k = 0; k < x->n_mounts; k++)
    {
      const Pb__Mount *m = x->mounts[k];
      if (*m->dest == '\0')
        return op_fail (err, 400, e, "exec mount %zu has no dest", k);
      shown_buf dest;
      shown (m->dest, dest);
      /* Secret and ssh mounts take no input and make no output: BuildKit's
         llb package leaves both fields unset (0 on the wire) and its
         executor reads them only for bind mounts.  Normalised to -1 here,
         so the executor can take every mount's fields at their word. */
      if (m->mounttype == PB__MOUNT_TYPE__SECRET || m->mounttype == PB__MOUNT_TYPE__SSH)
        {
          Pb__Mount *mm = (Pb__Mount *) m; /* the graph owns the op */
          mm->input = -1;
          mm->output = -1;
        }
      if (m->input < -1 || m->input >= n_inputs)
        return op_fail (err, 400, e, "exec mount %zu (%s): input %lld is out of range (-1 for empty, or 0..%lld)", k,
                        dest, (long long) m->input, (long long) n_inputs - 1);
      switch (m->mounttype)
        {
        case PB__MOUNT_TYPE__BIND:
        case PB__MOUNT_TYPE__SSH:
        case PB__MOUNT_TYPE__TMPFS:
          break;
        case PB__MOUNT_TYPE__SECRET:
          if (m->secretopt == NULL || *m->secretopt->id == '\0')
            return op_fail (err, 400, e, "exec mount %zu (%s): a secret mount needs secretOpt.ID", k, dest);
          break;
        case PB__MOUNT_TYPE__CACHE:
          if (m->cacheopt == NULL || *m->cacheopt->id == '\0')
            return op_fail (err, 400, e, "exec mount %zu (%s): a cache mount needs cacheOpt.ID", k, dest);
          if ((unsigned) m->cacheopt->sharing > PB__CACHE_SHARING_OPT__LOCKED)
            return op_fail (err, 400, e,
                            "exec mount %zu (%s): unknown cache sharing mode %d (known: SHARED 0, PRIVATE 1, "
                            "LOCKED 2)",
                            k, dest, (int) m->cacheopt->sharing);
          break;
        default:
          return op_fail (err, 400, e,
                          "exec mount %zu (%s): unknown mount type %d (known: BIND 0, SECRET 1, SSH 2, CACHE 3, "
                          "TMPFS 4)",
                          k, dest, (int) m->mounttype);
        }
      if ((unsigned) m->contentcache > PB__MOUNT_CONTENT_CACHE__OFF)
        return op_fail (err, 400, e, "exec mount %zu (%s): unknown contentCache mode %d (known: DEFAULT 0, ON 1, OFF 2)",
                        k, dest, (int) m->contentcache);
      if (strcmp (m->dest, "/") == 0)
        {
          if (m->mounttype != PB__MOUNT_TYPE__BIND)
            return op_fail (err, 400, e, "exec mount %zu: the root file system (\"/\") must be a bind mount", k);
          root = true;
        }
      /* BuildKit numbers exec outputs by position among the mounts that
         have one, ignoring the value; the Go client writes 0, 1, 2, ...
         in mount order.  Requiring exactly that makes both readings
         agree, so the executor can trust Mount.output. */
      if (m->output != -1)
        {
          if (m->output != (int64_t) outputs)
            return op_fail (err, 400, e,
                            "exec mount %zu (%s): output %lld is out of sequence (outputs are numbered 0, 1, ... "
                            "in mount order; expected %zu, or -1 for none)",
                            k, dest, (long long) m->output, outputs);
          outputs++;
        }
    }
  if (!root)
    return op_fail (err, 400, e, "exec has no root mount (a mount with dest \"/\")");
  e->n_outputs = outputs;
  return 0;
}

static const char *const source_schemes[] = { "docker-image", "local", "git", "http", "https" };

static int
check_source (struct op_entry *e, ps_error **err)
{
  const char *id = e->op->source->identifier;
  const char *sep = strstr (id, "://");
  shown_buf show;
  if (sep == NULL || sep == id)
    return op_fail (err, 400, e, "source identifier \"%s\" is not of the form scheme://ref", shown (id, show));
  size_t scheme_len = (size_t) (sep - id);
  bool known = false;
  for (size_t i = 0; i < ARRAY_SIZE (source_schemes) && !known; i++)
    known = strlen (source_schemes[i]) == scheme_len && memcmp (source_schemes[i], id, scheme_len) == 0;
  if (!known)
    {
      cleanup_free char *scheme = xstrndup (id, scheme_len);
      return op_fail (err, 400, e,
                      "source scheme \"%s\" is not supported (supported: docker-image, local, git, http, https)",
                      shown (scheme, show));
    }
  if (sep[3] == '\0')
    return op_fail (err, 400, e, "source identifier \"%s\" has an empty ref", shown (id, show));
  if (e->op->n_inputs != 0)
    return op_fail (err, 400, e, "a source op takes no inputs (it has %zu)", e->op->n_inputs);
  e->n_outputs = 1;
  return 0;
}

/* A file action's input, secondaryInput or owner input: -1 (empty), an
   op input, or the result of an earlier action (n_inputs + j, j < k). */
static int
check_action_index (struct op_entry *e, size_t k, const char *what, int64_t v, ps_error **err)
{
  int64_t n_inputs = (int64_t) e->op->n_inputs;
  if (v >= -1 && v < n_inputs + (int64_t) k)
    return 0;
  char valid[128];
  int n = snprintf (valid, sizeof valid, "-1 for empty");
  if (n_inputs > 0)
    n += snprintf (valid + n, sizeof valid - (size_t) n, ", 0..%lld for the op's inputs", (long long) n_inputs - 1);
  if (k > 0)
    snprintf (valid + n, sizeof valid - (size_t) n, ", %lld..%lld for earlier actions' results", (long long) n_inputs,
              (long long) n_inputs + (long long) k - 1);
  return op_fail (err, 400, e, "file action %zu: %s %lld is out of range (valid: %s)", k, what, (long long) v, valid);
}

static int
check_user (struct op_entry *e, size_t k, const char *what, const Pb__UserOpt *u, ps_error **err)
{
  if (u == NULL)
    return 0;
  switch (u->user_case)
    {
    case PB__USER_OPT__USER_BY_ID:
      return 0;
    case PB__USER_OPT__USER_BY_NAME:
      if (*u->byname->name == '\0')
        return op_fail (err, 400, e, "file action %zu: %s.byName has an empty name", k, what);
      return check_action_index (e, k, what, u->byname->input, err);
    default:
      return op_fail (err, 400, e, "file action %zu: %s has neither byName nor byID", k, what);
    }
}

static int
check_owner (struct op_entry *e, size_t k, const Pb__ChownOpt *o, ps_error **err)
{
  if (o == NULL)
    return 0;
  if (check_user (e, k, "owner.user", o->user, err) < 0 || check_user (e, k, "owner.group", o->group, err) < 0)
    return -1;
  return 0;
}

static int
need_path (struct op_entry *e, size_t k, const char *action, const char *field, const char *value, ps_error **err)
{
  if (*value != '\0')
    return 0;
  return op_fail (err, 400, e, "file action %zu (%s) has an empty %s", k, action, field);
}

/* The action itself: exactly one kind, its paths non-empty, its owner valid. */
static int
check_action (struct op_entry *e, size_t k, const Pb__FileAction *a, ps_error **err)
{
  switch (a->action_case)
    {
    case PB__FILE_ACTION__ACTION_COPY:
      if (need_path (e, k, "copy", "src", a->copy->src, err) < 0 || need_path (e, k, "copy", "dest", a->copy->dest, err) < 0)
        return -1;
      return check_owner (e, k, a->copy->owner, err);
    case PB__FILE_ACTION__ACTION_MKFILE:
      if (need_path (e, k, "mkfile", "path", a->mkfile->path, err) < 0)
        return -1;
      return check_owner (e, k, a->mkfile->owner, err);
    case PB__FILE_ACTION__ACTION_MKDIR:
      if (need_path (e, k, "mkdir", "path", a->mkdir->path, err) < 0)
        return -1;
      return check_owner (e, k, a->mkdir->owner, err);
    case PB__FILE_ACTION__ACTION_RM:
      return need_path (e, k, "rm", "path", a->rm->path, err);
    case PB__FILE_ACTION__ACTION_SYMLINK:
      if (need_path (e, k, "symlink", "oldpath", a->symlink->oldpath, err) < 0
          || need_path (e, k, "symlink", "newpath", a->symlink->newpath, err) < 0)
        return -1;
      return check_owner (e, k, a->symlink->owner, err);
    default:
      if (a->base.n_unknown_fields > 0)
        return op_fail (err, 400, e, "file action %zu: unknown action type (protobuf field %u)", k,
                        a->base.unknown_fields[0].tag);
      return op_fail (err, 400, e, "file action %zu has no action (copy, mkfile, mkdir, rm or symlink)", k);
    }
}

static int
check_file (struct op_entry *e, ps_error **err)
{
  const Pb__FileOp *f = e->op->file;
  if (f->n_actions == 0)
    return op_fail (err, 400, e, "file op has no actions");
  cleanup_free bool *seen = xcalloc (f->n_actions, sizeof (bool));
  size_t outputs = 0;
  for (size_t k = 0; k < f->n_actions; k++)
    {
      const Pb__FileAction *a = f->actions[k];
      if (check_action_index (e, k, "input", a->input, err) < 0
          || check_action_index (e, k, "secondaryInput", a->secondaryinput, err) < 0)
        return -1;
      if (check_action (e, k, a, err) < 0)
        return -1;
      /* As BuildKit's FileOpSolver: outputs distinct and numbered 0..n-1. */
      if (a->output != -1)
        {
          if (a->output < 0 || a->output >= (int64_t) f->n_actions)
            return op_fail (err, 400, e, "file action %zu: output %lld is out of range (-1 for none, or 0..%zu)", k,
                            (long long) a->output, f->n_actions - 1);
          if (seen[a->output])
            return op_fail (err, 400, e, "file action %zu: output %lld is already produced by an earlier action", k,
                            (long long) a->output);
          seen[a->output] = true;
          outputs++;
        }
    }
  if (outputs == 0)
    return op_fail (err, 400, e, "file op has no output (every action's output is -1)");
  for (size_t i = 0; i < outputs; i++)
    if (!seen[i])
      return op_fail (err, 400, e, "file op outputs are not numbered 0..%zu: output %zu is missing", outputs - 1, i);
  e->n_outputs = outputs;
  return 0;
}

static int
check_merge (struct op_entry *e, ps_error **err)
{
  const Pb__MergeOp *m = e->op->merge;
  if (m->n_inputs == 0)
    return op_fail (err, 400, e, "merge has no inputs");
  for (size_t i = 0; i < m->n_inputs; i++)
    if (m->inputs[i]->input < 0 || m->inputs[i]->input >= (int64_t) e->op->n_inputs)
      return op_fail (err, 400, e, "merge input %zu: %lld is out of range (the op has %zu inputs)", i,
                      (long long) m->inputs[i]->input, e->op->n_inputs);
  e->n_outputs = 1;
  return 0;
}

static int
check_diff (struct op_entry *e, ps_error **err)
{
  const Pb__DiffOp *d = e->op->diff;
  if (d->lower == NULL || d->upper == NULL)
    return op_fail (err, 400, e, "diff needs both lower and upper");
  int64_t sides[2] = { d->lower->input, d->upper->input };
  for (size_t i = 0; i < 2; i++)
    if (sides[i] < -1 || sides[i] >= (int64_t) e->op->n_inputs)
      return op_fail (err, 400, e, "diff %s: input %lld is out of range (-1 for empty, or 0..%lld)",
                      i == 0 ? "lower" : "upper", (long long) sides[i], (long long) e->op->n_inputs - 1);
  e->n_outputs = 1;
  return 0;
}

/* Everything about one op that needs no other op; sets n_outputs. */
static int
check_op (struct op_entry *e, ps_error **err)
{
  const Pb__Op *op = e->op;
  if (op->n_inputs > PS_MAX_LLB_OP_INPUTS)
    return op_fail (err, 413, e, "op has %zu inputs, over the limit of %d", op->n_inputs, PS_MAX_LLB_OP_INPUTS);
  for (size_t i = 0; i < op->n_inputs; i++)
    if (op->inputs[i]->index < 0)
      return op_fail (err, 400, e, "input %zu: output index %lld is negative", i, (long long) op->inputs[i]->index);
  switch (op->op_case)
    {
    case PB__OP__OP_EXEC:
      return check_exec (e, err);
    case PB__OP__OP_SOURCE:
      return check_source (e, err);
    case PB__OP__OP_FILE:
      return check_file (e, err);
    case PB__OP__OP_MERGE:
      return check_merge (e, err);
    case PB__OP__OP_DIFF:
      return check_diff (e, err);
    case PB__OP__OP_BUILD:
      return op_fail (err, 400, e, "build ops (nested LLB builds) are not supported");
    case PB__OP__OP_PASSTHROUGH:
      return op_fail (err, 400, e, "passthrough ops (gateway frontend results) are not supported");
    default:
      abort (); /* terminal-shaped ops are handled by the caller */
    }
}

/* ---- graph order -------------------------------------------------------- */

int
llb_toposort (size_t n, const size_t *dep_start, const size_t *deps, size_t *order, size_t *on_cycle)
{
  /* users[user_start[d] ..] = the nodes depending on d, one per edge. */
  cleanup_free size_t *pending = xcalloc (n + 1, sizeof (size_t));
  cleanup_free size_t *user_start = xcalloc (n + 1, sizeof (size_t));
  cleanup_free size_t *users = xcalloc (dep_start[n] + 1, sizeof (size_t));
  cleanup_free size_t *fill = xcalloc (n + 1, sizeof (size_t));
  for (size_t i = 0; i < n; i++)
    {
      pending[i] = dep_start[i + 1] - dep_start[i];
      for (size_t j = dep_start[i]; j < dep_start[i + 1]; j++)
        user_start[deps[j] + 1]++;
    }
  for (size_t i = 0; i < n; i++)
    user_start[i + 1] += user_start[i];
  for (size_t i = 0; i < n; i++)
    for (size_t j = dep_start[i]; j < dep_start[i + 1]; j++)
      users[user_start[deps[j]] + fill[deps[j]]++] = i;

  /* order[] doubles as the FIFO queue. */
  size_t head = 0, tail = 0;
  for (size_t i = 0; i < n; i++)
    if (pending[i] == 0)
      order[tail++] = i;
  while (head < tail)
    {
      size_t v = order[head++];
      for (size_t j = user_start[v]; j < user_start[v + 1]; j++)
        if (--pending[users[j]] == 0)
          order[tail++] = users[j];
    }
  if (tail == n)
    return 0;

  /* Every node left has a dependency that is also left; following such
     dependencies n times from any of them must end on a cycle. */
  size_t v = SIZE_MAX;
  for (size_t i = 0; i < n && v == SIZE_MAX; i++)
    if (pending[i] > 0)
      v = i;
  for (size_t step = 0; step < n; step++)
    for (size_t j = dep_start[v]; j < dep_start[v + 1]; j++)
      if (pending[deps[j]] > 0)
        {
          v = deps[j];
          break;
        }
  *on_cycle = v;
  return -1;
}

/* ---- names -------------------------------------------------------------- */

/* A display name bounded by PS_MAX_LLB_NAME; appending stops at the bound
   so nested default names cost O(bound) each, not their full length. */
struct name_buf
{
  ps_buf b;
  bool truncated;
};

static void
name_add (struct name_buf *n, const char *s)
{
  size_t room = PS_MAX_LLB_NAME - n->b.len;
  size_t len = strnlen (s, room + 1);
  if (len > room)
    {
      len = room;
      n->truncated = true;
    }
  ps_buf_append (&n->b, s, len);
}

static char *
name_finish (struct name_buf *n)
{
  if (n->truncated && n->b.len > 3)
    {
      /* Cut before any UTF-8 sequence the bound split, then mark the cut. */
      size_t len = n->b.len - 3;
      while (len > 0 && ((unsigned char) n->b.data[len] & 0xc0) == 0x80)
        len--;
      n->b.len = len;
      ps_buf_append (&n->b, "...", 3);
    }
  return ps_buf_steal (&n->b);
}

static const char *
custom_name (const Pb__OpMetadata *md)
{
  if (md == NULL)
    return NULL;
  const char *name = NULL;
  for (size_t i = 0; i < md->n_description; i++)
    if (strcmp (md->description[i]->key, "llb.customname") == 0 && *md->description[i]->value)
      name = md->description[i]->value;
  return name;
}

/* BuildKit's llbOpName (solver/llbsolver/vertex.go), so progress output
   names vertices as BuildKit does. */
static char *
default_name (const struct llb_vertex *v)
{
  struct name_buf n = { 0 };
  const Pb__Op *op = v->op;
  switch (op->op_case)
    {
    case PB__OP__OP_SOURCE:
      name_add (&n, op->source->identifier);
      break;
    case PB__OP__OP_EXEC:
      for (size_t i = 0; i < op->exec->meta->n_args; i++)
        {
          if (i)
            name_add (&n, " ");
          name_add (&n, op->exec->meta->args[i]);
        }
      break;
    case PB__OP__OP_FILE:
      for (size_t i = 0; i < op->file->n_actions; i++)
        {
          const Pb__FileAction *a = op->file->actions[i];
          if (i)
            name_add (&n, ", ");
          switch (a->action_case)
            {
            case PB__FILE_ACTION__ACTION_MKDIR:
              name_add (&n, "mkdir ");
              name_add (&n, a->mkdir->path);
              break;
            case PB__FILE_ACTION__ACTION_MKFILE:
              name_add (&n, "mkfile ");
              name_add (&n, a->mkfile->path);
              break;
            case PB__FILE_ACTION__ACTION_SYMLINK:
              name_add (&n, "symlink ");
              name_add (&n, a->symlink->newpath);
              name_add (&n, " -> ");
              name_add (&n, a->symlink->oldpath);
              break;
            case PB__FILE_ACTION__ACTION_RM:
              name_add (&n, "rm ");
              name_add (&n, a->rm->path);
              break;
            case PB__FILE_ACTION__ACTION_COPY:
              name_add (&n, "copy ");
              name_add (&n, a->copy->src);
              name_add (&n, " ");
              name_add (&n, a->copy->dest);
              break;
            default:
              break;
            }
        }
      break;
    case PB__OP__OP_MERGE:
      name_add (&n, "merge (");
      for (size_t i = 0; i < v->n_inputs; i++)
        {
          if (i)
            name_add (&n, ", ");
          name_add (&n, v->inputs[i]->name);
        }
      name_add (&n, ")");
      break;
    case PB__OP__OP_DIFF:
      name_add (&n, "diff ");
      for (size_t side = 0; side < 2; side++)
        {
          int64_t in = side == 0 ? op->diff->lower->input : op->diff->upper->input;
          if (side)
            name_add (&n, " -> ");
          if (in < 0)
            name_add (&n, "scratch");
          else
            {
              name_add (&n, "(");
              name_add (&n, v->inputs[in]->name);
              name_add (&n, ")");
            }
        }
      break;
    default:
      name_add (&n, "unknown");
      break;
    }
  return name_finish (&n);
}

/* ---- Definition -> graph ------------------------------------------------- */

/* Decode every def[] entry, dedupe by digest, and find the terminal op. */
static int
collect_ops (struct builder *b, ps_error **err)
{
  const Pb__Definition *def = b->def;
  size_t n = def->n_def;
  /* Every position's digest, then the positions sorted by digest (ties
     by position) to find each op's first occurrence: a repeat has the
     same bytes (same SHA-256), so it is the same op and the first stands
     for it. */
  b->ops = xcalloc (n, sizeof (struct op_entry));
  cleanup_free struct op_entry *at = xcalloc (n, sizeof (struct op_entry));
  cleanup_free size_t *sorted = xcalloc (n, sizeof (size_t));
  for (size_t i = 0; i < n; i++)
    {
      char hex[65];
      ps_sha256_hex (def->def[i].data, def->def[i].len, hex);
      snprintf (at[i].digest, sizeof at[i].digest, "sha256:%s", hex);
      at[i].def_index = i;
      sorted[i] = i;
    }
  qsort_r (sorted, n, sizeof (size_t), cmp_ops_by_digest, at);
  cleanup_free size_t *first = xcalloc (n, sizeof (size_t));
  for (size_t j = 0; j < n; j++)
    {
      size_t i = sorted[j];
      bool repeat = j > 0 && strcmp (at[i].digest, at[sorted[j - 1]].digest) == 0;
      first[i] = repeat ? first[sorted[j - 1]] : i;
    }

  cleanup_free size_t *distinct = xcalloc (n, sizeof (size_t)); /* first position -> index into ops */
  for (size_t i = 0; i < n; i++)
    {
      struct op_entry probe = at[i];
      size_t idx;
      if (first[i] == i)
        {
          probe.op = pb__op__unpack (b->alloc, def->def[i].len, def->def[i].data);
          if (probe.op == NULL && b->budget->exceeded)
            return op_fail (err, 413, &probe, "decoding the definition up to this op takes more than %d MiB of memory, "
                            "the limit", PS_MAX_LLB_DECODED_BYTES >> 20);
          if (probe.op == NULL)
            return op_fail (err, 400, &probe, "cannot decode: not a marshalled pb.Op (truncated or malformed protobuf)");
          idx = distinct[i] = b->n_ops++;
          b->ops[idx] = probe;
        }
      else
        idx = distinct[first[i]];
      struct op_entry *e = &b->ops[idx];
      bool last = i == n - 1;
      unsigned tag;
      if (e->op->op_case == PB__OP__OP__NOT_SET)
        {
          if (has_unknown_fields (e->op, &tag))
            return op_fail (err, 400, &probe,
                            "unknown op type (protobuf field %u; known: exec, source, file, build, merge, diff, "
                            "passthrough)",
                            tag);
          if (!last)
            return op_fail (err, 400, &probe,
                            "is terminal-shaped (inputs only, no operation) but is not the last op; the terminal op, "
                            "naming the result, must come last and only there");
        }
      else if (last)
        return op_fail (err, 400, &probe,
                        "the last op must be the terminal op (inputs only, naming the result), not a %s op",
                        op_type_name (e->op));
    }
  b->by_digest = xcalloc (b->n_ops, sizeof (size_t));
  for (size_t i = 0; i < b->n_ops; i++)
    b->by_digest[i] = i;
  qsort_r (b->by_digest, b->n_ops, sizeof (size_t), cmp_ops_by_digest, b->ops);

  /* The terminal op's bytes occur only last (checked above), so it is the
     last distinct op. */
  struct op_entry *t = &b->ops[b->n_ops - 1];
  if (t->op->n_inputs != 1)
    return op_fail (err, 400, t, "the terminal op must have exactly one input, the result (it has %zu)",
                    t->op->n_inputs);
  if (t->op->inputs[0]->index < 0)
    return op_fail (err, 400, t, "the terminal op's input has a negative output index %lld",
                    (long long) t->op->inputs[0]->index);
  return 0;
}

/* Digest references to indexes; every one must name a non-terminal op and
   an output it has. */
static int
resolve_inputs (struct builder *b, ps_error **err)
{
  size_t terminal = b->n_ops - 1;
  for (size_t i = 0; i < b->n_ops; i++)
    {
      struct op_entry *e = &b->ops[i];
      e->deps = xcalloc (e->op->n_inputs + 1, sizeof (size_t));
      for (size_t k = 0; k < e->op->n_inputs; k++)
        {
          const Pb__Input *in = e->op->inputs[k];
          char what[64];
          if (i == terminal)
            snprintf (what, sizeof what, "the terminal op's input (the result)");
          else
            snprintf (what, sizeof what, "input %zu", k);
          size_t d = lookup (b, in->digest);
          if (d == SIZE_MAX)
            {
              shown_buf show;
              return op_fail (err, 400, e, "%s: \"%s\" is not the digest of any op in the definition", what,
                              shown (in->digest, show));
            }
          if (d == terminal)
            return op_fail (err, 400, e, "%s refers to the terminal op", what);
          if (in->index >= (int64_t) b->ops[d].n_outputs)
            return op_fail (err, 400, e, "%s: output index %lld is out of range (%s op %s has %zu output%s)", what,
                            (long long) in->index, op_type_name (b->ops[d].op), b->ops[d].digest, b->ops[d].n_outputs,
                            b->ops[d].n_outputs == 1 ? "" : "s");
          e->deps[k] = d;
        }
    }
  return 0;
}

static void
attach_metadata (struct builder *b)
{
  /* Keys that are not the digest of an op here are ignored, as BuildKit
     does (it looks metadata up by digest and never walks the map):
     clients may send metadata for ops they later dropped. */
  for (size_t i = 0; i < b->def->n_metadata; i++)
    {
      const Pb__Definition__MetadataEntry *m = b->def->metadata[i];
      size_t idx = lookup (b, m->key);
      if (idx != SIZE_MAX)
        b->ops[idx].meta = m->value; /* a repeated key: the last wins, as in Go */
    }
}

static int
build_graph (struct builder *b, struct llb_graph *g, ps_error **err)
{
  const Pb__Definition *def = b->def;
  if (def->n_def < 2)
    return ps_error_set (err, 400,
                         "definition has %zu op%s; it needs at least 2: the ops and, last, the terminal op naming the "
                         "result",
                         def->n_def, def->n_def == 1 ? "" : "s");
  if (collect_ops (b, err) < 0)
    return -1;
  size_t m = b->n_ops - 1; /* ops other than the terminal */
  for (size_t i = 0; i < m; i++)
    if (check_op (&b->ops[i], err) < 0)
      return -1;
  if (resolve_inputs (b, err) < 0)
    return -1;
  attach_metadata (b);

  cleanup_free size_t *dep_start = xcalloc (m + 1, sizeof (size_t));
  for (size_t i = 0; i < m; i++)
    dep_start[i + 1] = dep_start[i] + b->ops[i].op->n_inputs;
  cleanup_free size_t *deps = xcalloc (dep_start[m] + 1, sizeof (size_t));
  for (size_t i = 0; i < m; i++)
    memcpy (deps + dep_start[i], b->ops[i].deps, b->ops[i].op->n_inputs * sizeof (size_t));
  cleanup_free size_t *order = xcalloc (m + 1, sizeof (size_t));
  size_t on_cycle;
  if (llb_toposort (m, dep_start, deps, order, &on_cycle) < 0)
    return op_fail (err, 400, &b->ops[on_cycle], "op is on a dependency cycle");

  /* Keep what the result depends on: walk the order backwards from it. */
  const struct op_entry *t = &b->ops[m];
  cleanup_free bool *wanted = xcalloc (m + 1, sizeof (bool));
  wanted[t->deps[0]] = true;
  size_t n_wanted = 0;
  for (size_t j = m; j-- > 0;)
    if (wanted[order[j]])
      {
        n_wanted++;
        for (size_t k = dep_start[order[j]]; k < dep_start[order[j] + 1]; k++)
          wanted[deps[k]] = true;
      }

  cleanup_free size_t *pos = xcalloc (m + 1, sizeof (size_t));
  g->vertices = xcalloc (n_wanted, sizeof (struct llb_vertex));
  for (size_t j = 0; j < m; j++)
    {
      size_t i = order[j];
      if (!wanted[i])
        continue;
      struct op_entry *e = &b->ops[i];
      struct llb_vertex *v = &g->vertices[g->n_vertices];
      pos[i] = g->n_vertices++;
      memcpy (v->digest, e->digest, sizeof v->digest);
      v->op = steal_pointer (&e->op);
      v->meta = e->meta;
      v->n_inputs = v->op->n_inputs;
      v->inputs = xcalloc (v->n_inputs + 1, sizeof (struct llb_vertex *));
      v->input_index = xcalloc (v->n_inputs + 1, sizeof (int64_t));
      for (size_t k = 0; k < v->n_inputs; k++)
        {
          v->inputs[k] = &g->vertices[pos[e->deps[k]]];
          v->input_index[k] = v->op->inputs[k]->index;
        }
      v->n_outputs = e->n_outputs;
      v->def_index = e->def_index;
      v->name = custom_name (v->meta);
      if (v->name == NULL)
        v->name = v->name_alloc = default_name (v);
    }
  g->result = &g->vertices[pos[t->deps[0]]];
  g->result_index = t->op->inputs[0]->index;
  return 0;
}

int
llb_graph_from_protobuf (const uint8_t *data, size_t len, struct llb_graph **out, ps_error **err)
{
  if (len > PS_MAX_LLB_BYTES)
    return ps_error_set (err, 413, "definition is %zu bytes, over the limit of %d bytes", len, PS_MAX_LLB_BYTES);
  if (scan_definition (data, len, err) < 0)
    return -1;
  struct decode_budget budget = { 0 };
  ProtobufCAllocator alloc = { .alloc = budget_alloc, .free = budget_free, .allocator_data = &budget };
  Pb__Definition *def = pb__definition__unpack (&alloc, len, data);
  if (def == NULL && budget.exceeded)
    return ps_error_set (err, 413, "decoding the definition takes more than %d MiB of memory, the limit",
                         PS_MAX_LLB_DECODED_BYTES >> 20);
  if (def == NULL)
    return ps_error_set (err, 400, "cannot decode the definition: not a marshalled pb.Definition (truncated or "
                                   "malformed protobuf)");
  struct llb_graph *g = xcalloc (1, sizeof *g);
  g->def = def;
  struct builder b = { .def = def, .alloc = &alloc, .budget = &budget };
  int ret = build_graph (&b, g, err);
  builder_free (&b);
  if (ret < 0)
    {
      llb_graph_free (g);
      return -1;
    }
  *out = g;
  return 0;
}

void
llb_graph_free (struct llb_graph *g)
{
  if (g == NULL)
    return;
  for (size_t i = 0; i < g->n_vertices; i++)
    {
      struct llb_vertex *v = &g->vertices[i];
      pb__op__free_unpacked (v->op, NULL);
      free (v->inputs);
      free (v->input_index);
      free (v->name_alloc);
    }
  free (g->vertices);
  if (g->def)
    pb__definition__free_unpacked (g->def, NULL);
  free (g);
}

/* ---- the JSON forms ----------------------------------------------------- */

/* Allocations behind a hand-built Pb__Definition, freed together after it
   is packed. */
struct arena
{
  void **p;
  size_t n, cap;
};

static void *
arena_keep (struct arena *a, void *p)
{
  if (a->n == a->cap)
    {
      a->cap = a->cap ? 2 * a->cap : 64;
      a->p = xrealloc (a->p, a->cap * sizeof (void *));
    }
  a->p[a->n++] = p;
  return p;
}

static void *
arena_calloc (struct arena *a, size_t n, size_t size)
{
  return arena_keep (a, xcalloc (n ? n : 1, size));
}

static void
arena_free (struct arena *a)
{
  for (size_t i = 0; i < a->n; i++)
    free (a->p[i]);
  free (a->p);
}

/* Base64, standard or URL-safe alphabet, padding optional, nothing else.
   Checked here first because ps_base64_decode() writes before its buffer
   when the input is only '=' characters (its padding count then exceeds
   what it decoded). */
static int
decode_base64 (const char *s, unsigned char **out, size_t *len)
{
  size_t n = strlen (s), pad = 0;
  while (n > 0 && s[n - 1] == '=' && pad < 2)
    n--, pad++;
  for (size_t i = 0; i < n; i++)
    {
      char c = s[i];
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/'
            || c == '-' || c == '_'))
        return -1;
    }
  if (n % 4 == 1 || (pad > 0 && (n + pad) % 4 != 0))
    return -1;
  return ps_base64_decode (s, out, len);
}

static bool
key_is (const cJSON *it, const char *go_name, const char *camel_name)
{
  return strcmp (it->string, go_name) == 0 || (camel_name && strcmp (it->string, camel_name) == 0);
}

static int
json_bool (const cJSON *v, const char *where, const char *key, protobuf_c_boolean *out, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (!cJSON_IsBool (v))
    return ps_error_set (err, 400, "%s.%s: expected true or false", where, key);
  *out = cJSON_IsTrue (v);
  return 0;
}

static int
json_string (const cJSON *v, const char *where, const char *key, struct arena *a, char **out, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (!cJSON_IsString (v))
    return ps_error_set (err, 400, "%s.%s: expected a string", where, key);
  *out = arena_keep (a, xstrdup (v->valuestring));
  return 0;
}

/* An integer as Go's encoding/json writes it (a number) or protojson
   writes 64-bit ones (a decimal string). */
static int
json_int (const cJSON *v, const char *where, const char *key, bool is_unsigned, int64_t *out, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (cJSON_IsNumber (v))
    {
      double d = v->valuedouble;
      if (d >= -9007199254740992.0 && d <= 9007199254740992.0 && d == (double) (int64_t) d
          && (!is_unsigned || d >= 0))
        {
          *out = (int64_t) d;
          return 0;
        }
    }
  else if (cJSON_IsString (v) && *v->valuestring)
    {
      char *end;
      errno = 0;
      long long x = strtoll (v->valuestring, &end, 10);
      if (errno == 0 && *end == '\0' && (!is_unsigned || x >= 0))
        {
          *out = x;
          return 0;
        }
    }
  return ps_error_set (err, 400, "%s.%s: expected a%s integer", where, key, is_unsigned ? " non-negative" : "n");
}

static int
json_object (const cJSON *v, const char *where, const char *key, ps_error **err)
{
  if (!cJSON_IsObject (v))
    return ps_error_set (err, 400, "%s.%s: expected an object", where, key);
  return 0;
}

static int
parse_description (const cJSON *v, const char *where, struct arena *a, Pb__OpMetadata *md, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (json_object (v, where, "description", err) < 0)
    return -1;
  size_t n = (size_t) cJSON_GetArraySize (v);
  md->n_description = 0; /* a repeated key: the last wins */
  md->description = arena_calloc (a, n, sizeof (Pb__OpMetadata__DescriptionEntry *));
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, v)
    {
      if (!cJSON_IsString (it))
        return ps_error_set (err, 400, "%s.description.%s: expected a string", where, shown (it->string, show));
      Pb__OpMetadata__DescriptionEntry *e = arena_calloc (a, 1, sizeof *e);
      *e = (Pb__OpMetadata__DescriptionEntry) PB__OP_METADATA__DESCRIPTION_ENTRY__INIT;
      e->key = arena_keep (a, xstrdup (it->string));
      e->value = arena_keep (a, xstrdup (it->valuestring));
      md->description[md->n_description++] = e;
    }
  return 0;
}

static int
parse_caps (const cJSON *v, const char *where, struct arena *a, Pb__OpMetadata *md, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (json_object (v, where, "caps", err) < 0)
    return -1;
  size_t n = (size_t) cJSON_GetArraySize (v);
  md->n_caps = 0; /* a repeated key: the last wins */
  md->caps = arena_calloc (a, n, sizeof (Pb__OpMetadata__CapsEntry *));
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, v)
    {
      if (!cJSON_IsBool (it))
        return ps_error_set (err, 400, "%s.caps.%s: expected true or false", where, shown (it->string, show));
      Pb__OpMetadata__CapsEntry *e = arena_calloc (a, 1, sizeof *e);
      *e = (Pb__OpMetadata__CapsEntry) PB__OP_METADATA__CAPS_ENTRY__INIT;
      e->key = arena_keep (a, xstrdup (it->string));
      e->value = cJSON_IsTrue (it);
      md->caps[md->n_caps++] = e;
    }
  return 0;
}

static int
parse_export_cache (const cJSON *v, const char *where, struct arena *a, Pb__OpMetadata *md, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (json_object (v, where, "export_cache", err) < 0)
    return -1;
  md->export_cache = arena_calloc (a, 1, sizeof (Pb__ExportCache));
  *md->export_cache = (Pb__ExportCache) PB__EXPORT_CACHE__INIT;
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, v)
    {
      if (!key_is (it, "Value", "value"))
        return ps_error_set (err, 400, "%s.export_cache: unknown key \"%s\" (accepted: Value)", where,
                             shown (it->string, show));
      if (json_bool (it, where, "export_cache.Value", &md->export_cache->value, err) < 0)
        return -1;
    }
  return 0;
}

static int
parse_progress_group (const cJSON *v, const char *where, struct arena *a, Pb__OpMetadata *md, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (json_object (v, where, "progress_group", err) < 0)
    return -1;
  Pb__ProgressGroup *pg = md->progress_group = arena_calloc (a, 1, sizeof (Pb__ProgressGroup));
  *pg = (Pb__ProgressGroup) PB__PROGRESS_GROUP__INIT;
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, v)
    {
      int r;
      if (key_is (it, "id", NULL))
        r = json_string (it, where, "progress_group.id", a, &pg->id, err);
      else if (key_is (it, "name", NULL))
        r = json_string (it, where, "progress_group.name", a, &pg->name, err);
      else if (key_is (it, "weak", NULL))
        r = json_bool (it, where, "progress_group.weak", &pg->weak, err);
      else
        r = ps_error_set (err, 400, "%s.progress_group: unknown key \"%s\" (accepted: id, name, weak)", where,
                          shown (it->string, show));
      if (r < 0)
        return -1;
    }
  return 0;
}

static int
parse_linux_resources (const cJSON *v, const char *where, struct arena *a, Pb__OpMetadata *md, ps_error **err)
{
  if (cJSON_IsNull (v))
    return 0;
  if (json_object (v, where, "linux_resources", err) < 0)
    return -1;
  Pb__LinuxResources *lr = md->linux_resources = arena_calloc (a, 1, sizeof (Pb__LinuxResources));
  *lr = (Pb__LinuxResources) PB__LINUX_RESOURCES__INIT;
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, v)
    {
      int64_t x = 0;
      int r;
      if (key_is (it, "memory", NULL))
        r = json_int (it, where, "linux_resources.memory", false, &lr->memory, err);
      else if (key_is (it, "memorySwap", NULL))
        r = json_int (it, where, "linux_resources.memorySwap", false, &lr->memoryswap, err);
      else if (key_is (it, "cpuShares", NULL))
        {
          r = json_int (it, where, "linux_resources.cpuShares", true, &x, err);
          lr->cpushares = (uint64_t) x;
        }
      else if (key_is (it, "cpuPeriod", NULL))
        {
          r = json_int (it, where, "linux_resources.cpuPeriod", true, &x, err);
          lr->cpuperiod = (uint64_t) x;
        }
      else if (key_is (it, "cpuQuota", NULL))
        r = json_int (it, where, "linux_resources.cpuQuota", false, &lr->cpuquota, err);
      else if (key_is (it, "cpusetCpus", NULL))
        r = json_string (it, where, "linux_resources.cpusetCpus", a, &lr->cpusetcpus, err);
      else if (key_is (it, "cpusetMems", NULL))
        r = json_string (it, where, "linux_resources.cpusetMems", a, &lr->cpusetmems, err);
      else
        r = ps_error_set (err, 400,
                          "%s.linux_resources: unknown key \"%s\" (accepted: memory, memorySwap, cpuShares, "
                          "cpuPeriod, cpuQuota, cpusetCpus, cpusetMems)",
                          where, shown (it->string, show));
      if (r < 0)
        return -1;
    }
  return 0;
}

/* One metadata value: pb.OpMetadata as Go's encoding/json writes it (the
   struct's json tags), protojson's camelCase spellings accepted too.  A
   key given twice: the last one wins. */
static int
parse_op_metadata (const cJSON *o, const char *where, struct arena *a, Pb__OpMetadata *md, ps_error **err)
{
  if (!cJSON_IsObject (o))
    return ps_error_set (err, 400, "%s: expected an object (pb.OpMetadata)", where);
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, o)
    {
      int r;
      if (key_is (it, "ignore_cache", "ignoreCache"))
        r = json_bool (it, where, it->string, &md->ignore_cache, err);
      else if (key_is (it, "description", NULL))
        r = parse_description (it, where, a, md, err);
      else if (key_is (it, "export_cache", "exportCache"))
        r = parse_export_cache (it, where, a, md, err);
      else if (key_is (it, "caps", NULL))
        r = parse_caps (it, where, a, md, err);
      else if (key_is (it, "progress_group", "progressGroup"))
        r = parse_progress_group (it, where, a, md, err);
      else if (key_is (it, "linux_resources", "linuxResources"))
        r = parse_linux_resources (it, where, a, md, err);
      else
        r = ps_error_set (err, 400,
                          "%s: unknown key \"%s\" (accepted: ignore_cache, description, export_cache, caps, "
                          "progress_group, linux_resources)",
                          where, shown (it->string, show));
      if (r < 0)
        return -1;
    }
  return 0;
}

/* {"def":[...],"metadata":{...}} to a Pb__Definition whose allocations
   all live in `a`. */
static int
definition_from_object (const cJSON *root, struct arena *a, Pb__Definition *d, ps_error **err)
{
  const cJSON *it;
  shown_buf show;
  cJSON_ArrayForEach (it, root)
    if (!key_is (it, "def", NULL) && !key_is (it, "metadata", NULL) && !key_is (it, "Source", "source"))
      return ps_error_set (err, 400, "definition: unknown key \"%s\" (accepted: def, metadata, Source)",
                           shown (it->string, show));
  /* "Source" (source maps) is accepted and dropped: it only locates errors
     in the client's files, and podsolve's errors name ops instead. */

  const cJSON *ops = cJSON_GetObjectItemCaseSensitive (root, "def");
  if (!cJSON_IsArray (ops))
    return ps_error_set (err, 400, "definition.def: expected an array of base64-encoded pb.Op bytes");
  size_t n = (size_t) cJSON_GetArraySize (ops);
  if (n > PS_MAX_LLB_OPS)
    return ps_error_set (err, 413, "definition has %zu ops, over the limit of %d", n, PS_MAX_LLB_OPS);
  d->def = arena_calloc (a, n, sizeof (ProtobufCBinaryData));
  cJSON_ArrayForEach (it, ops)
    {
      unsigned char *bytes = NULL;
      size_t len = 0;
      if (!cJSON_IsString (it) || decode_base64 (it->valuestring, &bytes, &len) < 0)
        return ps_error_set (err, 400, "definition.def[%zu]: expected a base64 string (the bytes of a pb.Op)",
                             d->n_def);
      arena_keep (a, bytes);
      d->def[d->n_def].data = bytes;
      d->def[d->n_def].len = len;
      d->n_def++;
    }

  const cJSON *meta = cJSON_GetObjectItemCaseSensitive (root, "metadata");
  if (meta == NULL || cJSON_IsNull (meta))
    return 0;
  if (!cJSON_IsObject (meta))
    return ps_error_set (err, 400, "definition.metadata: expected an object keyed by op digest");
  size_t n_meta = (size_t) cJSON_GetArraySize (meta);
  if (n_meta > PS_MAX_LLB_OPS)
    return ps_error_set (err, 413, "definition has %zu metadata entries, over the limit of %d (one per op)", n_meta,
                         PS_MAX_LLB_OPS);
  d->metadata = arena_calloc (a, n_meta, sizeof (Pb__Definition__MetadataEntry *));
  cJSON_ArrayForEach (it, meta)
    {
      cleanup_free char *where = xasprintf ("definition.metadata[\"%s\"]", shown (it->string, show));
      Pb__Definition__MetadataEntry *e = arena_calloc (a, 1, sizeof *e);
      *e = (Pb__Definition__MetadataEntry) PB__DEFINITION__METADATA_ENTRY__INIT;
      e->key = arena_keep (a, xstrdup (it->string));
      e->value = arena_calloc (a, 1, sizeof (Pb__OpMetadata));
      *e->value = (Pb__OpMetadata) PB__OP_METADATA__INIT;
      d->metadata[d->n_metadata++] = e;
      if (parse_op_metadata (it, where, a, e->value, err) < 0)
        return -1;
    }
  return 0;
}

int
llb_graph_from_json (const char *definition_json, struct llb_graph **out, ps_error **err)
{
  if (definition_json == NULL)
    return ps_error_set (err, 400, "definition: missing");
  /* Base64 makes the bytes 4/3 larger; the JSON around them is small. */
  size_t len = strlen (definition_json);
  if (len > 2 * (size_t) PS_MAX_LLB_BYTES)
    return ps_error_set (err, 413, "definition is %zu bytes of JSON, over the limit of %zu", len,
                         2 * (size_t) PS_MAX_LLB_BYTES);
  cJSON *root = cJSON_ParseWithLength (definition_json, len);
  if (root == NULL)
    return ps_error_set (err, 400, "definition is not valid JSON");

  int ret = -1;
  unsigned char *bytes = NULL;
  size_t n_bytes = 0;
  if (cJSON_IsString (root))
    {
      if (decode_base64 (root->valuestring, &bytes, &n_bytes) < 0)
        ps_error_set (err, 400, "definition: not valid base64 (expected a base64-encoded pb.Definition)");
      else
        ret = 0;
    }
  else if (cJSON_IsObject (root))
    {
      struct arena a = { 0 };
      Pb__Definition d = PB__DEFINITION__INIT;
      if (definition_from_object (root, &a, &d, err) == 0)
        {
          n_bytes = pb__definition__get_packed_size (&d);
          bytes = xmalloc (n_bytes + 1);
          pb__definition__pack (&d, bytes);
          ret = 0;
        }
      arena_free (&a);
    }
  else
    ps_error_set (err, 400, "definition: expected base64 of a pb.Definition or {\"def\":[...],\"metadata\":{...}}");
  cJSON_Delete (root);

  if (ret == 0)
    ret = llb_graph_from_protobuf (bytes, n_bytes, out, err);
  free (bytes);
  return ret;
}

const char *
llb_source_attr (const Pb__SourceOp *s, const char *key)
{
  for (size_t i = 0; i < s->n_attrs; i++)
    if (strcmp (s->attrs[i]->key, key) == 0)
      return s->attrs[i]->value;
  return NULL;
}
