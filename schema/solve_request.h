/* solve_request.h — the /solve request body (JSON) and its validation at
 * the edge: wrong types, unknown keys, frontends, exporters, cache types
 * and attrs that would otherwise be silently ignored are 400s naming the
 * field and what is accepted. */
#ifndef SCHEMA_SOLVE_REQUEST_H
#define SCHEMA_SOLVE_REQUEST_H

#include "common/ps.h"

struct solve_attrs
{
  char **kv; /* key, value, key, value, ..., NULL */
  size_t n;  /* number of pairs */
};

const char *solve_attrs_get (const struct solve_attrs *a, const char *key);

struct solve_exporter
{
  char *type; /* image, oci, docker, tar, local, cacheonly */
  struct solve_attrs attrs;
  bool to_client; /* Control.Solve: send it over the session's FileSend, not keep it */
};

struct solve_cache_entry
{
  char *type; /* registry, local */
  struct solve_attrs attrs;
};

struct solve_request
{
  char *ref;
  char *frontend; /* "dockerfile.v0", or NULL with a definition */
  struct solve_attrs frontend_attrs;
  bool has_definition;
  char *definition_json; /* the raw "definition" value, for the LLB solver */
  struct solve_exporter *exporters;
  size_t n_exporters;
  struct solve_cache_entry *cache_imports;
  size_t n_cache_imports;
  struct solve_cache_entry *cache_exports;
  size_t n_cache_exports;
  char *session;
  char *source_session; /* Control.Solve: local sources come from this session, not `session` */
  ps_strv entitlements;
  bool detach;
};

/* Parse and validate `len` bytes of JSON.  `definition_part`: the request
   carried its definition as a separate multipart part (raw protobuf), so
   neither "frontend" nor "definition" is needed in the JSON.  On failure
   nothing stays allocated in *out (it is zeroed). */
int schema_solve_request_parse (const char *json, size_t len, bool definition_part, struct solve_request *out,
                                ps_error **err);
void schema_solve_request_free (struct solve_request *r);

#endif
