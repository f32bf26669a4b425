/* progress.h — rendering the SolveStatus objects of a /solve stream.
 *
 * One model (vertices with their statuses and a tail of their logs, fed by
 * cli_progress_update) and three renderers: rawjson (each status object
 * printed again as one JSON line), plain (BuildKit's `--progress=plain`
 * text) and tty (a redrawn block of per-vertex lines with timers).  All
 * write to the FILE given at creation, normally stderr. */
#ifndef CLIENT_PROGRESS_H
#define CLIENT_PROGRESS_H

#include <cjson/cJSON.h>
#include <stdio.h>

#include "common/ps.h"

enum cli_progress_mode
{
  CLI_PROGRESS_AUTO, /* tty when the output is a terminal, else plain */
  CLI_PROGRESS_TTY,  /* the same, but also when TERM=dumb */
  CLI_PROGRESS_PLAIN,
  CLI_PROGRESS_RAWJSON,
  CLI_PROGRESS_QUIET, /* nothing but the failure summary */
};

/* "auto", "tty", "plain", "rawjson", "quiet". */
int cli_progress_parse_mode (const char *name, enum cli_progress_mode *out, ps_error **err);

typedef struct cli_progress cli_progress;

/* `out` stays owned by the caller and must outlive the progress. */
cli_progress *cli_progress_new (enum cli_progress_mode mode, FILE *out);

/* One SolveStatus object ({"vertexes":[...],"statuses":[...],"logs":[...]})
   from a "status" line; borrowed for the call. */
void cli_progress_update (cli_progress *p, const cJSON *status);

/* Time passes: the tty renderer redraws its timers (at most every
   CLI_TICK_MS).  Cheap to call often. */
void cli_progress_tick (cli_progress *p);

/* The stream ended: the final state is drawn once more. */
void cli_progress_done (cli_progress *p);

/* After cli_progress_done: what failed, as BuildKit's clients show it —
   the failing vertex's name and its last CLI_LOG_TAIL_LINES lines of
   output between two rules, then "ERROR: <message>".  `vertex` may be NULL
   or unknown; then only the message is printed. */
void cli_progress_print_failure (cli_progress *p, const char *vertex, const char *message);

void cli_progress_free (cli_progress *p);

/* Helpers the renderers share, exposed for their files. */

/* Nanoseconds since the epoch of an RFC 3339 time ("2023-11-14T22:13:20.5Z",
   offsets allowed); 0 when `s` is NULL or not such a time. */
int64_t cli_time_parse (const char *s);

/* Byte counts as BuildKit prints them: "2B", "10.24kB", "2.02MB". */
void cli_format_bytes (int64_t n, char *out, size_t outlen);

#endif
