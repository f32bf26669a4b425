/* progress_tty.c — the live display for a terminal: a block of lines
 * redrawn in place at most every CLI_TICK_MS, in BuildKit's tty style:
 *
 *   [+] Building 3.2s (4/6)
 *    => [internal] load build context                          0.0s
 *    => => transferring context: 10.24kB                       0.0s
 *    => CACHED [2/4] ARG V=1                                   0.0s
 *    => [3/4] RUN make                                         2.1s
 *    => => # compiling foo.c
 *
 * Robustness over looks: the block is redrawn by moving the cursor up over
 * the lines drawn last time, and that only works when no line wraps and the
 * block fits on the screen.  So every line is cut to the terminal width
 * minus one column (one column per UTF-8 character; control bytes become
 * spaces, so output of a RUN cannot move the cursor), and when the block is
 * taller than the screen, finished vertices are left out first.  The last
 * draw shows everything, since nothing is redrawn after it. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "client/progress_internal.h"

/* Log lines shown under a running vertex. */
#define CLI_TTY_LOG_LINES 6
/* Characters inside the [====>    ] bar of a status with a total. */
#define CLI_TTY_BAR_WIDTH 20

#define ANSI_RESET "\x1b[0m"
#define ANSI_RED "\x1b[31m"
#define ANSI_BLUE "\x1b[34m"

struct tty_state
{
  int lines_drawn;
  int64_t last_draw; /* ps_monotonic_ns */
  bool dirty;
  bool color;
};

struct row
{
  char *text;
  int block; /* vertex index, 0 = the header */
  bool done; /* belongs to a finished vertex */
  bool dropped;
};

struct rows
{
  struct row *v;
  size_t n;
};

static struct tty_state *
state (cli_progress *p)
{
  if (p->state == NULL)
    {
      struct tty_state *st = xcalloc (1, sizeof *st);
      const char *no_color = getenv ("NO_COLOR");
      st->color = no_color == NULL || *no_color == '\0';
      p->state = st;
    }
  return p->state;
}

static void
term_size (FILE *out, int *cols, int *lines)
{
  struct winsize ws;
  *cols = 80;
  *lines = 24;
  if (ioctl (fileno (out), TIOCGWINSZ, &ws) == 0)
    {
      if (ws.ws_col > 0)
        *cols = ws.ws_col;
      if (ws.ws_row > 0)
        *lines = ws.ws_row;
    }
}

/* Append at most `width` columns of `s`; returns the columns used. */
static int
put_fit (ps_buf *b, const char *s, int width)
{
  int cols = 0;
  for (const unsigned char *c = (const unsigned char *) s; *c; c++)
    {
      if ((*c & 0xC0) == 0x80)
        {
          if (cols > 0)
            ps_buf_append (b, c, 1); /* the rest of a character already counted */
          continue;
        }
      if (cols >= width)
        break;
      if (*c < 0x20 || *c == 0x7f)
        ps_buf_append (b, " ", 1);
      else
        ps_buf_append (b, c, 1);
      cols++;
    }
  return cols;
}

/* One row: `prefix` and `text` cut to fit, `right` (a timer) flush right. */
static void
add_row (struct rows *rs, int cols, const char *color, int block, bool done, const char *prefix, const char *text,
         const char *right)
{
  ps_buf b = { 0 };
  int width = cols - 1;
  int rlen = right ? (int) strlen (right) : 0;
  if (rlen + 1 > width / 2)
    rlen = 0; /* a very narrow terminal: drop the timer */
  int avail = width - (rlen ? rlen + 1 : 0);
  if (color)
    ps_buf_puts (&b, color);
  int used = put_fit (&b, prefix, avail);
  used += put_fit (&b, text, avail - used);
  if (rlen)
    {
      for (; used < width - rlen; used++)
        ps_buf_append (&b, " ", 1);
      ps_buf_puts (&b, right);
    }
  if (color)
    ps_buf_puts (&b, ANSI_RESET);
  rs->v = xrealloc (rs->v, (rs->n + 1) * sizeof *rs->v);
  rs->v[rs->n++] = (struct row){ .text = ps_buf_steal (&b), .block = block, .done = done };
}

static void
status_text (const struct cli_status_item *s, char *out, size_t outlen)
{
  char cur[32] = "", total[40] = "", bar[CLI_TTY_BAR_WIDTH + 4] = "";
  if (s->current || s->total)
    cli_format_bytes (s->current, cur, sizeof cur);
  if (s->total)
    {
      char t[32];
      cli_format_bytes (s->total, t, sizeof t);
      snprintf (total, sizeof total, " / %s", t);
      if (!s->completed)
        {
          int64_t cur_n = s->current < 0 ? 0 : s->current > s->total ? s->total : s->current;
          int filled = (int) (cur_n * CLI_TTY_BAR_WIDTH / s->total);
          size_t k = 0;
          bar[k++] = ' ';
          bar[k++] = '[';
          for (int i = 0; i < CLI_TTY_BAR_WIDTH; i++)
            bar[k++] = i < filled ? '=' : i == filled ? '>' : ' ';
          bar[k++] = ']';
          bar[k] = '\0';
        }
    }
  snprintf (out, outlen, "%s%s%s%s%s", s->id, *cur ? " " : "", cur, total, s->completed ? " done" : bar);
}

static void
timer (int64_t started, int64_t completed, int64_t now, char *out, size_t outlen)
{
  snprintf (out, outlen, "%.1fs", cli_seconds_between (started, completed ? completed : now));
}

static void
build_rows (cli_progress *p, struct rows *rs, int cols, bool final)
{
  struct tty_state *st = state (p);
  int64_t now = ps_now_ns ();
  int64_t first = 0, last = 0;
  size_t done = 0, shown = 0;
  for (size_t i = 0; i < p->n; i++)
    {
      const struct cli_vertex *v = p->v[i];
      if (v->started && (first == 0 || v->started < first))
        first = v->started;
      if (v->completed > last)
        last = v->completed;
      done += v->completed || v->cached;
      shown += v->started || v->cached || v->completed;
    }
  double elapsed = first ? cli_seconds_between (first, final && last ? last : now)
                         : cli_seconds_between (p->start_mono, ps_monotonic_ns ());
  char header[96];
  snprintf (header, sizeof header, "[+] Building %.1fs (%zu/%zu)%s", elapsed, done, shown, final ? " FINISHED" : "");
  add_row (rs, cols, NULL, 0, false, "", header, NULL);

  for (size_t i = 0; i < p->n; i++)
    {
      const struct cli_vertex *v = p->v[i];
      if (!(v->started || v->cached || v->completed))
        continue;
      bool finished = v->completed || v->cached || v->error;
      const char *color = !st->color ? NULL : v->error ? ANSI_RED : finished ? ANSI_BLUE : NULL;
      char t[32];
      timer (v->started, v->cached && !v->completed ? v->started : v->completed, now, t, sizeof t);
      cleanup_free char *name
          = xasprintf ("%s%s%s", v->cached ? "CACHED " : "", v->error ? "ERROR " : "", v->name ? v->name : v->digest);
      add_row (rs, cols, color, v->index, finished, " => ", name, t);
      for (size_t k = 0; k < v->n_statuses; k++)
        {
          const struct cli_status_item *s = &v->statuses[k];
          char text[512];
          status_text (s, text, sizeof text);
          timer (s->started, s->completed, now, t, sizeof t);
          add_row (rs, cols, color, v->index, finished, " => => ", text, s->started ? t : NULL);
        }
      if (finished)
        continue;
      size_t from = v->tail_count > CLI_TTY_LOG_LINES ? v->tail_count - CLI_TTY_LOG_LINES : 0;
      for (size_t k = from; k < v->tail_count; k++)
        add_row (rs, cols, NULL, v->index, false, " => => # ", cli_vertex_tail_line (v, k)->text, NULL);
    }
}

/* Leave out rows until `max` remain: finished vertices first, oldest
   first, then the oldest of the rest; the header always stays. */
static size_t
fit_rows (struct rows *rs, size_t max)
{
  size_t n = rs->n;
  for (int pass = 0; pass < 2 && n > max; pass++)
    for (size_t i = 1; i < rs->n && n > max; i++)
      if (!rs->v[i].dropped && (pass == 1 || rs->v[i].done))
        {
          rs->v[i].dropped = true;
          n--;
        }
  return n;
}

static void
draw (cli_progress *p, bool final)
{
  struct tty_state *st = state (p);
  int cols, lines;
  term_size (p->out, &cols, &lines);
  struct rows rs = { 0 };
  build_rows (p, &rs, cols, final);
  size_t n = final ? rs.n : fit_rows (&rs, lines > 2 ? (size_t) lines - 1 : 1);

  ps_buf out = { 0 };
  if (st->lines_drawn > 0)
    ps_buf_printf (&out, "\x1b[%dA", st->lines_drawn);
  ps_buf_puts (&out, "\r");
  for (size_t i = 0; i < rs.n; i++)
    {
      if (!rs.v[i].dropped)
        {
          ps_buf_puts (&out, rs.v[i].text);
          ps_buf_puts (&out, "\x1b[K\n");
        }
      free (rs.v[i].text);
    }
  free (rs.v);
  ps_buf_puts (&out, "\x1b[J");
  fwrite (out.data, 1, out.len, p->out);
  fflush (p->out);
  ps_buf_free (&out);
  st->lines_drawn = (int) n;
  st->last_draw = ps_monotonic_ns ();
  st->dirty = false;
}

static bool
anything_running (const cli_progress *p)
{
  for (size_t i = 0; i < p->n; i++)
    if (p->v[i]->started && !p->v[i]->completed && !p->v[i]->error)
      return true;
  return false;
}

static void
tty_tick (cli_progress *p)
{
  struct tty_state *st = state (p);
  if (ps_monotonic_ns () - st->last_draw < (int64_t) CLI_TICK_MS * 1000000)
    return;
  if (st->dirty || anything_running (p) || st->lines_drawn == 0)
    draw (p, false);
}

static void
tty_changed (cli_progress *p)
{
  state (p)->dirty = true;
  tty_tick (p);
}

static void
tty_vertex (cli_progress *p, struct cli_vertex *v)
{
  tty_changed (p);
}

static void
tty_status (cli_progress *p, struct cli_vertex *v, const struct cli_status_item *s)
{
  tty_changed (p);
}

static void
tty_log_line (cli_progress *p, struct cli_vertex *v, const struct cli_log_line *line)
{
  tty_changed (p);
}

static void
tty_done (cli_progress *p)
{
  struct tty_state *st = state (p);
  if (p->n > 0)
    draw (p, true);
  else if (st->lines_drawn > 0)
    {
      /* nothing happened (the daemon refused the request): leave no block */
      fprintf (p->out, "\x1b[%dA\r\x1b[J", st->lines_drawn);
      st->lines_drawn = 0;
    }
}

const struct cli_renderer cli_renderer_tty = {
  .vertex = tty_vertex,
  .status = tty_status,
  .log_line = tty_log_line,
  .tick = tty_tick,
  .done = tty_done,
  .free_state = free,
};
