/* solve_request.c — SolveRequest JSON to struct solve_request.  Field names
 * are BuildKit's control.proto names in lowerCamelCase, as the DESIGN's
 * /solve shape uses them. */
#include "schema/solve_request.h"

#include <stdlib.h>
#include <string.h>

#include "common/cjson.h"

const char *
solve_attrs_get (const struct solve_attrs *a, const char *key)
{
  for (size_t i = 0; i < a->n; i++)
    if (strcmp (a->kv[2 * i], key) == 0)
      return a->kv[2 * i + 1];
  return NULL;
}

static void
attrs_free (struct solve_attrs *a)
{
  ps_strv_free_raw (a->kv);
  a->kv = NULL;
  a->n = 0;
}

/* {"k":"v",...}; every value a string. */
static int
parse_attrs (const cJSON *o, const char *field, struct solve_attrs *out, ps_error **err)
{
  if (o == NULL || cJSON_IsNull (o))
    return 0;
  if (!cJSON_IsObject (o))
    return ps_error_set (err, 400, "%s: expected an object of string values", field);
  size_t n = (size_t) cJSON_GetArraySize (o);
  out->kv = xcalloc (2 * n + 1, sizeof (char *));
  const cJSON *it;
  size_t i = 0;
  cJSON_ArrayForEach (it, o)
    {
      if (!cJSON_IsString (it))
        return ps_error_set (err, 400, "%s.%s: expected a string value", field, it->string);
      out->kv[2 * i] = xstrdup (it->string);
      out->kv[2 * i + 1] = xstrdup (it->valuestring);
      i++;
      out->n = i;
    }
  return 0;
}

static bool
in_list (const char *s, const char *const *list)
{
  for (; *list; list++)
    if (strcmp (s, *list) == 0)
      return true;
  return false;
}

static char *
join (const char *const *list)
{
  ps_buf b = { 0 };
  for (const char *const *p = list; *p; p++)
    {
      if (p != list)
        ps_buf_puts (&b, ", ");
      ps_buf_puts (&b, *p);
    }
  return ps_buf_steal (&b);
}

/* Every attr must be one of `known` (or start with one of `prefixes`). */
static int
check_attr_names (const struct solve_attrs *a, const char *field, const char *const *known, ps_error **err)
{
  for (size_t i = 0; i < a->n; i++)
    if (!in_list (a->kv[2 * i], known))
      {
        cleanup_free char *accepted = join (known);
        return ps_error_set (err, 400, "%s: unknown attr \"%s\" (accepted: %s)", field, a->kv[2 * i],
                               *accepted ? accepted : "none");
      }
  return 0;
}

static const char *const exporter_types[] = { "image", "oci", "docker", "tar", "local", "cacheonly", "store", "s3",
                                              NULL };
/* containerimage.config: an image config for a definition's result
   (solver/image_config.h). */
static const char *const image_attrs[] = { "name", "push", "push-by-digest", "registry.insecure", "containerimage.config",
                                            NULL };
static const char *const archive_attrs[] = { "dest", "name", "containerimage.config", NULL };
static const char *const tar_attrs[] = { "dest", "containerimage.config", NULL };
static const char *const fs_attrs[] = { "dest", NULL };
static const char *const no_attrs[] = { NULL };
/* a store (api-docs/store-protocol.md) */
static const char *const store_attrs[] = { "endpoint", "name", "token", "tls.ca", "tls.cert", "tls.key", NULL };
/* an S3 bucket, with BuildKit's attribute names (api-docs/s3.md) */
static const char *const s3_attrs[] = { "bucket",        "region",           "endpoint_url",       "prefix",
                                        "use_path_style", "access_key_id",   "secret_access_key", "session_token",
                                        "upload_parallelism", "touch_refresh", "name",            NULL };
static const char *const cache_types[] = { "registry", "local", "store", "s3", NULL };
static const char *const registry_cache_attrs[] = { "ref", "mode", "registry.insecure", NULL };
static const char *const local_import_attrs[] = { "src", NULL };
static const char *const local_export_attrs[] = { "dest", "mode", NULL };
static const char *const store_cache_attrs[] = { "endpoint", "name", "token", "tls.ca", "tls.cert", "tls.key", "mode",
                                                 NULL };
static const char *const s3_cache_attrs[] = { "bucket",           "region",        "endpoint_url",
                                              "prefix",           "blobs_prefix",  "manifests_prefix",
                                              "use_path_style",   "access_key_id", "secret_access_key",
                                              "session_token",    "upload_parallelism", "touch_refresh",
                                              "name",             "mode",          NULL };
static const char *const entitlements[] = { "network.host", "security.insecure", NULL };
static const char *const frontends[] = { "dockerfile.v0", "gateway.v0", NULL };
static const char *const top_keys[] = { "ref",     "frontend",     "frontendAttrs", "definition", "exporters",
                                        "cache",   "session",      "entitlements",  "detach",     NULL };

static const char *const *
exporter_attr_names (const char *type)
{
  if (strcmp (type, "image") == 0)
    return image_attrs;
  if (strcmp (type, "oci") == 0 || strcmp (type, "docker") == 0)
    return archive_attrs;
  if (strcmp (type, "tar") == 0)
    return tar_attrs;
  if (strcmp (type, "local") == 0)
    return fs_attrs;
  if (strcmp (type, "store") == 0)
    return store_attrs;
  if (strcmp (type, "s3") == 0)
    return s3_attrs;
  return no_attrs;
}

static int
parse_typed_list (const cJSON *arr, const char *field, bool exporters, bool imports, void **out, size_t *n,
                  ps_error **err)
{
  if (arr == NULL || cJSON_IsNull (arr))
    return 0;
  if (!cJSON_IsArray (arr))
    return ps_error_set (err, 400, "%s: expected an array of {\"type\",\"attrs\"} objects", field);
  size_t count = (size_t) cJSON_GetArraySize (arr);
  size_t esize = exporters ? sizeof (struct solve_exporter) : sizeof (struct solve_cache_entry);
  char *items = xcalloc (count + 1, esize);
  *out = items;
  size_t i = 0;
  const cJSON *it;
  cJSON_ArrayForEach (it, arr)
    {
      cleanup_free char *where = xasprintf ("%s[%zu]", field, i);
      if (!cJSON_IsObject (it))
        return ps_error_set (err, 400, "%s: expected an object with \"type\" and \"attrs\"", where);
      const cJSON *k;
      cJSON_ArrayForEach (k, it)
        if (strcmp (k->string, "type") != 0 && strcmp (k->string, "attrs") != 0)
          return ps_error_set (err, 400, "%s: unknown key \"%s\" (accepted: type, attrs)", where, k->string);
      const cJSON *type = cJSON_GetObjectItemCaseSensitive (it, "type");
      const char *const *types = exporters ? exporter_types : cache_types;
      if (!cJSON_IsString (type) || !in_list (type->valuestring, types))
        {
          cleanup_free char *accepted = join (types);
          return ps_error_set (err, 400, "%s.type: %s%s%s is not supported (supported: %s)", where,
                                 cJSON_IsString (type) ? "\"" : "", cJSON_IsString (type) ? type->valuestring : "a missing or non-string type",
                                 cJSON_IsString (type) ? "\"" : "", accepted);
        }
      struct solve_attrs *attrs;
      char **type_out;
      if (exporters)
        {
          struct solve_exporter *e = (struct solve_exporter *) (items + i * esize);
          attrs = &e->attrs;
          type_out = &e->type;
        }
      else
        {
          struct solve_cache_entry *c = (struct solve_cache_entry *) (items + i * esize);
          attrs = &c->attrs;
          type_out = &c->type;
        }
      *type_out = xstrdup (type->valuestring);
      *n = i + 1;
      cleanup_free char *attrs_field = xasprintf ("%s.attrs", where);
      if (parse_attrs (cJSON_GetObjectItemCaseSensitive (it, "attrs"), attrs_field, attrs, err) < 0)
        return -1;
      const char *const *known;
      if (exporters)
        known = exporter_attr_names (type->valuestring);
      else if (strcmp (type->valuestring, "registry") == 0)
        known = registry_cache_attrs;
      else if (strcmp (type->valuestring, "store") == 0)
        known = store_cache_attrs;
      else if (strcmp (type->valuestring, "s3") == 0)
        known = s3_cache_attrs;
      else
        known = imports ? local_import_attrs : local_export_attrs;
      if (check_attr_names (attrs, attrs_field, known, err) < 0)
        return -1;
      i++;
    }
  return 0;
}

/* The fields of a SolveRequest object, checked in the order the errors
   are documented; on failure what was parsed stays in *r for the caller to
   free. */
static int
parse_request (const cJSON *root, bool definition_part, struct solve_request *r, ps_error **err)
{
  if (!cJSON_IsObject (root))
    return ps_error_set (err, 400, "request body must be a JSON object");
  const cJSON *it;
  cJSON_ArrayForEach (it, root)
    if (!in_list (it->string, top_keys))
      {
        cleanup_free char *accepted = join (top_keys);
        return ps_error_set (err, 400, "unknown field \"%s\" (accepted: %s)", it->string, accepted);
      }

  const cJSON *ref = cJSON_GetObjectItemCaseSensitive (root, "ref");
  if (ref && !cJSON_IsNull (ref))
    {
      if (!cJSON_IsString (ref))
        return ps_error_set (err, 400, "ref: expected a string");
      size_t n = strlen (ref->valuestring);
      bool ok = n > 0 && n <= 128;
      for (size_t i = 0; ok && i < n; i++)
        {
          char c = ref->valuestring[i];
          ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'
               || c == '.';
        }
      if (!ok || ref->valuestring[0] == '.')
        return ps_error_set (err, 400, "ref: \"%s\" must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'",
                             ref->valuestring);
      /* /solve/prune is the cache prune for every method (server/router.c):
         a job by that name could not be inspected. */
      if (strcmp (ref->valuestring, "prune") == 0)
        return ps_error_set (err, 400, "ref: \"prune\" is reserved: /solve/prune is the cache prune, not a job");
      r->ref = xstrdup (ref->valuestring);
    }

  const cJSON *def = cJSON_GetObjectItemCaseSensitive (root, "definition");
  if (def && !cJSON_IsNull (def))
    {
      if (!cJSON_IsString (def) && !cJSON_IsObject (def))
        return ps_error_set (err, 400, "definition: expected base64 of a pb.Definition or {\"def\":[...],\"metadata\":{...}}");
      r->has_definition = true;
      r->definition_json = cJSON_PrintUnformatted (def);
    }

  const cJSON *fe = cJSON_GetObjectItemCaseSensitive (root, "frontend");
  if (fe && !cJSON_IsNull (fe) && !(cJSON_IsString (fe) && fe->valuestring[0] == '\0'))
    {
      if (!cJSON_IsString (fe) || !in_list (fe->valuestring, frontends))
        return ps_error_set (err, 400, "frontend: %s%s%s is not supported (supported: dockerfile.v0, gateway.v0, or a \"definition\")",
                             cJSON_IsString (fe) ? "\"" : "", cJSON_IsString (fe) ? fe->valuestring : "a non-string value",
                             cJSON_IsString (fe) ? "\"" : "");
      r->frontend = xstrdup (fe->valuestring);
    }
  if (definition_part)
    {
      if (r->has_definition)
        return ps_error_set (err, 400, "definition: given both in the JSON and as a multipart part");
      r->has_definition = true;
    }
  if (r->frontend && r->has_definition)
    return ps_error_set (err, 400, "frontend and definition are mutually exclusive");
  if (r->frontend == NULL && !r->has_definition)
    return ps_error_set (err, 400, "frontend: missing (supported: dockerfile.v0, gateway.v0, or give a \"definition\")");
  if (parse_attrs (cJSON_GetObjectItemCaseSensitive (root, "frontendAttrs"), "frontendAttrs", &r->frontend_attrs, err) < 0)
    return -1;
  if (r->frontend && strcmp (r->frontend, "gateway.v0") == 0)
    {
      const char *src = solve_attrs_get (&r->frontend_attrs, "source");
      if (src == NULL || *src == '\0')
        return ps_error_set (err, 400, "frontendAttrs.source: gateway.v0 needs the frontend image (e.g. "
                                       "docker.io/docker/dockerfile:1)");
    }
  if (parse_typed_list (cJSON_GetObjectItemCaseSensitive (root, "exporters"), "exporters", true, false,
                        (void **) &r->exporters, &r->n_exporters, err)
      < 0)
    return -1;

  const cJSON *cache = cJSON_GetObjectItemCaseSensitive (root, "cache");
  if (cache && !cJSON_IsNull (cache))
    {
      if (!cJSON_IsObject (cache))
        return ps_error_set (err, 400, "cache: expected {\"imports\":[...],\"exports\":[...]}");
      cJSON_ArrayForEach (it, cache)
        if (strcmp (it->string, "imports") != 0 && strcmp (it->string, "exports") != 0)
          return ps_error_set (err, 400, "cache: unknown key \"%s\" (accepted: imports, exports)", it->string);
      if (parse_typed_list (cJSON_GetObjectItemCaseSensitive (cache, "imports"), "cache.imports", false, true,
                            (void **) &r->cache_imports, &r->n_cache_imports, err)
              < 0
          || parse_typed_list (cJSON_GetObjectItemCaseSensitive (cache, "exports"), "cache.exports", false, false,
                               (void **) &r->cache_exports, &r->n_cache_exports, err)
                 < 0)
        return -1;
    }

  const cJSON *sess = cJSON_GetObjectItemCaseSensitive (root, "session");
  if (sess && !cJSON_IsNull (sess))
    {
      if (!cJSON_IsString (sess))
        return ps_error_set (err, 400, "session: expected a string (the uuid given to /session)");
      if (*sess->valuestring)
        r->session = xstrdup (sess->valuestring);
    }

  const cJSON *ents = cJSON_GetObjectItemCaseSensitive (root, "entitlements");
  if (ents && !cJSON_IsNull (ents))
    {
      if (!cJSON_IsArray (ents))
        return ps_error_set (err, 400, "entitlements: expected an array of strings");
      cJSON_ArrayForEach (it, ents)
        {
          if (!cJSON_IsString (it) || !in_list (it->valuestring, entitlements))
            return ps_error_set (err, 400, "entitlements: %s is not supported (supported: network.host, security.insecure)",
                                 cJSON_IsString (it) ? it->valuestring : "a non-string value");
          ps_strv_push (&r->entitlements, it->valuestring);
        }
    }

  const cJSON *detach = cJSON_GetObjectItemCaseSensitive (root, "detach");
  if (detach && !cJSON_IsNull (detach))
    {
      if (!cJSON_IsBool (detach))
        return ps_error_set (err, 400, "detach: expected true or false");
      r->detach = cJSON_IsTrue (detach);
    }
  return 0;
}

int
schema_solve_request_parse (const char *json, size_t len, bool definition_part, struct solve_request *r,
                            ps_error **err)
{
  memset (r, 0, sizeof *r);
  const char *end = NULL;
  cleanup_cjson cJSON *root = cJSON_ParseWithLengthOpts (json, len, &end, false);
  if (root == NULL)
    {
      /* Where the parser stopped, as editors count: line and column of
         the first byte it could not take, and a few bytes of it. */
      size_t at = end && end >= json && end <= json + len ? (size_t) (end - json) : 0;
      unsigned line = 1, col = 1;
      for (size_t i = 0; i < at; i++)
        {
          if (json[i] == '\n')
            {
              line++;
              col = 1;
            }
          else
            col++;
        }
      if (at >= len)
        return ps_error_set (err, 400, "request body is not valid JSON: it ends too early (line %u, column %u)",
                             line, col);
      size_t n = 0;
      while (n < 16 && at + n < len && json[at + n] != '\n' && json[at + n] != '\r')
        n++;
      return ps_error_set (err, 400, "request body is not valid JSON: line %u, column %u, at \"%.*s\"", line, col,
                           (int) n, json + at);
    }
  if (parse_request (root, definition_part, r, err) < 0)
    {
      schema_solve_request_free (r); /* what was parsed before the error */
      return -1;
    }
  return 0;
}

static void
typed_free (struct solve_attrs *a, char **type)
{
  attrs_free (a);
  free (*type);
}

void
schema_solve_request_free (struct solve_request *r)
{
  free (r->ref);
  free (r->frontend);
  attrs_free (&r->frontend_attrs);
  if (r->definition_json)
    cJSON_free (r->definition_json);
  for (size_t i = 0; i < r->n_exporters; i++)
    typed_free (&r->exporters[i].attrs, &r->exporters[i].type);
  free (r->exporters);
  for (size_t i = 0; i < r->n_cache_imports; i++)
    typed_free (&r->cache_imports[i].attrs, &r->cache_imports[i].type);
  free (r->cache_imports);
  for (size_t i = 0; i < r->n_cache_exports; i++)
    typed_free (&r->cache_exports[i].attrs, &r->cache_exports[i].type);
  free (r->cache_exports);
  free (r->session);
  free (r->source_session);
  ps_strv_free (&r->entitlements);
  memset (r, 0, sizeof *r);
}
