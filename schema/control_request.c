/* control_request.c — Control.Solve's SolveRequest to struct solve_request
 * (see control_request.h for what is mapped). */
#include "schema/control_request.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "common/cjson.h"

bool
schema_control_solve_is_gateway (const Moby__Buildkit__V1__SolveRequest *in)
{
  bool has_def = in->definition != NULL && in->definition->n_def > 0;
  return (in->frontend == NULL || *in->frontend == '\0') && !has_def;
}

/* Every protobuf-c map entry has the same shape: key, value. */
#define ATTRS_TO_JSON(obj, entries, n, skip)                                                                      \
  do                                                                                                             \
    {                                                                                                            \
      for (size_t i_ = 0; i_ < (n); i_++)                                                                        \
        if (!(skip) ((entries)[i_]->key))                                                                        \
          cJSON_AddStringToObject ((obj), (entries)[i_]->key, (entries)[i_]->value);                             \
    }                                                                                                            \
  while (0)

static bool
skip_none (const char *k)
{
  (void) k;
  return false;
}

/* The client's own bookkeeping, sent along with the frontend attrs.
   vcs:source, vcs:revision and vcs:localdir:* describe the git checkout a
   context comes from (buildx sends them whenever it builds inside one); they
   feed provenance attestations, which podsolve does not make (attest:*). */
static bool
skip_frontend_attr (const char *k)
{
  return strcmp (k, "frontend.caps") == 0 || ps_str_has_prefix (k, "attest:") || strcmp (k, "cache-imports") == 0
         || ps_str_has_prefix (k, "local-sessionid:") || ps_str_has_prefix (k, "sharedkey:")
         || ps_str_has_prefix (k, "vcs:");
}

/* Image-store details BuildKit's image/moby exporters take and podsolve's
   storage has no choice about. */
static bool
skip_image_attr (const char *k)
{
  return strcmp (k, "prefer-image-digest") == 0 || strcmp (k, "unpack") == 0 || strcmp (k, "store") == 0;
}

bool
schema_control_frontend_attr_dropped (const char *key)
{
  return skip_frontend_attr (key);
}

static cJSON *
exporter_json (const char *type, cJSON *attrs)
{
  cJSON *e = cJSON_CreateObject ();
  cJSON_AddStringToObject (e, "type", strcmp (type, "moby") == 0 ? "image" : type);
  cJSON_AddItemToObject (e, "attrs", attrs);
  return e;
}

static cJSON *
cache_json (const char *type, const char *ref)
{
  cJSON *e = cJSON_CreateObject ();
  cJSON_AddStringToObject (e, "type", type);
  cJSON *attrs = cJSON_AddObjectToObject (e, "attrs");
  cJSON_AddStringToObject (attrs, "ref", ref);
  return e;
}

static cJSON *
cache_entries_json (Moby__Buildkit__V1__CacheOptionsEntry **entries, size_t n)
{
  cJSON *arr = cJSON_CreateArray ();
  for (size_t i = 0; i < n; i++)
    {
      cJSON *e = cJSON_CreateObject ();
      cJSON_AddStringToObject (e, "type", entries[i]->type);
      cJSON *attrs = cJSON_AddObjectToObject (e, "attrs");
      ATTRS_TO_JSON (attrs, entries[i]->attrs, entries[i]->n_attrs, skip_none);
      cJSON_AddItemToArray (arr, e);
    }
  return arr;
}

static int
check_utf8 (const char *what, const char *s, ps_error **err)
{
  /* protobuf-c does not check proto3 strings; cJSON would pass bytes on. */
  const unsigned char *p = (const unsigned char *) s;
  while (*p)
    {
      size_t n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
      if (n == 0)
        return ps_error_set (err, 400, "%s: not valid UTF-8", what);
      for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
          return ps_error_set (err, 400, "%s: not valid UTF-8", what);
      p += n;
    }
  return 0;
}

static cJSON *
request_json (const Moby__Buildkit__V1__SolveRequest *in, bool gateway)
{
  cJSON *root = cJSON_CreateObject ();
  if (in->ref && *in->ref)
    cJSON_AddStringToObject (root, "ref", in->ref);
  if (in->frontend && *in->frontend)
    cJSON_AddStringToObject (root, "frontend", in->frontend);
  /* Gateway mode: the client runs the frontend, its attrs are its own; the
     rest is checked as a dockerfile.v0 request's (the frontend is cleared
     afterwards). */
  if (gateway)
    cJSON_AddStringToObject (root, "frontend", "dockerfile.v0");
  cJSON *fa = cJSON_AddObjectToObject (root, "frontendAttrs");
  if (!gateway)
    ATTRS_TO_JSON (fa, in->frontendattrs, in->n_frontendattrs, skip_frontend_attr);

  cJSON *exps = cJSON_AddArrayToObject (root, "exporters");
  if (in->n_exporters > 0)
    for (size_t i = 0; i < in->n_exporters; i++)
      {
        const Moby__Buildkit__V1__Exporter *e = in->exporters[i];
        bool image = strcmp (e->type, "moby") == 0 || strcmp (e->type, "image") == 0;
        cJSON *attrs = cJSON_CreateObject ();
        ATTRS_TO_JSON (attrs, e->attrs, e->n_attrs, image ? skip_image_attr : skip_none);
        cJSON_AddItemToArray (exps, exporter_json (e->type, attrs));
      }
  else if (in->exporterdeprecated && *in->exporterdeprecated)
    {
      bool image = strcmp (in->exporterdeprecated, "moby") == 0 || strcmp (in->exporterdeprecated, "image") == 0;
      cJSON *attrs = cJSON_CreateObject ();
      ATTRS_TO_JSON (attrs, in->exporterattrsdeprecated, in->n_exporterattrsdeprecated,
                     image ? skip_image_attr : skip_none);
      cJSON_AddItemToArray (exps, exporter_json (in->exporterdeprecated, attrs));
    }

  if (in->cache)
    {
      const Moby__Buildkit__V1__CacheOptions *c = in->cache;
      cJSON *cache = cJSON_AddObjectToObject (root, "cache");
      cJSON *imports = cache_entries_json (c->imports, c->n_imports);
      for (size_t i = 0; i < c->n_importrefsdeprecated; i++)
        cJSON_AddItemToArray (imports, cache_json ("registry", c->importrefsdeprecated[i]));
      cJSON_AddItemToObject (cache, "imports", imports);
      cJSON *exports = cache_entries_json (c->exports, c->n_exports);
      if (c->exportrefdeprecated && *c->exportrefdeprecated)
        {
          cJSON *e = cache_json ("registry", c->exportrefdeprecated);
          cJSON *attrs = cJSON_GetObjectItemCaseSensitive (e, "attrs");
          ATTRS_TO_JSON (attrs, c->exportattrsdeprecated, c->n_exportattrsdeprecated,
                         skip_none);
          cJSON_AddItemToArray (exports, e);
        }
      cJSON_AddItemToObject (cache, "exports", exports);
    }
  if (in->session && *in->session)
    cJSON_AddStringToObject (root, "session", in->session);
  cJSON *ents = cJSON_AddArrayToObject (root, "entitlements");
  for (size_t i = 0; i < in->n_entitlements; i++)
    cJSON_AddItemToArray (ents, cJSON_CreateString (in->entitlements[i]));
  return root;
}

static int
check_strings (const Moby__Buildkit__V1__SolveRequest *in, ps_error **err)
{
  if (check_utf8 ("Ref", in->ref, err) < 0 || check_utf8 ("Frontend", in->frontend, err) < 0
      || check_utf8 ("Session", in->session, err) < 0)
    return -1;
  for (size_t i = 0; i < in->n_frontendattrs; i++)
    if (check_utf8 ("FrontendAttrs", in->frontendattrs[i]->key, err) < 0
        || check_utf8 ("FrontendAttrs", in->frontendattrs[i]->value, err) < 0)
      return -1;
  for (size_t i = 0; i < in->n_exporters; i++)
    {
      const Moby__Buildkit__V1__Exporter *e = in->exporters[i];
      if (check_utf8 ("Exporters.Type", e->type, err) < 0)
        return -1;
      for (size_t j = 0; j < e->n_attrs; j++)
        if (check_utf8 ("Exporters.Attrs", e->attrs[j]->key, err) < 0
            || check_utf8 ("Exporters.Attrs", e->attrs[j]->value, err) < 0)
          return -1;
    }
  for (size_t i = 0; i < in->n_exporterattrsdeprecated; i++)
    if (check_utf8 ("ExporterAttrs", in->exporterattrsdeprecated[i]->key, err) < 0
        || check_utf8 ("ExporterAttrs", in->exporterattrsdeprecated[i]->value, err) < 0)
      return -1;
  if (check_utf8 ("Exporter", in->exporterdeprecated, err) < 0)
    return -1;
  for (size_t i = 0; i < in->n_entitlements; i++)
    if (check_utf8 ("Entitlements", in->entitlements[i], err) < 0)
      return -1;
  if (in->cache)
    for (int pass = 0; pass < 2; pass++)
      {
        Moby__Buildkit__V1__CacheOptionsEntry **l = pass ? in->cache->exports : in->cache->imports;
        size_t n = pass ? in->cache->n_exports : in->cache->n_imports;
        for (size_t i = 0; i < n; i++)
          {
            if (check_utf8 ("Cache.Type", l[i]->type, err) < 0)
              return -1;
            for (size_t j = 0; j < l[i]->n_attrs; j++)
              if (check_utf8 ("Cache.Attrs", l[i]->attrs[j]->key, err) < 0
                  || check_utf8 ("Cache.Attrs", l[i]->attrs[j]->value, err) < 0)
                return -1;
          }
      }
  return 0;
}

static const char *
frontend_attr (const Moby__Buildkit__V1__SolveRequest *in, const char *key)
{
  for (size_t i = 0; i < in->n_frontendattrs; i++)
    if (strcmp (in->frontendattrs[i]->key, key) == 0)
      return in->frontendattrs[i]->value;
  return NULL;
}

int
schema_control_solve_request (const Moby__Buildkit__V1__SolveRequest *in, struct solve_request *out,
                              uint8_t **definition, size_t *definition_len, bool *internal, ps_error **err)
{
  memset (out, 0, sizeof *out);
  *definition = NULL;
  *definition_len = 0;
  *internal = in->internal;
  if (check_strings (in, err) < 0)
    return -1;
  bool gateway = schema_control_solve_is_gateway (in);
  if (in->n_frontendinputs > 0 && !gateway)
    return ps_error_set (err, 400, "FrontendInputs: frontend inputs are only served to the client-side gateway "
                                   "(LLBBridge.Inputs; use named contexts: FrontendAttrs context:NAME)");
  if (in->sourcepolicy && in->sourcepolicy->n_rules > 0)
    return ps_error_set (err, 400, "SourcePolicy: source policies are not supported");
  if (in->sourcepolicysession && *in->sourcepolicysession)
    return ps_error_set (err, 400, "SourcePolicySession: source policies are not supported");
  if (in->enablesessionexporter)
    return ps_error_set (err, 501, "EnableSessionExporter: exporters chosen by the client's session are not "
                                   "supported (give Exporters)");
  if (gateway && (in->ref == NULL || *in->ref == '\0'))
    return ps_error_set (err, 400, "Ref: required without a frontend or a definition (the client-side gateway "
                                   "names its build by it)");
  bool has_def = in->definition != NULL && in->definition->n_def > 0;

  cleanup_cjson cJSON *root = request_json (in, gateway);
  char *json = cJSON_PrintUnformatted (root);
  int r = schema_solve_request_parse (json, strlen (json), has_def, out, err);
  cJSON_free (json);
  if (r < 0)
    return -1;
  if (gateway)
    {
      free (out->frontend);
      out->frontend = NULL;
    }

  /* Files and archives without a server-side dest go back over the session. */
  for (size_t i = 0; i < out->n_exporters; i++)
    {
      struct solve_exporter *e = &out->exporters[i];
      const char *dest = solve_attrs_get (&e->attrs, "dest");
      if (strcmp (e->type, "image") == 0 || strcmp (e->type, "cacheonly") == 0 || (dest && *dest))
        continue;
      if (out->session == NULL)
        {
          ps_error_set (err, 400, "Exporters[%zu]: type %s sends the result to the client over its session, but "
                                  "Session is empty", i, e->type);
          schema_solve_request_free (out);
          return -1;
        }
      e->to_client = true;
    }

  const char *src = frontend_attr (in, "local-sessionid:context");
  if (src == NULL)
    src = frontend_attr (in, "local-sessionid:dockerfile");
  if (src && *src && (out->session == NULL || strcmp (src, out->session) != 0))
    out->source_session = xstrdup (src);

  if (has_def)
    {
      *definition_len = pb__definition__get_packed_size (in->definition);
      *definition = xmalloc (*definition_len + 1);
      pb__definition__pack (in->definition, *definition);
    }
  return 0;
}

uint8_t *
schema_control_solve_response (char *const *response, size_t *len)
{
  size_t n = 0;
  for (char *const *p = response; p && p[0] && p[1]; p += 2)
    n++;
  Moby__Buildkit__V1__SolveResponse resp = MOBY__BUILDKIT__V1__SOLVE_RESPONSE__INIT;
  Moby__Buildkit__V1__SolveResponse__ExporterResponseEntry *entries = xcalloc (n + 1, sizeof *entries);
  Moby__Buildkit__V1__SolveResponse__ExporterResponseEntry **ptrs = xcalloc (n + 1, sizeof *ptrs);
  for (size_t i = 0; i < n; i++)
    {
      moby__buildkit__v1__solve_response__exporter_response_entry__init (&entries[i]);
      entries[i].key = response[2 * i];
      entries[i].value = response[2 * i + 1];
      ptrs[i] = &entries[i];
    }
  resp.n_exporterresponse = n;
  resp.exporterresponse = ptrs;
  *len = moby__buildkit__v1__solve_response__get_packed_size (&resp);
  uint8_t *buf = xmalloc (*len + 1);
  moby__buildkit__v1__solve_response__pack (&resp, buf);
  free (ptrs);
  free (entries);
  return buf;
}
