/* solve_stream.c — the /solve NDJSON stream, line by line (see solve_stream.h). */
#include "client/solve_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"

void
cli_solve_stream_init (struct cli_solve_stream *s, cli_progress *progress)
{
  memset (s, 0, sizeof *s);
  s->progress = progress;
}

void
cli_solve_stream_free (struct cli_solve_stream *s)
{
  free (s->result_ref);
  free (s->image_name);
  free (s->image_digest);
  free (s->image_id);
  if (s->response_json)
    cJSON_free (s->response_json);
  free (s->error_message);
  free (s->error_vertex);
  ps_error_free (s->bad_line);
  memset (s, 0, sizeof *s);
}

static char *
dup_string (const cJSON *o, const char *key)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive (o, key);
  return cJSON_IsString (it) ? xstrdup (it->valuestring) : NULL;
}

int
cli_solve_stream_line (const char *line, size_t len, void *ud)
{
  struct cli_solve_stream *s = ud;
  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' '))
    len--;
  if (len == 0)
    return 0;
  cJSON *o = cJSON_ParseWithLength (line, len);
  if (!cJSON_IsObject (o))
    {
      cJSON_Delete (o);
      return ps_error_set (&s->bad_line, 0, "the daemon sent a line that is not a JSON object: %.*s",
                           (int) (len > 200 ? 200 : len), line);
    }
  const cJSON *status = cJSON_GetObjectItemCaseSensitive (o, "status");
  const cJSON *result = cJSON_GetObjectItemCaseSensitive (o, "result");
  const cJSON *error = cJSON_GetObjectItemCaseSensitive (o, "error");
  if (cJSON_IsObject (status))
    cli_progress_update (s->progress, status);
  else if (cJSON_IsObject (result) && !s->finished)
    {
      s->finished = true;
      s->result_ref = dup_string (result, "ref");
      const cJSON *resp = cJSON_GetObjectItemCaseSensitive (result, "exporterResponse");
      s->image_name = dup_string (resp, "image.name");
      s->image_digest = dup_string (resp, "containerimage.digest");
      s->image_id = dup_string (resp, "containerimage.config.digest");
      if (cJSON_IsObject (resp))
        s->response_json = cJSON_Print (resp);
    }
  else if (cJSON_IsObject (error) && !s->finished)
    {
      s->finished = s->failed = true;
      s->error_message = dup_string (error, "message");
      s->error_vertex = dup_string (error, "vertex");
    }
  /* other keys: a newer daemon's additions, not ours to judge */
  cJSON_Delete (o);
  return 0;
}

void
cli_solve_stream_tick (void *ud)
{
  struct cli_solve_stream *s = ud;
  cli_progress_tick (s->progress);
}

int
cli_solve_stream_report (struct cli_solve_stream *s, int ret, const ps_error *err, const char *interrupted_msg)
{
  cli_progress_done (s->progress);
  if (cli_interrupted)
    {
      fprintf (stderr, "podsolve: %s\n", interrupted_msg);
      return CLI_EXIT_INTERRUPTED;
    }
  if (s->failed)
    {
      cli_progress_print_failure (s->progress, s->error_vertex, s->error_message);
      return CLI_EXIT_FAILED;
    }
  if (ret < 0)
    {
      cli_print_error (s->bad_line ? s->bad_line : err);
      return CLI_EXIT_FAILED;
    }
  if (!s->finished)
    {
      fprintf (stderr, "podsolve: the daemon closed the stream before the solve finished\n");
      return CLI_EXIT_FAILED;
    }
  return CLI_EXIT_OK;
}
