/* solve_stream.h — reading a /solve NDJSON stream (POST /solve, GET
 * /solve/{ref}/status): each line holds exactly one of "status" (handed to
 * the progress renderer), "result" or "error" (the end of the solve). */
#ifndef CLIENT_SOLVE_STREAM_H
#define CLIENT_SOLVE_STREAM_H

#include "client/progress.h"
#include "common/ps.h"

struct cli_solve_stream
{
  cli_progress *progress; /* borrowed */
  bool finished;          /* a "result" or "error" line arrived */
  bool failed;            /* ... and it was "error" */
  char *result_ref;       /* result.ref */
  char *image_name;       /* result.exporterResponse["image.name"], or NULL */
  char *image_digest;     /* ["containerimage.digest"] */
  char *image_id;         /* ["containerimage.config.digest"]: the image id, as --iidfile writes it */
  char *response_json;    /* the whole exporter response (--metadata-file), cJSON_free */
  char *error_message;    /* error.message */
  char *error_vertex;     /* error.vertex, may be NULL */
  ps_error *bad_line;     /* why the stream was stopped early */
};

void cli_solve_stream_init (struct cli_solve_stream *s, cli_progress *progress);
void cli_solve_stream_free (struct cli_solve_stream *s);

/* cli_http_line_fn and cli_http_tick_fn, with `ud` a cli_solve_stream. */
int cli_solve_stream_line (const char *line, size_t len, void *ud);
void cli_solve_stream_tick (void *ud);

/* The stream is over (cli_http_stream returned `ret`, with `err` when it
   failed): finish the display and tell the user what happened — the
   failure summary after an "error" line, the daemon's or the transport's
   message, or `interrupted_msg` after Ctrl-C.  Returns the exit status. */
int cli_solve_stream_report (struct cli_solve_stream *s, int ret, const ps_error *err, const char *interrupted_msg);

#endif
