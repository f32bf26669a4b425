/* bridge_request.c — LLBBridge requests as the gateway takes them (see
 * bridge_request.h). */
#include "schema/bridge_request.h"

#include <stdlib.h>
#include <string.h>

/* Every protobuf-c map<string, string> entry has the same shape. */
#define ATTRS_COPY(dst, entries, count)                                                                           \
  do                                                                                                             \
    {                                                                                                            \
      (dst)->n = (count);                                                                                        \
      (dst)->kv = xcalloc (2 * (count) + 1, sizeof (char *));                                                    \
      for (size_t i_ = 0; i_ < (count); i_++)                                                                    \
        {                                                                                                        \
          (dst)->kv[2 * i_] = xstrdup ((entries)[i_]->key);                                                      \
          (dst)->kv[2 * i_ + 1] = xstrdup ((entries)[i_]->value);                                                \
        }                                                                                                        \
    }                                                                                                            \
  while (0)

static void
attrs_free (struct solve_attrs *a)
{
  ps_strv_free_raw (a->kv);
  a->kv = NULL;
  a->n = 0;
}

int
schema_bridge_solve (const Moby__Buildkit__V1__Frontend__SolveRequest *in, struct bridge_solve *out,
                     ps_error **err)
{
  memset (out, 0, sizeof *out);
  if (in->n_frontendinputs > 0 && !(in->frontend && strcmp (in->frontend, "gateway.v0") == 0))
    return ps_error_set (err, 501, "SolveRequest.FrontendInputs are supported with the gateway.v0 frontend only");
  if (in->final)
    return ps_error_set (err, 501, "SolveRequest.Final (the deprecated inline return) is not supported: "
                                   "call Return");
  if (in->n_sourcepolicies > 0)
    return ps_error_set (err, 501, "SolveRequest.SourcePolicies are not supported by podsolve");
  out->frontend = in->frontend;
  /* A nested frontend's inputs (its LLBBridge.Inputs), as definitions. */
  out->inputs = xcalloc (in->n_frontendinputs + 1, sizeof *out->inputs);
  out->n_inputs = in->n_frontendinputs;
  for (size_t i = 0; i < in->n_frontendinputs; i++)
    {
      const Pb__Definition *d = in->frontendinputs[i]->value;
      size_t len = d ? pb__definition__get_packed_size (d) : 0;
      out->inputs[i].name = in->frontendinputs[i]->key;
      out->inputs[i].definition = xmalloc (len + 1);
      out->inputs[i].len = d ? pb__definition__pack (d, out->inputs[i].definition) : 0;
    }
  ATTRS_COPY (&out->frontend_opt, in->frontendopt, in->n_frontendopt);
  out->cache_imports = xcalloc (in->n_cacheimports + 1, sizeof *out->cache_imports);
  out->n_cache_imports = in->n_cacheimports;
  for (size_t i = 0; i < in->n_cacheimports; i++)
    {
      const Moby__Buildkit__V1__Frontend__CacheOptionsEntry *c = in->cacheimports[i];
      out->cache_imports[i].type = xstrdup (c->type);
      ATTRS_COPY (&out->cache_imports[i].attrs, c->attrs, c->n_attrs);
    }
  if (in->definition && in->definition->n_def > 0)
    {
      /* The engine takes the raw bytes; protobuf-c keeps each op's bytes
         as they came, so packing again gives the client's digests. */
      size_t n = pb__definition__get_packed_size (in->definition);
      out->definition = xmalloc (n + 1);
      out->definition_len = pb__definition__pack (in->definition, out->definition);
    }
  return 0;
}

void
schema_bridge_solve_free (struct bridge_solve *s)
{
  attrs_free (&s->frontend_opt);
  for (size_t i = 0; s->cache_imports && i < s->n_cache_imports; i++)
    {
      free (s->cache_imports[i].type);
      attrs_free (&s->cache_imports[i].attrs);
    }
  free (s->cache_imports);
  for (size_t i = 0; s->inputs && i < s->n_inputs; i++)
    free (s->inputs[i].definition);
  free (s->inputs);
  free (s->definition);
  memset (s, 0, sizeof *s);
}

int
schema_bridge_result_ref (const Moby__Buildkit__V1__Frontend__Result *res, const char **id, ps_error **err)
{
  *id = NULL;
  if (res == NULL)
    return 0;
  switch (res->result_case)
    {
    case MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REF_DEPRECATED:
      *id = res->refdeprecated;
      return 0;
    case MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REF:
      *id = res->ref ? res->ref->id : NULL;
      return 0;
    case MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REFS:
      if (res->refs->n_refs > 1)
        return ps_error_set (err, 501, "a result of %zu refs (several platforms) is not supported by podsolve",
                             res->refs->n_refs);
      *id = res->refs->n_refs ? (res->refs->refs[0]->value ? res->refs->refs[0]->value->id : NULL) : NULL;
      return 0;
    case MOBY__BUILDKIT__V1__FRONTEND__RESULT__RESULT_REFS_DEPRECATED:
      if (res->refsdeprecated->n_refs > 1)
        return ps_error_set (err, 501, "a result of %zu refs (several platforms) is not supported by podsolve",
                             res->refsdeprecated->n_refs);
      *id = res->refsdeprecated->n_refs ? res->refsdeprecated->refs[0]->value : NULL;
      return 0;
    default:
      return 0;
    }
}

char *
schema_bridge_result_image_config (const Moby__Buildkit__V1__Frontend__Result *res)
{
  for (size_t i = 0; i < res->n_metadata; i++)
    {
      const char *k = res->metadata[i]->key;
      if (strcmp (k, "containerimage.config") == 0 || ps_str_has_prefix (k, "containerimage.config/"))
        return xstrndup ((const char *) res->metadata[i]->value.data, res->metadata[i]->value.len);
    }
  return NULL;
}

void
schema_bridge_warn_text (const Moby__Buildkit__V1__Frontend__WarnRequest *in, char **short_msg, char ***details)
{
  *short_msg = xstrndup ((const char *) in->short_.data, in->short_.len);
  *details = xcalloc (in->n_detail + 1, sizeof (char *));
  for (size_t i = 0; i < in->n_detail; i++)
    (*details)[i] = xstrndup ((const char *) in->detail[i].data, in->detail[i].len);
}
