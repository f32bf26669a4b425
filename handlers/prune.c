/* prune.c — POST /build/prune (Docker Engine API, what `docker builder
 * prune` sends) and POST /solve/prune (ours: the same options as query
 * parameters or as a JSON body).  Both remove build cache with
 * solver/cache_prune.c and answer Docker's report,
 * {"CachesDeleted":[ids],"SpaceReclaimed":bytes}, with one more field,
 * "Records", saying what each removed entry was. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "handlers/handlers.h"
#include "schema/apivalue.h"
#include "server/config.h"
#include "solver/cache_prune.h"

struct prune_state
{
  ps_buf body;
};

static void
prune_state_free (void *p)
{
  struct prune_state *s = p;
  ps_buf_free (&s->body);
  free (s);
}

static int
prune_begin (struct ps_request *req, ps_error **err)
{
  req->state = xcalloc (1, sizeof (struct prune_state));
  req->state_free = prune_state_free;
  return 0;
}

static int
prune_body (struct ps_request *req, const char *data, size_t len, ps_error **err)
{
  struct prune_state *s = req->state;
  if (s->body.len + len > PS_MAX_PRUNE_REQUEST)
    return ps_error_set (err, 413, "the prune request is larger than %d bytes", PS_MAX_PRUNE_REQUEST);
  ps_buf_append (&s->body, data, len);
  return 0;
}

/* A byte count: Docker sends keep-storage as a plain integer. */
static int
parse_bytes (const char *name, const char *v, uint64_t *out, ps_error **err)
{
  if (v == NULL || *v == '\0')
    return 0;
  char *end = NULL;
  errno = 0;
  long long n = strtoll (v, &end, 10);
  if (errno || end == v || *end || n < 0)
    return ps_error_set (err, 400, "%s is in bytes and expects a non-negative integer, got \"%s\"", name, v);
  *out = (uint64_t) n;
  return 0;
}

/* The size options, by their query names; min-free-space (a free-disk
   target) is refused rather than ignored. */
static int
apply_size (const char *name, const char *v, struct cache_prune_opts *o, ps_error **err)
{
  uint64_t n = 0;
  if (parse_bytes (name, v, &n, err) < 0)
    return -1;
  if (strcmp (name, "reserved-space") == 0)
    o->reserved_bytes = n;
  else if (strcmp (name, "min-free-space") == 0)
    {
      if (n)
        return ps_error_set (err, 400, "min-free-space is not supported by podsolve (use keep-storage or "
                                       "max-used-space)");
    }
  else if (n) /* keep-storage, max-used-space: one budget */
    o->max_used_bytes = n;
  return 0;
}

static const char *const size_names[] = { "keep-storage", "max-used-space", "reserved-space", "min-free-space" };

static int
opts_from_query (struct ps_request *req, struct cache_prune_opts *o, ps_error **err)
{
  const char *all = http_request_query (req, "all");
  if (all && schema_api_bool (all, &o->all) < 0)
    return ps_error_set (err, 400, "failed to parse query parameter 'all': \"%s\": not a boolean", all);
  for (size_t i = 0; i < ARRAY_SIZE (size_names); i++)
    if (apply_size (size_names[i], http_request_query (req, size_names[i]), o, err) < 0)
      return -1;
  if (cache_prune_parse_filters (http_request_query (req, "filters"), o, err) < 0)
    return ps_error_wrap (err, "could not parse filters");
  return 0;
}

/* /solve/prune's JSON body: {"all", "keepStorage", "maxUsedSpace",
   "reservedSpace", "minFreeSpace", "filters"} (filters as an object or
   as Docker's JSON string). */
static int
opts_from_body (const ps_buf *body, struct cache_prune_opts *o, ps_error **err)
{
  static const char *const json_names[] = { "keepStorage", "maxUsedSpace", "reservedSpace", "minFreeSpace" };
  cJSON *root = cJSON_ParseWithLength (body->data, body->len);
  if (root == NULL || !cJSON_IsObject (root))
    {
      cJSON_Delete (root);
      return ps_error_set (err, 400, "the prune request body is not a JSON object");
    }
  int ret = 0;
  const cJSON *f;
  cJSON_ArrayForEach (f, root)
    {
      const char *k = f->string;
      size_t size_idx = ARRAY_SIZE (json_names);
      for (size_t i = 0; i < ARRAY_SIZE (json_names); i++)
        if (strcmp (k, json_names[i]) == 0)
          size_idx = i;
      if (strcmp (k, "all") == 0)
        {
          if (!cJSON_IsBool (f))
            ret = ps_error_set (err, 400, "all: expected true or false");
          o->all = cJSON_IsTrue (f);
        }
      else if (size_idx < ARRAY_SIZE (json_names))
        {
          /* cJSON reads every number as a double: 2.5e-42 or 1.5 must be
             refused, not truncated to a byte count nobody sent. */
          if (!cJSON_IsNumber (f) || f->valuedouble < 0 || f->valuedouble > PS_MAX_JSON_BYTE_COUNT
              || f->valuedouble != floor (f->valuedouble))
            ret = ps_error_set (err, 400, "%s: expected a byte count (a non-negative integer)", k);
          else
            {
              cleanup_free char *v = xasprintf ("%lld", (long long) f->valuedouble);
              ret = apply_size (size_names[size_idx], v, o, err);
            }
        }
      else if (strcmp (k, "filters") == 0 && cJSON_IsString (f) && f->valuestring[0] == '\0')
        /* "" means "no filters" in Docker's query, not in a JSON body that
           could have left the field out */
        ret = ps_error_set (err, 400, "could not parse filters: filters: \"\" is not a JSON object "
                                      "(e.g. {\"until\":[\"24h\"]})");
      else if (strcmp (k, "filters") == 0)
        {
          char *text = cJSON_IsString (f) ? xstrdup (f->valuestring) : cJSON_PrintUnformatted (f);
          ret = cache_prune_parse_filters (text, o, err);
          if (ret < 0)
            ps_error_wrap (err, "could not parse filters");
          cJSON_free (text);
        }
      else
        ret = ps_error_set (err, 400, "unknown field \"%s\" (supported: all, keepStorage, maxUsedSpace, "
                                      "reservedSpace, filters)", k);
      if (ret < 0)
        break;
    }
  cJSON_Delete (root);
  return ret;
}

static bool
client_gone (void *data)
{
  return http_request_client_gone (data);
}

static int
prune_complete (struct ps_request *req, ps_error **err)
{
  struct prune_state *s = req->state;
  struct cache_prune_opts o = { .give_up = client_gone, .give_up_data = req, .wait_ms = PS_PRUNE_WAIT_MS };
  bool ours = strstr (req->path, "/solve/") != NULL;
  int r = opts_from_query (req, &o, err);
  if (r == 0 && s->body.len > 0)
    r = ours ? opts_from_body (&s->body, &o, err) : 0; /* Docker's route has no body */
  struct cache_prune_report rep = { 0 };
  if (r == 0)
    r = cache_prune (ps_cfg.state_dir, &o, &rep, err);
  cache_prune_opts_free (&o);
  if (r < 0)
    return -1;

  cJSON *out = cJSON_CreateObject ();
  cJSON *ids = cJSON_AddArrayToObject (out, "CachesDeleted");
  cJSON *records = cJSON_CreateArray ();
  for (size_t i = 0; i < rep.n_deleted; i++)
    {
      const struct cache_prune_entry *e = &rep.deleted[i];
      cJSON_AddItemToArray (ids, cJSON_CreateString (e->id));
      cJSON *x = cJSON_CreateObject ();
      cJSON_AddStringToObject (x, "ID", e->id);
      cJSON_AddStringToObject (x, "Type", e->type);
      cJSON_AddNumberToObject (x, "Size", (double) e->size);
      char when[48];
      ps_format_rfc3339 (e->last_used_ns, when, sizeof when);
      cJSON_AddStringToObject (x, "LastUsedAt", when);
      cJSON_AddItemToArray (records, x);
    }
  cJSON_AddNumberToObject (out, "SpaceReclaimed", (double) rep.reclaimed);
  cJSON_AddItemToObject (out, "Records", records);
  cache_prune_report_free (&rep);
  char *text = cJSON_PrintUnformatted (out);
  cJSON_Delete (out);
  r = http_respond_json (req, 200, text);
  cJSON_free (text);
  return r;
}

const struct ps_handler handler_prune = {
  .on_begin = prune_begin,
  .on_body = prune_body,
  .on_complete = prune_complete,
};
