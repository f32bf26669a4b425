/* router.c — the route table and version-prefix handling. */
#define _GNU_SOURCE
#include "server/router.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handlers/grpc.h"
#include "handlers/handlers.h"
#include "handlers/session.h"
#include "server/config.h"

struct route
{
  const char *method; /* "GET", "POST", ... ; "GET|HEAD" allowed */
  const char *pattern; /* path after the version prefix; "{x}" captures one segment */
  const struct ps_handler *handler;
};

static const struct route routes[] = {
  { "GET|HEAD", "/_ping", &handler_ping },
  { "GET|HEAD", "/libpod/_ping", &handler_ping },
  { "GET", "/version", &handler_version },
  { "GET", "/libpod/version", &handler_version },
  { "GET", "/info", &handler_info },
  { "GET", "/system/df", &handler_system_df },
  { "POST", "/build", &handler_build },
  { "POST", "/libpod/build", &handler_build },
  { "POST", "/build/cancel", &handler_build_cancel },
  { "POST", "/build/prune", &handler_prune },
  { "POST", "/session", &handler_session },
  { "POST", "/grpc", &handler_grpc },
  { "POST", "/solve", &handler_solve },
  { "POST", "/libpod/solve", &handler_solve },
  { "POST", "/solve/prune", &handler_prune },
  { "POST", "/libpod/solve/prune", &handler_prune },
  { "GET", "/solve", &handler_solve_list },
  { "GET", "/libpod/solve", &handler_solve_list },
  { "GET", "/solve/{ref}", &handler_solve_inspect },
  { "GET", "/libpod/solve/{ref}", &handler_solve_inspect },
  { "GET", "/solve/{ref}/status", &handler_solve_status },
  { "GET", "/libpod/solve/{ref}/status", &handler_solve_status },
  { "POST", "/solve/{ref}/cancel", &handler_solve_cancel },
  { "POST", "/libpod/solve/{ref}/cancel", &handler_solve_cancel },
  { "GET", "/solve/{ref}/outputs/{n}", &handler_solve_output },
  { "GET", "/libpod/solve/{ref}/outputs/{n}", &handler_solve_output },
};

static bool
method_matches (const char *allowed, const char *method)
{
  size_t n = strlen (method);
  for (const char *p = allowed; *p;)
    {
      const char *bar = strchr (p, '|');
      size_t len = bar ? (size_t) (bar - p) : strlen (p);
      if (len == n && strncmp (p, method, n) == 0)
        return true;
      if (bar == NULL)
        break;
      p = bar + 1;
    }
  return false;
}

static void
free_captures (struct ps_request *req, size_t n)
{
  for (size_t i = 0; req && i < n && i < ARRAY_SIZE (req->params); i++)
    {
      free ((char *) req->params[i]);
      req->params[i] = NULL;
    }
}

static bool
pattern_matches (const char *pattern, const char *path, struct ps_request *req)
{
  size_t nparams = 0;
  while (*pattern && *path)
    {
      if (*pattern == '{')
        {
          const char *close = strchr (pattern, '}');
          const char *end = strchr (path, '/');
          size_t len = end ? (size_t) (end - path) : strlen (path);
          if (close == NULL || len == 0)
            {
              free_captures (req, nparams);
              return false;
            }
          if (req && nparams < ARRAY_SIZE (req->params))
            req->params[nparams] = xstrndup (path, len);
          nparams++;
          pattern = close + 1;
          path += len;
          continue;
        }
      if (*pattern != *path)
        {
          free_captures (req, nparams);
          return false;
        }
      pattern++;
      path++;
    }
  /* Tolerate one trailing slash, as Docker's router does. */
  if (*pattern == '\0' && (*path == '\0' || (path[0] == '/' && path[1] == '\0')))
    {
      if (req)
        req->n_params = nparams < ARRAY_SIZE (req->params) ? nparams : ARRAY_SIZE (req->params);
      return true;
    }
  free_captures (req, nparams);
  return false;
}

/* "/v1.41/build" -> "/build"; "/v4.3.1/libpod/build" -> "/libpod/build".
   Any version string is accepted, as Podman does. */
static const char *
strip_version (const char *url)
{
  if (url[0] == '/' && url[1] == 'v' && isdigit ((unsigned char) url[2]))
    {
      const char *p = url + 2;
      while (*p && *p != '/')
        {
          if (!(isalnum ((unsigned char) *p) || *p == '.' || *p == '-'))
            return url;
          p++;
        }
      return *p ? p : "/";
    }
  return url;
}

/* --no-grpc: /grpc is not ours (the upstream answers it, as before). */
static bool
route_enabled (size_t i)
{
  return !(ps_cfg.no_grpc && routes[i].handler == &handler_grpc);
}

/* A path that a route without captures spells out belongs to those routes
   alone: /solve/prune is the prune, never GET /solve/{ref} of a job named
   "prune" (which POST /solve refuses).  OpenAPI matches the same way
   (concrete paths before templated ones), so the spec's methods for a path
   are the ones served, and a 405's Allow lists just those. */
static bool
literal_route_exists (const char *path)
{
  for (size_t i = 0; i < ARRAY_SIZE (routes); i++)
    if (route_enabled (i) && strchr (routes[i].pattern, '{') == NULL
        && pattern_matches (routes[i].pattern, path, NULL))
      return true;
  return false;
}

static bool
route_serves (size_t i, const char *path, bool literal_only, struct ps_request *req)
{
  if (!route_enabled (i) || (literal_only && strchr (routes[i].pattern, '{') != NULL))
    return false;
  return pattern_matches (routes[i].pattern, path, req);
}

const struct ps_handler *
router_lookup (struct ps_request *req)
{
  const char *path = strip_version (req->url);
  req->path = path;
  req->libpod = ps_str_has_prefix (path, "/libpod/");
  bool literal_only = literal_route_exists (path);
  for (size_t i = 0; i < ARRAY_SIZE (routes); i++)
    if (method_matches (routes[i].method, req->method) && route_serves (i, path, literal_only, req))
      return routes[i].handler;
  return NULL;
}

/* The methods routed for this path, each once, in route-table order. */
char *
router_allowed_methods (const char *url)
{
  const char *path = strip_version (url);
  bool literal_only = literal_route_exists (path);
  ps_buf out = { 0 };
  for (size_t i = 0; i < ARRAY_SIZE (routes); i++)
    {
      if (!route_serves (i, path, literal_only, NULL))
        continue;
      for (const char *p = routes[i].method; *p;)
        {
          char method[16];
          size_t len = strcspn (p, "|");
          snprintf (method, sizeof method, "%.*s", (int) len, p);
          if (out.data == NULL || !http_header_has_token (out.data, method))
            ps_buf_printf (&out, "%s%s", out.len ? ", " : "", method);
          p += len + (p[len] == '|');
        }
    }
  if (out.len == 0)
    {
      ps_buf_free (&out);
      return NULL;
    }
  return ps_buf_steal (&out);
}
