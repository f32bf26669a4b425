/* progress_internal.h — the progress model and the renderer interface,
 * shared by progress.c (the model) and progress_plain.c / progress_tty.c
 * (the renderers).  Not for other files. */
#ifndef CLIENT_PROGRESS_INTERNAL_H
#define CLIENT_PROGRESS_INTERNAL_H

#include "client/cli.h"
#include "client/progress.h"

/* One VertexStatus, by id within its vertex; later updates replace it. */
struct cli_status_item
{
  char *id;
  int64_t current;
  int64_t total;
  int64_t started;   /* ns since the epoch, 0 = unknown */
  int64_t completed; /* 0 = still running */
};

struct cli_log_line
{
  char *text; /* without the '\n' (and a trailing '\r') */
  int64_t ts;
};

struct cli_vertex
{
  char *digest;
  char *name;
  int index; /* #N: 1-based, in the order vertices first appear */
  int64_t started;
  int64_t completed;
  bool cached;
  char *error;

  struct cli_status_item *statuses;
  size_t n_statuses;

  /* The last CLI_LOG_TAIL_LINES complete lines, oldest at tail[tail_first]. */
  struct cli_log_line tail[CLI_LOG_TAIL_LINES];
  size_t tail_first;
  size_t tail_count;
  /* An unfinished line per stream (1 stdout, 2 stderr; 0 anything else). */
  ps_buf partial[3];
  int64_t partial_ts[3];

  /* plain renderer: what it printed of this vertex already */
  bool shown_end;
};

/* A renderer reacts to changes of the model; every callback is optional.
   Pointers passed in are owned by the model and valid during the call. */
struct cli_renderer
{
  /* A "status" object as received, before the model applies it. */
  void (*raw) (cli_progress *p, const cJSON *status);
  void (*vertex) (cli_progress *p, struct cli_vertex *v);
  void (*status) (cli_progress *p, struct cli_vertex *v, const struct cli_status_item *s);
  void (*log_line) (cli_progress *p, struct cli_vertex *v, const struct cli_log_line *line);
  void (*tick) (cli_progress *p);
  void (*done) (cli_progress *p);
  void (*free_state) (void *state);
};

struct cli_progress
{
  FILE *out;
  const struct cli_renderer *r;
  void *state; /* the renderer's own */
  struct cli_vertex **v;
  size_t n;
  int64_t start_mono; /* when the progress was created, ps_monotonic_ns */
};

extern const struct cli_renderer cli_renderer_rawjson;
extern const struct cli_renderer cli_renderer_plain;
extern const struct cli_renderer cli_renderer_tty;

/* Seconds from `from` to `to` (ns), never negative. */
double cli_seconds_between (int64_t from, int64_t to);

/* The i-th remembered log line of `v`, oldest first (i < tail_count). */
const struct cli_log_line *cli_vertex_tail_line (const struct cli_vertex *v, size_t i);

#endif
