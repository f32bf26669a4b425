/* progress.c — the progress model fed by SolveStatus objects, the rawjson
 * and quiet renderers, and the failure summary.
 *
 * The SolveStatus shape is BuildKit's rawjson (client.SolveStatus): a vertex
 * object is the vertex's whole current state (name, started, completed,
 * cached, error), a status object the whole state of one sub-task, and a
 * log object a chunk of output whose lines may be split across chunks. */
#define _GNU_SOURCE
#include "client/progress_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* An output line longer than this is shown in pieces (a RUN that prints
   megabytes without a newline must not grow memory without bound). */
#define CLI_MAX_LOG_LINE (64 * 1024)

int
cli_progress_parse_mode (const char *name, enum cli_progress_mode *out, ps_error **err)
{
  static const struct
  {
    const char *name;
    enum cli_progress_mode mode;
  } modes[] = {
    { "auto", CLI_PROGRESS_AUTO },       { "tty", CLI_PROGRESS_TTY },     { "plain", CLI_PROGRESS_PLAIN },
    { "rawjson", CLI_PROGRESS_RAWJSON }, { "quiet", CLI_PROGRESS_QUIET },
  };
  for (size_t i = 0; i < ARRAY_SIZE (modes); i++)
    if (strcmp (name, modes[i].name) == 0)
      {
        *out = modes[i].mode;
        return 0;
      }
  return ps_error_set (err, 0, "--progress %s: expected auto, tty, plain, rawjson or quiet", name);
}

/* ---- helpers -------------------------------------------------------------------- */

int64_t
cli_time_parse (const char *s)
{
  if (s == NULL)
    return 0;
  struct tm tm;
  memset (&tm, 0, sizeof tm);
  const char *p = strptime (s, "%Y-%m-%dT%H:%M:%S", &tm);
  if (p == NULL)
    return 0;
  int64_t frac = 0;
  if (*p == '.')
    {
      int digits = 0;
      for (p++; isdigit ((unsigned char) *p); p++)
        if (digits < 9)
          {
            frac = frac * 10 + (*p - '0');
            digits++;
          }
      for (; digits < 9; digits++)
        frac *= 10;
    }
  int64_t offset = 0;
  if (*p == 'Z' || *p == 'z')
    p++;
  else if (*p == '+' || *p == '-')
    {
      int hh = 0, mm = 0;
      if (sscanf (p + 1, "%2d:%2d", &hh, &mm) != 2)
        return 0;
      offset = (*p == '-' ? -1 : 1) * (int64_t) (hh * 3600 + mm * 60);
    }
  else
    return 0;
  time_t t = timegm (&tm);
  return ((int64_t) t - offset) * 1000000000LL + frac;
}

void
cli_format_bytes (int64_t n, char *out, size_t outlen)
{
  static const char *const units[] = { "kB", "MB", "GB", "TB", "PB" };
  if (n < 1000)
    {
      snprintf (out, outlen, "%lldB", (long long) n);
      return;
    }
  double v = (double) n;
  size_t u = 0;
  v /= 1000;
  while (v >= 1000 && u + 1 < ARRAY_SIZE (units))
    {
      v /= 1000;
      u++;
    }
  snprintf (out, outlen, "%.2f%s", v, units[u]);
}

double
cli_seconds_between (int64_t from, int64_t to)
{
  if (from == 0 || to <= from)
    return 0;
  return (double) (to - from) / 1e9;
}

const struct cli_log_line *
cli_vertex_tail_line (const struct cli_vertex *v, size_t i)
{
  return &v->tail[(v->tail_first + i) % CLI_LOG_TAIL_LINES];
}

/* ---- the model ---------------------------------------------------------------- */

static struct cli_vertex *
find_vertex (cli_progress *p, const char *digest)
{
  for (size_t i = 0; i < p->n; i++)
    if (strcmp (p->v[i]->digest, digest) == 0)
      return p->v[i];
  return NULL;
}

static struct cli_vertex *
get_vertex (cli_progress *p, const char *digest)
{
  struct cli_vertex *v = find_vertex (p, digest);
  if (v)
    return v;
  v = xcalloc (1, sizeof *v);
  v->digest = xstrdup (digest);
  v->index = (int) p->n + 1;
  p->v = xrealloc (p->v, (p->n + 1) * sizeof *p->v);
  p->v[p->n++] = v;
  return v;
}

static void
vertex_free (struct cli_vertex *v)
{
  free (v->digest);
  free (v->name);
  free (v->error);
  for (size_t i = 0; i < v->n_statuses; i++)
    free (v->statuses[i].id);
  free (v->statuses);
  for (size_t i = 0; i < v->tail_count; i++)
    free (v->tail[(v->tail_first + i) % CLI_LOG_TAIL_LINES].text);
  for (size_t i = 0; i < ARRAY_SIZE (v->partial); i++)
    ps_buf_free (&v->partial[i]);
  free (v);
}

/* A complete line: remember it in the tail and show it. */
static void
emit_line (cli_progress *p, struct cli_vertex *v, const char *text, size_t len, int64_t ts)
{
  if (len > 0 && text[len - 1] == '\r')
    len--;
  struct cli_log_line *slot;
  if (v->tail_count < CLI_LOG_TAIL_LINES)
    slot = &v->tail[(v->tail_first + v->tail_count++) % CLI_LOG_TAIL_LINES];
  else
    {
      slot = &v->tail[v->tail_first];
      free (slot->text);
      v->tail_first = (v->tail_first + 1) % CLI_LOG_TAIL_LINES;
    }
  slot->text = xstrndup (text, len);
  slot->ts = ts;
  if (p->r->log_line)
    p->r->log_line (p, v, slot);
}

static void
flush_partial (cli_progress *p, struct cli_vertex *v)
{
  for (size_t s = 0; s < ARRAY_SIZE (v->partial); s++)
    if (v->partial[s].len > 0)
      {
        emit_line (p, v, v->partial[s].data, v->partial[s].len, v->partial_ts[s]);
        ps_buf_reset (&v->partial[s]);
      }
}

static void
add_log (cli_progress *p, struct cli_vertex *v, int stream, const char *data, size_t len, int64_t ts)
{
  size_t s = stream == 1 || stream == 2 ? (size_t) stream : 0;
  ps_buf *b = &v->partial[s];
  size_t start = 0;
  for (size_t i = 0; i <= len; i++)
    {
      bool end_of_line = i < len && data[i] == '\n';
      bool too_long = b->len + (i - start) >= CLI_MAX_LOG_LINE;
      if (!end_of_line && !too_long)
        continue;
      int64_t line_ts = b->len ? v->partial_ts[s] : ts;
      ps_buf_append (b, data + start, i - start);
      emit_line (p, v, b->data, b->len, line_ts);
      ps_buf_reset (b);
      start = end_of_line ? i + 1 : i;
    }
  if (start < len)
    {
      if (b->len == 0)
        v->partial_ts[s] = ts;
      ps_buf_append (b, data + start, len - start);
    }
}

static const char *
json_string (const cJSON *o, const char *key)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive (o, key);
  return cJSON_IsString (it) ? it->valuestring : NULL;
}

static int64_t
json_int (const cJSON *o, const char *key)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive (o, key);
  return cJSON_IsNumber (it) ? (int64_t) it->valuedouble : 0;
}

static void
apply_vertex (cli_progress *p, const cJSON *o)
{
  const char *digest = json_string (o, "digest");
  if (digest == NULL)
    return;
  struct cli_vertex *v = get_vertex (p, digest);
  const char *name = json_string (o, "name");
  if (name)
    {
      free (v->name);
      v->name = xstrdup (name);
    }
  if (cJSON_HasObjectItem (o, "started"))
    v->started = cli_time_parse (json_string (o, "started"));
  if (cJSON_HasObjectItem (o, "completed"))
    v->completed = cli_time_parse (json_string (o, "completed"));
  if (cJSON_HasObjectItem (o, "cached"))
    v->cached = cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (o, "cached"));
  const char *error = json_string (o, "error");
  if (error && *error)
    {
      free (v->error);
      v->error = xstrdup (error);
    }
  if (v->completed || v->error)
    flush_partial (p, v);
  if (p->r->vertex)
    p->r->vertex (p, v);
}

static void
apply_status (cli_progress *p, const cJSON *o)
{
  const char *digest = json_string (o, "vertex");
  const char *id = json_string (o, "id");
  if (digest == NULL || id == NULL)
    return;
  struct cli_vertex *v = get_vertex (p, digest);
  struct cli_status_item *s = NULL;
  for (size_t i = 0; i < v->n_statuses && s == NULL; i++)
    if (strcmp (v->statuses[i].id, id) == 0)
      s = &v->statuses[i];
  if (s == NULL)
    {
      v->statuses = xrealloc (v->statuses, (v->n_statuses + 1) * sizeof *v->statuses);
      s = &v->statuses[v->n_statuses++];
      memset (s, 0, sizeof *s);
      s->id = xstrdup (id);
    }
  s->current = json_int (o, "current");
  s->total = json_int (o, "total");
  s->started = cli_time_parse (json_string (o, "started"));
  s->completed = cli_time_parse (json_string (o, "completed"));
  if (p->r->status)
    p->r->status (p, v, s);
}

static void
apply_log (cli_progress *p, const cJSON *o)
{
  const char *digest = json_string (o, "vertex");
  const char *data = json_string (o, "data");
  if (digest == NULL || data == NULL)
    return;
  unsigned char *bytes = NULL;
  size_t len = 0;
  if (ps_base64_decode (data, &bytes, &len) < 0)
    return;
  struct cli_vertex *v = get_vertex (p, digest);
  add_log (p, v, (int) json_int (o, "stream"), (const char *) bytes, len,
           cli_time_parse (json_string (o, "timestamp")));
  free (bytes);
}

void
cli_progress_update (cli_progress *p, const cJSON *status)
{
  if (p->r->raw)
    p->r->raw (p, status);
  const cJSON *it;
  cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (status, "vertexes"))
    apply_vertex (p, it);
  cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (status, "statuses"))
    apply_status (p, it);
  cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (status, "logs"))
    apply_log (p, it);
}

/* ---- rawjson and quiet ------------------------------------------------------------ */

static void
rawjson_raw (cli_progress *p, const cJSON *status)
{
  char *text = cJSON_PrintUnformatted (status);
  if (text == NULL)
    abort ();
  fprintf (p->out, "%s\n", text);
  fflush (p->out);
  cJSON_free (text);
}

const struct cli_renderer cli_renderer_rawjson = { .raw = rawjson_raw };
static const struct cli_renderer renderer_quiet = { 0 };

/* ---- life cycle ------------------------------------------------------------------ */

cli_progress *
cli_progress_new (enum cli_progress_mode mode, FILE *out)
{
  cli_progress *p = xcalloc (1, sizeof *p);
  p->out = out;
  p->start_mono = ps_monotonic_ns ();
  /* Cursor movements written to a file or a pipe are only noise: without
     a terminal, even an explicit "tty" falls back to plain. */
  if (mode == CLI_PROGRESS_AUTO || mode == CLI_PROGRESS_TTY)
    {
      const char *term = getenv ("TERM");
      bool dumb = mode == CLI_PROGRESS_AUTO && term && strcmp (term, "dumb") == 0;
      mode = isatty (fileno (out)) && !dumb ? CLI_PROGRESS_TTY : CLI_PROGRESS_PLAIN;
    }
  switch (mode)
    {
    case CLI_PROGRESS_TTY:
      p->r = &cli_renderer_tty;
      break;
    case CLI_PROGRESS_RAWJSON:
      p->r = &cli_renderer_rawjson;
      break;
    case CLI_PROGRESS_QUIET:
      p->r = &renderer_quiet;
      break;
    case CLI_PROGRESS_AUTO:
    case CLI_PROGRESS_PLAIN:
      p->r = &cli_renderer_plain;
      break;
    }
  return p;
}

void
cli_progress_tick (cli_progress *p)
{
  if (p->r->tick)
    p->r->tick (p);
}

void
cli_progress_done (cli_progress *p)
{
  for (size_t i = 0; i < p->n; i++)
    flush_partial (p, p->v[i]);
  if (p->r->done)
    p->r->done (p);
  fflush (p->out);
}

void
cli_progress_print_failure (cli_progress *p, const char *vertex, const char *message)
{
  struct cli_vertex *v = vertex ? find_vertex (p, vertex) : NULL;
  for (size_t i = p->n; v == NULL && i > 0; i--)
    if (p->v[i - 1]->error)
      v = p->v[i - 1];
  if (v)
    {
      fprintf (p->out, "------\n > %s:\n", v->name ? v->name : v->digest);
      for (size_t i = 0; i < v->tail_count; i++)
        {
          const struct cli_log_line *l = cli_vertex_tail_line (v, i);
          fprintf (p->out, "#%d %.3f %s\n", v->index, cli_seconds_between (v->started, l->ts), l->text);
        }
      fprintf (p->out, "------\n");
    }
  fprintf (p->out, "ERROR: %s\n", message && *message ? message : "the build failed");
  fflush (p->out);
}

void
cli_progress_free (cli_progress *p)
{
  if (p == NULL)
    return;
  if (p->r->free_state)
    p->r->free_state (p->state);
  for (size_t i = 0; i < p->n; i++)
    vertex_free (p->v[i]);
  free (p->v);
  free (p);
}
