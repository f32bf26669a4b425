/* solve_body.c — the POST /solve body: JSON, or the parts of a
 * multipart/form-data body (see solve_body.h). */
#define _GNU_SOURCE
#include "handlers/solve_body.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/multipart.h"
#include "solver/context.h"
#include "solver/llb/llb.h"

struct part
{
  char *name;
  char *path; /* spooled bytes */
  int fd;
  uint64_t size;
};

enum part_kind
{
  PART_NONE,
  PART_REQUEST,
  PART_DEFINITION,
  PART_TAR,
};

struct solve_body
{
  char *dir;
  uint64_t max_context_bytes;
  ps_multipart *mp;  /* NULL for a JSON body */
  ps_buf json;       /* the JSON body, or the "request" part */
  ps_buf definition; /* a "definition" part: raw pb.Definition bytes */
  bool has_request, has_definition;
  enum part_kind current;
  struct part *parts;
  size_t n_parts;
  uint64_t total; /* tar part bytes */
  ps_error *failed; /* the first error: every later call returns it again */
};

static bool
valid_part_name (const char *n)
{
  size_t len = strlen (n);
  if (len == 0 || len > PS_MAX_PART_NAME || n[0] == '.')
    return false;
  for (size_t i = 0; i < len; i++)
    if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9')
          || n[i] == '-' || n[i] == '_' || n[i] == '.'))
      return false;
  return true;
}

static int
append_json (struct solve_body *b, const void *data, size_t len, ps_error **err)
{
  if (b->json.len + len > PS_MAX_SOLVE_REQUEST)
    return ps_error_set (err, 413, "the solve request is larger than %d bytes", PS_MAX_SOLVE_REQUEST);
  ps_buf_append (&b->json, data, len);
  return 0;
}

/* ---- multipart callbacks ------------------------------------------------------- */

static int
on_begin (void *ud, const struct ps_multipart_part *mpp, ps_error **err)
{
  struct solve_body *b = ud;
  const char *key = mpp->name;
  if (strcmp (key, "request") == 0 || strcmp (key, "definition") == 0)
    {
      bool request = key[0] == 'r';
      bool *seen = request ? &b->has_request : &b->has_definition;
      if (*seen)
        return ps_error_set (err, 400, "multipart part \"%s\" is sent twice", key);
      *seen = true;
      b->current = request ? PART_REQUEST : PART_DEFINITION;
      return 0;
    }
  if (!valid_part_name (key))
    return ps_error_set (err, 400, "multipart part \"%s\": names are 1-%d characters of [A-Za-z0-9._-]", key,
                         PS_MAX_PART_NAME);
  for (size_t i = 0; i < b->n_parts; i++)
    if (strcmp (b->parts[i].name, key) == 0)
      return ps_error_set (err, 400, "multipart part \"%s\" is sent twice", key);
  if (b->n_parts >= PS_MAX_MULTIPART_PARTS)
    return ps_error_set (err, 413, "more than %d multipart parts", PS_MAX_MULTIPART_PARTS);
  b->parts = xrealloc (b->parts, (b->n_parts + 1) * sizeof *b->parts);
  struct part *p = &b->parts[b->n_parts++];
  p->name = xstrdup (key);
  p->path = xasprintf ("%s/parts/%s.tar", b->dir, key);
  p->size = 0;
  p->fd = open (p->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (p->fd < 0)
    return ps_error_set_errno (err, ps_write_errno_status (errno), errno, "store part %s", key);
  b->current = PART_TAR;
  return 0;
}

static int
on_data (void *ud, const char *data, size_t size, ps_error **err)
{
  struct solve_body *b = ud;
  switch (b->current)
    {
    case PART_REQUEST:
      return append_json (b, data, size, err);
    case PART_DEFINITION:
      /* A raw pb.Definition (application/x-protobuf), kept in memory. */
      if (b->definition.len + size > PS_MAX_LLB_BYTES)
        return ps_error_set (err, 413, "the definition part is larger than %d bytes", PS_MAX_LLB_BYTES);
      ps_buf_append (&b->definition, data, size);
      return 0;
    case PART_TAR:
      break;
    case PART_NONE:
      return ps_error_set (err, 500, "multipart data outside a part");
    }
  struct part *p = &b->parts[b->n_parts - 1];
  b->total += size;
  if (b->total > b->max_context_bytes)
    return ps_error_set (err, 413, "build context exceeds --max-context-bytes (%llu bytes)",
                         (unsigned long long) b->max_context_bytes);
  while (size > 0)
    {
      ssize_t w = write (p->fd, data, size);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return ps_error_set_errno (err, ps_write_errno_status (errno), errno, "store part %s", p->name);
        }
      data += w;
      size -= (size_t) w;
      p->size += (uint64_t) w;
    }
  return 0;
}

static int
on_end (void *ud, ps_error **err)
{
  struct solve_body *b = ud;
  if (b->current == PART_TAR)
    {
      struct part *p = &b->parts[b->n_parts - 1];
      close (p->fd);
      p->fd = -1;
    }
  b->current = PART_NONE;
  return 0;
}

static const struct ps_multipart_callbacks callbacks = { on_begin, on_data, on_end };

/* ---- the body ---------------------------------------------------------------- */

struct solve_body *
solve_body_new (const char *content_type, const char *dir, uint64_t max_context_bytes, ps_error **err)
{
  const char *ct = content_type;
  size_t n = ct ? strcspn (ct, "; \t") : 0;
  bool multipart = ct && n == 19 && strncasecmp (ct, "multipart/form-data", n) == 0;
  if (!multipart && !(ct && n == 16 && strncasecmp (ct, "application/json", n) == 0))
    return ps_error_set (err, 415, "Content-Type %s is not supported (use application/json, or multipart/form-data "
                                   "with a \"request\" part and tar parts)",
                         ct ? ct : "(none)"),
           NULL;
  cleanup_free char *boundary = NULL;
  if (multipart && (boundary = ps_multipart_boundary (ct, err)) == NULL)
    return NULL;
  struct solve_body *b = xcalloc (1, sizeof *b);
  b->dir = xstrdup (dir);
  b->max_context_bytes = max_context_bytes;
  if (multipart)
    b->mp = ps_multipart_new (boundary, &callbacks, b);
  return b;
}

static int
failed (struct solve_body *b, ps_error **err)
{
  *err = xcalloc (1, sizeof **err);
  (*err)->status = b->failed->status;
  (*err)->msg = xstrdup (b->failed->msg);
  return -1;
}

int
solve_body_feed (struct solve_body *b, const void *data, size_t len, ps_error **err)
{
  if (b->failed)
    return failed (b, err);
  int r = b->mp ? ps_multipart_feed (b->mp, data, len, &b->failed) : append_json (b, data, len, &b->failed);
  return r < 0 ? failed (b, err) : 0;
}

int
solve_body_finish (struct solve_body *b, ps_error **err)
{
  if (b->failed)
    return failed (b, err);
  if (b->mp)
    {
      if (ps_multipart_finish (b->mp, &b->failed) < 0)
        return failed (b, err);
      if (!b->has_request)
        return ps_error_set (err, 400, "multipart body has no \"request\" part (the JSON SolveRequest)");
    }
  if (b->json.len == 0)
    return ps_error_set (err, 400, "empty request body: send a JSON SolveRequest");
  return 0;
}

const char *
solve_body_json (const struct solve_body *b, size_t *len)
{
  *len = b->json.len;
  return b->json.data;
}

const uint8_t *
solve_body_definition (const struct solve_body *b, size_t *len)
{
  *len = b->definition.len;
  if (!b->has_definition)
    return NULL;
  return b->definition.data ? (const uint8_t *) b->definition.data : (const uint8_t *) "";
}

int
solve_body_sources (struct solve_body *b, struct solve_source **out, size_t *n)
{
  struct solve_source *src = xcalloc (b->n_parts + 1, sizeof *src);
  *out = src;
  *n = 0;
  for (size_t i = 0; i < b->n_parts; i++)
    {
      struct part *p = &b->parts[i];
      if (p->fd >= 0)
        {
          close (p->fd);
          p->fd = -1;
        }
      src[*n].name = xstrdup (p->name);
      src[*n].dir = xasprintf ("%s/sources/%s", b->dir, p->name);
      src[*n].bytes = p->size;
      src[*n].tar = xstrdup (p->path);
      (*n)++;
    }
  return 0;
}

int
solve_body_unpack_sources (struct solve_body *b, struct solve_source **out, size_t *n, ps_error **err)
{
  solve_body_sources (b, out, n);
  return context_unpack_sources (*out, *n, NULL, b->max_context_bytes, err);
}

void
solve_body_free (struct solve_body *b)
{
  if (b == NULL)
    return;
  ps_multipart_free (b->mp);
  for (size_t i = 0; i < b->n_parts; i++)
    {
      if (b->parts[i].fd >= 0)
        close (b->parts[i].fd);
      free (b->parts[i].name);
      free (b->parts[i].path);
    }
  free (b->parts);
  ps_buf_free (&b->json);
  ps_buf_free (&b->definition);
  ps_error_free (b->failed);
  free (b->dir);
  free (b);
}
