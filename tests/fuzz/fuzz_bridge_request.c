/* fuzz_bridge_request — LLBBridge (the gateway API a client-side frontend
 * drives: buildx, buildctl, frontend images) requests from arbitrary bytes,
 * through what handlers/grpc_bridge.c does with them before a build is
 * involved:
 *
 *   Solve      schema_bridge_solve: refused (501) leaves nothing allocated;
 *              accepted, the opts and cache imports are the request's own,
 *              each FrontendInputs definition and the definition decode
 *              again and pack to the same bytes (op digests unchanged);
 *   Return     schema_bridge_result_ref and _result_image_config: only a
 *              map of several refs is refused; the id and the config are
 *              the message's own (text cut at a NUL);
 *   Warn       schema_bridge_warn_text: each text is its bytes up to a NUL;
 *   ReadFile, StatFile, ReadDir
 *              on a ref-like directory of our own (gateway_root_*, what a
 *              mounted ref gets): whatever the path, the range and the
 *              pattern, nothing outside it is read, stat'ed or listed —
 *              beside the root lies a canary file and a directory with a
 *              name of its own, and the root holds symlinks to them (`..`,
 *              absolute, relative);
 *   the rest   Ping, Evaluate, ResolveImageConfig, ResolveSourceMeta,
 *              Inputs: decoded, packed, decoded again to the same bytes.
 *
 * Input: one byte picks the request (and for the file calls, which), the
 * rest is the protobuf message. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "schema/bridge_request.h"
#include "session/session_limits.h"
#include "solver/gateway.h"

#define CANARY "podsolve-fuzz-canary-outside-the-ref"
#define OUTSIDE_NAME "outside-entry-of-the-canary"
/* No file inside the root has this size; a stat of the canary would. */
#define CANARY_SIZE 7777

static char base[] = "/tmp/podsolve-fuzz-bridge-XXXXXX";
static int root_fd = -1;

static void
die (const char *what, const char *detail)
{
  fprintf (stderr, "fuzz_bridge_request: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  abort ();
}

static void
put (const char *rel, const char *content)
{
  char p[512];
  snprintf (p, sizeof p, "%s/%s", base, rel);
  FILE *f = fopen (p, "w");
  if (f == NULL)
    die ("fixture", p);
  fputs (content, f);
  fclose (f);
}

static void
link_to (const char *target, const char *rel)
{
  char p[512];
  snprintf (p, sizeof p, "%s/%s", base, rel);
  if (symlink (target, p) < 0)
    die ("fixture symlink", p);
}

static void
dir (const char *rel)
{
  char p[512];
  snprintf (p, sizeof p, "%s/%s", base, rel);
  if (mkdir (p, 0755) < 0)
    die ("fixture mkdir", p);
}

/* base/root is the ref; base/OUTSIDE_NAME/secret (the canary, CANARY_SIZE
   bytes) and base/secret must never be reached from it. */
static void
fixture (void)
{
  if (mkdtemp (base) == NULL)
    die ("mkdtemp", base);
  dir ("root");
  dir (OUTSIDE_NAME);
  char canary[CANARY_SIZE + 1];
  for (size_t i = 0; i < CANARY_SIZE; i++)
    canary[i] = CANARY[i % (sizeof CANARY - 1)];
  canary[CANARY_SIZE] = '\0';
  put (OUTSIDE_NAME "/secret", canary);
  put ("secret", canary);
  dir ("root/etc");
  dir ("root/a");
  dir ("root/a/b");
  put ("root/etc/os-release", "ID=fuzz\n");
  put ("root/a/b/file", "inside\n");
  put ("root/Dockerfile", "FROM scratch\n");
  link_to ("../" OUTSIDE_NAME "/secret", "root/up");
  link_to ("../../../../" OUTSIDE_NAME, "root/a/b/updir");
  link_to ("/../" OUTSIDE_NAME "/secret", "root/abs");
  link_to (base, "root/base");
  link_to ("..", "root/parent");
  link_to ("/proc/self/cwd", "root/magic");
  link_to ("b/file", "root/a/rel");
  link_to ("loop", "root/loop");
  root_fd = open (base, O_PATH | O_DIRECTORY | O_CLOEXEC);
  char p[512];
  snprintf (p, sizeof p, "%s/root", base);
  int r = open (p, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0 || r < 0)
    die ("open the root", p);
  close (root_fd);
  root_fd = r;
}

static void
cleanup (void)
{
  char cmd[600];
  snprintf (cmd, sizeof cmd, "rm -rf '%s'", base);
  if (system (cmd) != 0)
    fprintf (stderr, "fuzz_bridge_request: could not remove %s\n", base);
}

/* Text of `len` bytes as the daemon makes it: cut at the first NUL. */
static void
same_text (const char *text, const uint8_t *data, size_t len, const char *what)
{
  const void *nul = len ? memchr (data, 0, len) : NULL;
  size_t want = nul ? (size_t) ((const uint8_t *) nul - data) : len;
  if (text == NULL || strlen (text) != want || (want && memcmp (text, data, want) != 0))
    die ("text is not the bytes up to their first NUL", what);
}

/* unknown_field_zero: protobuf-c takes an unknown field numbered 0 (a tag
   written as the overlong varint 80 00) and keeps it, but its packing of
   that field does not decode again.  Such a message is not valid protobuf;
   in a Definition the engine refuses it (400) as it would the client's
   bytes, so the checks below start from what does decode.

   A packed pb.Definition that decodes packs again to the same bytes. */
static void
definition_round_trip (const uint8_t *def, size_t len, const char *what)
{
  Pb__Definition *d = pb__definition__unpack (NULL, len, def);
  if (d == NULL)
    return; /* see unknown_field_zero */
  size_t n = pb__definition__get_packed_size (d);
  uint8_t *again = xmalloc (n + 1);
  if (pb__definition__pack (d, again) != n || n != len || memcmp (again, def, n) != 0)
    die ("a definition does not pack to the same bytes", what);
  free (again);
  pb__definition__free_unpacked (d, NULL);
}

static void
solve (const uint8_t *data, size_t size)
{
  Moby__Buildkit__V1__Frontend__SolveRequest *rq = moby__buildkit__v1__frontend__solve_request__unpack (NULL, size, data);
  if (rq == NULL)
    return;
  struct bridge_solve s;
  ps_error *err = NULL;
  if (schema_bridge_solve (rq, &s, &err) < 0)
    {
      static const struct bridge_solve zero;
      if (err == NULL || err->status != 501 || memcmp (&s, &zero, sizeof s) != 0)
        die ("a refused Solve left something behind or is not a 501", err ? err->msg : NULL);
      ps_error_free (err);
    }
  else
    {
      if (s.frontend != rq->frontend || s.n_inputs != rq->n_frontendinputs
          || s.frontend_opt.n != rq->n_frontendopt || s.n_cache_imports != rq->n_cacheimports)
        die ("Solve: counts differ from the request", NULL);
      for (size_t i = 0; i < rq->n_frontendopt; i++)
        if (strcmp (s.frontend_opt.kv[2 * i], rq->frontendopt[i]->key) != 0
            || strcmp (s.frontend_opt.kv[2 * i + 1], rq->frontendopt[i]->value) != 0)
          die ("Solve: a FrontendOpt pair changed", rq->frontendopt[i]->key);
      if (s.frontend_opt.kv[2 * rq->n_frontendopt] != NULL)
        die ("Solve: FrontendOpt not NULL-terminated", NULL);
      for (size_t i = 0; i < rq->n_cacheimports; i++)
        if (strcmp (s.cache_imports[i].type, rq->cacheimports[i]->type) != 0
            || s.cache_imports[i].attrs.n != rq->cacheimports[i]->n_attrs)
          die ("Solve: a cache import changed", rq->cacheimports[i]->type);
      for (size_t i = 0; i < s.n_inputs; i++)
        {
          if (s.inputs[i].name != rq->frontendinputs[i]->key)
            die ("Solve: an input's name is not the request's", NULL);
          if (s.inputs[i].len > 0)
            definition_round_trip (s.inputs[i].definition, s.inputs[i].len, s.inputs[i].name);
        }
      bool has_def = rq->definition && rq->definition->n_def > 0;
      if (has_def != (s.definition != NULL))
        die ("Solve: a definition appeared or went missing", NULL);
      if (has_def)
        {
          definition_round_trip (s.definition, s.definition_len, "Definition");
          /* each op exactly as the client marshalled it */
          Pb__Definition *d = pb__definition__unpack (NULL, s.definition_len, s.definition);
          if (d != NULL && d->n_def != rq->definition->n_def)
            die ("Solve: the definition lost or gained ops", NULL);
          for (size_t i = 0; d != NULL && i < d->n_def; i++)
            if (d->def[i].len != rq->definition->def[i].len
                || (d->def[i].len && memcmp (d->def[i].data, rq->definition->def[i].data, d->def[i].len) != 0))
              die ("Solve: an op's bytes changed (its digest would)", NULL);
          if (d != NULL)
            pb__definition__free_unpacked (d, NULL);
        }
      schema_bridge_solve_free (&s);
    }
  moby__buildkit__v1__frontend__solve_request__free_unpacked (rq, NULL);
}

static void
return_ (const uint8_t *data, size_t size)
{
  Moby__Buildkit__V1__Frontend__ReturnRequest *rq = moby__buildkit__v1__frontend__return_request__unpack (NULL, size, data);
  if (rq == NULL)
    return;
  const Moby__Buildkit__V1__Frontend__Result *res = rq->result;
  const char *id = NULL;
  ps_error *err = NULL;
  size_t n_refs = 0;
  if (res && res->result_case == MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REFS)
    n_refs = res->refs->n_refs;
  if (res && res->result_case == MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REFS_DEPRECATED)
    n_refs = res->refsdeprecated->n_refs;
  if (schema_bridge_result_ref (res, &id, &err) < 0)
    {
      if (n_refs <= 1 || err == NULL || err->status != 501)
        die ("Return: refused a result of at most one ref", err ? err->msg : NULL);
      ps_error_free (err);
    }
  else
    {
      if (n_refs > 1)
        die ("Return: took a result of several refs", NULL);
      if (id != NULL)
        (void) strlen (id); /* borrowed from the message: ASan checks it is */
    }
  if (res)
    {
      char *config = schema_bridge_result_image_config (res);
      const Moby__Buildkit__V1__Frontend__Result__MetadataEntry *first = NULL;
      for (size_t i = 0; i < res->n_metadata && first == NULL; i++)
        if (strcmp (res->metadata[i]->key, "containerimage.config") == 0
            || strncmp (res->metadata[i]->key, "containerimage.config/", 22) == 0)
          first = res->metadata[i];
      if ((first == NULL) != (config == NULL))
        die ("Return: the image config appeared or went missing", NULL);
      if (first)
        same_text (config, first->value.data, first->value.len, "containerimage.config");
      free (config);
    }
  moby__buildkit__v1__frontend__return_request__free_unpacked (rq, NULL);
}

static void
warn (const uint8_t *data, size_t size)
{
  Moby__Buildkit__V1__Frontend__WarnRequest *rq = moby__buildkit__v1__frontend__warn_request__unpack (NULL, size, data);
  if (rq == NULL)
    return;
  char *short_msg = NULL;
  char **details = NULL;
  schema_bridge_warn_text (rq, &short_msg, &details);
  same_text (short_msg, rq->short_.data, rq->short_.len, "short");
  for (size_t i = 0; i < rq->n_detail; i++)
    same_text (details[i], rq->detail[i].data, rq->detail[i].len, "detail");
  if (details[rq->n_detail] != NULL)
    die ("Warn: details not NULL-terminated", NULL);
  free (short_msg);
  ps_strv_free_raw (details);
  moby__buildkit__v1__frontend__warn_request__free_unpacked (rq, NULL);
}

/* ---- the file calls, on the fixture's root ----------------------------------------- */

static void
no_canary (const Fsutil__Types__Stat *st, const char *what)
{
  if (strcmp (st->path, OUTSIDE_NAME) == 0 || st->size == CANARY_SIZE)
    die ("reached outside the root", what);
}

static void
files (uint8_t which, const uint8_t *data, size_t size)
{
  ps_error *err = NULL;
  switch (which % 3)
    {
    case 0:
      {
        Moby__Buildkit__V1__Frontend__ReadFileRequest *rq = moby__buildkit__v1__frontend__read_file_request__unpack (NULL, size, data);
        if (rq == NULL)
          return;
        ps_buf out = { 0 };
        size_t max = PS_GRPC_MAX_MESSAGE - 16; /* as bridge_read_file */
        if (gateway_root_read_file (root_fd, rq->filepath, rq->range != NULL, rq->range ? rq->range->offset : 0,
                                    rq->range ? rq->range->length : 0, max, &out, &err) < 0)
          ps_error_free (err);
        else if (out.len > max || (out.len > 0 && memmem (out.data, out.len, CANARY, sizeof CANARY - 1) != NULL))
          die ("ReadFile gave the canary, or more than a message", rq->filepath);
        ps_buf_free (&out);
        moby__buildkit__v1__frontend__read_file_request__free_unpacked (rq, NULL);
        return;
      }
    case 1:
      {
        Moby__Buildkit__V1__Frontend__StatFileRequest *rq = moby__buildkit__v1__frontend__stat_file_request__unpack (NULL, size, data);
        if (rq == NULL)
          return;
        Fsutil__Types__Stat st;
        fsutil__types__stat__init (&st);
        if (gateway_root_stat (root_fd, rq->path, &st, &err) < 0)
          ps_error_free (err);
        else
          {
            if (st.size == CANARY_SIZE)
              die ("StatFile reached the canary", rq->path);
            gateway_stat_free (&st);
          }
        moby__buildkit__v1__frontend__stat_file_request__free_unpacked (rq, NULL);
        return;
      }
    default:
      {
        Moby__Buildkit__V1__Frontend__ReadDirRequest *rq = moby__buildkit__v1__frontend__read_dir_request__unpack (NULL, size, data);
        if (rq == NULL)
          return;
        Fsutil__Types__Stat **entries = NULL;
        size_t n = 0;
        if (gateway_root_read_dir (root_fd, rq->dirpath, rq->includepattern, &entries, &n, &err) < 0)
          ps_error_free (err);
        for (size_t i = 0; i < n; i++)
          {
            no_canary (entries[i], rq->dirpath);
            gateway_stat_free (entries[i]);
            free (entries[i]);
          }
        free (entries);
        moby__buildkit__v1__frontend__read_dir_request__free_unpacked (rq, NULL);
        return;
      }
    }
}

/* ---- the others: decoded only ------------------------------------------------------- */

static void
round_trip (uint8_t which, const uint8_t *data, size_t size)
{
  static const ProtobufCMessageDescriptor *const d[] = {
    &moby__buildkit__v1__frontend__ping_request__descriptor,
    &moby__buildkit__v1__frontend__evaluate_request__descriptor,
    &moby__buildkit__v1__frontend__resolve_image_config_request__descriptor,
    &moby__buildkit__v1__frontend__resolve_source_meta_request__descriptor,
    &moby__buildkit__v1__frontend__inputs_request__descriptor,
  };
  const ProtobufCMessageDescriptor *desc = d[which % ARRAY_SIZE (d)];
  ProtobufCMessage *m = protobuf_c_message_unpack (desc, NULL, size, data);
  if (m == NULL)
    return;
  size_t n = protobuf_c_message_get_packed_size (m);
  uint8_t *once = xmalloc (n + 1);
  protobuf_c_message_pack (m, once);
  ProtobufCMessage *again = protobuf_c_message_unpack (desc, NULL, n, once);
  if (again == NULL)
    {
      /* see unknown_field_zero */
      free (once);
      protobuf_c_message_free_unpacked (m, NULL);
      return;
    }
  size_t n2 = protobuf_c_message_get_packed_size (again);
  uint8_t *twice = xmalloc (n2 + 1);
  protobuf_c_message_pack (again, twice);
  if (n2 != n || memcmp (once, twice, n) != 0)
    die ("a request does not pack to the same bytes twice", desc->name);
  free (once);
  free (twice);
  protobuf_c_message_free_unpacked (again, NULL);
  protobuf_c_message_free_unpacked (m, NULL);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (root_fd < 0)
    {
      ps_log_set_level (PS_LOG_ERROR);
      fixture ();
      atexit (cleanup);
    }
  if (size == 0)
    return 0;
  uint8_t sel = data[0];
  data++, size--;
  switch (sel % 5)
    {
    case 0:
      solve (data, size);
      break;
    case 1:
      return_ (data, size);
      break;
    case 2:
      warn (data, size);
      break;
    case 3:
      files (sel / 5, data, size);
      break;
    default:
      round_trip (sel / 5, data, size);
      break;
    }
  return 0;
}
