/* fuzz_multipart — a POST /solve multipart body (and its Content-Type)
 * from an untrusted client.
 *
 * Two checks per input:
 *  - the parser gives the same parts (names, filenames, types, bytes) or
 *    the same error whether the body arrives whole or in chunks of the
 *    input's chosen size (a streaming bug shows up as a difference);
 *  - the /solve intake (handlers/solve_body.c) takes the chunked body into
 *    a job directory, and when it is accepted unpacks the tar parts; after
 *    that nothing exists beside the job directory.
 *
 * Input: n (1 byte), n bytes of Content-Type parameters (appended to
 * "multipart/form-data; ", line ends and NULs made blanks as a header
 * would not carry them), a chunk size (1 byte, 0 = whole), the body. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/multipart.h"
#include "handlers/solve_body.h"

static char parent[] = "/tmp/podsolve-fuzz-mp-XXXXXX";
static char *job;

static void
die (const char *what, const char *a, const char *b)
{
  fprintf (stderr, "fuzz_multipart: %s\n  whole:   %s\n  chunked: %s\n", what, a ? a : "", b ? b : "");
  abort ();
}

/* ---- the parser alone, as a trace ------------------------------------------------ */

struct trace
{
  ps_buf out;
  bool in_part;
};

static int
t_begin (void *ud, const struct ps_multipart_part *p, ps_error **err)
{
  struct trace *t = ud;
  if (t->in_part || p->name == NULL)
    die ("begin inside a part, or without a name", NULL, NULL);
  t->in_part = true;
  ps_buf_printf (&t->out, "[%zu:%s|%s|%s]", p->index, p->name, p->filename ? p->filename : "-",
                 p->content_type ? p->content_type : "-");
  return 0;
}

static int
t_data (void *ud, const char *data, size_t len, ps_error **err)
{
  struct trace *t = ud;
  if (!t->in_part || len == 0)
    die ("data outside a part, or empty", NULL, NULL);
  ps_buf_append (&t->out, data, len);
  return 0;
}

static int
t_end (void *ud, ps_error **err)
{
  struct trace *t = ud;
  if (!t->in_part)
    die ("end outside a part", NULL, NULL);
  t->in_part = false;
  ps_buf_puts (&t->out, "[end]");
  return 0;
}

static const struct ps_multipart_callbacks trace_cb = { t_begin, t_data, t_end };

static char *
trace_parse (const char *boundary, const uint8_t *body, size_t len, size_t chunk)
{
  struct trace t = { 0 };
  ps_buf_puts (&t.out, "");
  ps_multipart *mp = ps_multipart_new (boundary, &trace_cb, &t);
  ps_error *err = NULL;
  int r = 0;
  for (size_t off = 0; off < len && r == 0; off += chunk)
    r = ps_multipart_feed (mp, body + off, len - off < chunk ? len - off : chunk, &err);
  if (r == 0)
    r = ps_multipart_finish (mp, &err);
  ps_multipart_free (mp);
  if (r < 0)
    {
      if (err == NULL || (err->status != 400 && err->status != 413))
        die ("an error without a 400/413 status", NULL, NULL);
      /* Parts reported before the error may differ with the chunking (a
         chunk reaches further); the error itself may not. */
      char *e = xasprintf ("ERROR %d %s", err->status, err->msg);
      ps_error_free (err);
      ps_buf_free (&t.out);
      return e;
    }
  if (t.in_part)
    die ("finished inside a part", NULL, NULL);
  return ps_buf_steal (&t.out);
}

/* ---- the /solve intake -------------------------------------------------------------- */

static void
check_parent_holds_only_job (void)
{
  DIR *d = opendir (parent);
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, "..") && strcmp (de->d_name, "job"))
      {
        fprintf (stderr, "fuzz_multipart: escaped the job directory: %s/%s\n", parent, de->d_name);
        abort ();
      }
  closedir (d);
}

static void
intake (const char *content_type, const uint8_t *body, size_t len, size_t chunk)
{
  ps_rm_rf (job, NULL);
  cleanup_free char *parts = xasprintf ("%s/parts", job);
  ps_mkdir_p (parts, 0700, NULL);
  ps_error *err = NULL;
  struct solve_body *b = solve_body_new (content_type, job, 1024 * 1024, &err);
  int r = b ? 0 : -1;
  for (size_t off = 0; off < len && r == 0; off += chunk)
    r = solve_body_feed (b, body + off, len - off < chunk ? len - off : chunk, &err);
  if (r == 0)
    r = solve_body_finish (b, &err);
  if (r == 0)
    {
      size_t jl = 0, dl = 0;
      if (solve_body_json (b, &jl) == NULL || jl == 0)
        die ("accepted without a request", NULL, NULL);
      solve_body_definition (b, &dl);
      struct solve_source *src = NULL;
      size_t n = 0;
      r = solve_body_unpack_sources (b, &src, &n, &err);
      for (size_t i = 0; i < n; i++)
        {
          free (src[i].name);
          free (src[i].dir);
          free (src[i].tar);
        }
      free (src);
    }
  if (r < 0 && (err == NULL || err->status < 400 || err->status > 599))
    die ("an intake error without a status", NULL, NULL);
  ps_error_free (err);
  solve_body_free (b);
  check_parent_holds_only_job ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (job == NULL)
    {
      if (mkdtemp (parent) == NULL)
        abort ();
      job = xasprintf ("%s/job", parent);
      ps_log_set_level (PS_LOG_ERROR);
    }
  if (size < 2 || size < 2u + data[0])
    return 0;
  size_t n = data[0];
  cleanup_free char *ct = xmalloc (21 + n + 1);
  memcpy (ct, "multipart/form-data; ", 21);
  for (size_t i = 0; i < n; i++)
    {
      char c = (char) data[1 + i];
      ct[21 + i] = c == '\0' || c == '\r' || c == '\n' ? ' ' : c;
    }
  ct[21 + n] = '\0';
  size_t chunk = data[1 + n];
  const uint8_t *body = data + 2 + n;
  size_t len = size - 2 - n;
  if (chunk == 0)
    chunk = len ? len : 1;

  ps_error *err = NULL;
  cleanup_free char *boundary = ps_multipart_boundary (ct, &err);
  if (boundary == NULL)
    {
      if (err == NULL || err->status != 400)
        die ("a boundary error without 400", NULL, NULL);
      ps_error_free (err);
    }
  else
    {
      char *whole = trace_parse (boundary, body, len, len ? len : 1);
      char *chunked = trace_parse (boundary, body, len, chunk);
      if (strcmp (whole, chunked) != 0)
        die ("the parts depend on the chunking", whole, chunked);
      free (whole);
      free (chunked);
    }
  intake (ct, body, len, chunk);
  return 0;
}
