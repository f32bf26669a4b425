/* progress_plain.c — BuildKit's `--progress=plain` text, line by line as
 * events arrive:
 *
 *   #4 [2/3] RUN echo hi
 *   #4 0.213 hi
 *   #4 DONE 0.4s
 *
 *   #5 [3/3] COPY a /a
 *   #5 CACHED
 *
 * A vertex's lines are introduced by "#N name" whenever the output moves to
 * it from another vertex, with a blank line between blocks, so interleaved
 * vertices stay readable (BuildKit's progressui textMux does the same).
 * The closing DONE/CACHED/ERROR line of a vertex waits until another
 * vertex speaks (or the stream ends), so a status the daemon reports just
 * after completing the vertex ("transferring context: 3kB done") still
 * reads before it, as in BuildKit's output. */
#include "client/progress_internal.h"

#include <stdlib.h>

struct plain_state
{
  const struct cli_vertex *current; /* the vertex whose block is open */
  struct cli_vertex *pending_end;   /* finished, its closing line not printed */
  bool printed;                     /* anything printed yet */
};

static struct plain_state *
state (cli_progress *p)
{
  if (p->state == NULL)
    p->state = xcalloc (1, sizeof (struct plain_state));
  return p->state;
}

static void print_end (cli_progress *p, struct cli_vertex *v);

static void
open_block (cli_progress *p, const struct cli_vertex *v)
{
  struct plain_state *st = state (p);
  if (st->pending_end && st->pending_end != v)
    print_end (p, st->pending_end);
  if (st->current == v)
    return;
  if (st->printed)
    fputc ('\n', p->out);
  fprintf (p->out, "#%d %s\n", v->index, v->name ? v->name : "");
  st->current = v;
  st->printed = true;
}

static void
print_end (cli_progress *p, struct cli_vertex *v)
{
  struct plain_state *st = state (p);
  st->pending_end = NULL;
  open_block (p, v);
  if (v->cached)
    fprintf (p->out, "#%d CACHED\n", v->index);
  else if (v->error)
    fprintf (p->out, "#%d ERROR: %s\n", v->index, v->error);
  else
    fprintf (p->out, "#%d DONE %.1fs\n", v->index, cli_seconds_between (v->started, v->completed));
  v->shown_end = true;
}

static void
plain_vertex (cli_progress *p, struct cli_vertex *v)
{
  struct plain_state *st = state (p);
  if (v->shown_end || st->pending_end == v)
    return;
  if (v->started == 0 && v->completed == 0 && !v->cached && v->error == NULL)
    return; /* known but not started: nothing to say yet */
  open_block (p, v);
  if (v->cached || v->error || v->completed)
    st->pending_end = v;
  fflush (p->out);
}

static void
plain_status (cli_progress *p, struct cli_vertex *v, const struct cli_status_item *s)
{
  open_block (p, v);
  const char *done = s->completed ? " done" : "";
  if (s->current == 0 && s->total == 0)
    fprintf (p->out, "#%d %s%s\n", v->index, s->id, done);
  else
    {
      char cur[32], total[40] = "";
      cli_format_bytes (s->current, cur, sizeof cur);
      if (s->total)
        {
          char t[32];
          cli_format_bytes (s->total, t, sizeof t);
          snprintf (total, sizeof total, " / %s", t);
        }
      fprintf (p->out, "#%d %s %s%s%s\n", v->index, s->id, cur, total, done);
    }
  fflush (p->out);
}

static void
plain_log_line (cli_progress *p, struct cli_vertex *v, const struct cli_log_line *line)
{
  open_block (p, v);
  fprintf (p->out, "#%d %.3f %s\n", v->index, cli_seconds_between (v->started, line->ts), line->text);
  fflush (p->out);
}

static void
plain_done (cli_progress *p)
{
  struct plain_state *st = state (p);
  if (st->pending_end)
    print_end (p, st->pending_end);
}

const struct cli_renderer cli_renderer_plain = {
  .vertex = plain_vertex,
  .done = plain_done,
  .status = plain_status,
  .log_line = plain_log_line,
  .free_state = free,
};
