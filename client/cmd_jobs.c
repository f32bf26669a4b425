/* cmd_jobs.c — the commands about solves already started: `podsolve ls`
 * (GET /solve), `podsolve status REF` (GET /solve/{ref}/status, the stream
 * replayed from its start) and `podsolve cancel REF`. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"
#include "client/http.h"
#include "client/progress.h"
#include "client/solve_stream.h"

enum
{
  OPT_PROGRESS = 0x100,
  OPT_JSON,
};

static const char *
json_string (const cJSON *o, const char *key, const char *fallback)
{
  const cJSON *it = cJSON_GetObjectItemCaseSensitive (o, key);
  return cJSON_IsString (it) ? it->valuestring : fallback;
}

/* "5 seconds ago", as docker ps shows ages. */
static void
format_age (int64_t then_ns, char *out, size_t outlen)
{
  if (then_ns == 0)
    {
      snprintf (out, outlen, "-");
      return;
    }
  int64_t s = (ps_now_ns () - then_ns) / 1000000000LL;
  if (s < 0)
    s = 0;
  if (s < 60)
    snprintf (out, outlen, "%lld seconds ago", (long long) s);
  else if (s < 3600)
    snprintf (out, outlen, "%lld minutes ago", (long long) (s / 60));
  else if (s < 86400)
    snprintf (out, outlen, "%lld hours ago", (long long) (s / 3600));
  else
    snprintf (out, outlen, "%lld days ago", (long long) (s / 86400));
}

static void
format_duration (const cJSON *job, char *out, size_t outlen)
{
  const cJSON *d = cJSON_GetObjectItemCaseSensitive (job, "durationSeconds");
  int64_t started = cli_time_parse (json_string (job, "started", NULL));
  if (cJSON_IsNumber (d))
    snprintf (out, outlen, "%.1fs", d->valuedouble);
  else if (started)
    snprintf (out, outlen, "%.1fs", (double) (ps_now_ns () - started) / 1e9);
  else
    snprintf (out, outlen, "-");
}

/* Print the usage error, or `help` when asked; returns the exit status or
   -1 to go on. */
static int
common_opt (int c, const char *help, struct cli_global *g)
{
  switch (c)
    {
    case CLI_OPT_HOST:
      g->host = optarg;
      return -1;
    case 'h':
      fputs (help, stdout);
      return CLI_EXIT_OK;
    default:
      fputs (help, stderr);
      return CLI_EXIT_USAGE;
    }
}

static int
fail (cli_http *h, ps_error *err, const char *what)
{
  ps_error_wrap (&err, "%s", what);
  cli_print_error (err);
  ps_error_free (err);
  cli_http_free (h);
  return cli_interrupted ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FAILED;
}

/* ---- ls -------------------------------------------------------------------------- */

static const char ls_help[] = "Usage: podsolve ls [-q] [--json]\n\n"
                              "List the solves podsolved remembers (running ones, and finished ones until they\n"
                              "expire).\n\n"
                              "  -q, --quiet   print the refs only\n"
                              "      --json    print the daemon's JSON as it is\n";

int
cmd_ls (struct cli_global *g, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "quiet", no_argument, NULL, 'q' },
    { "json", no_argument, NULL, OPT_JSON },
    { "host", required_argument, NULL, CLI_OPT_HOST },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  bool quiet = false, json = false;
  int c;
  while ((c = getopt_long (argc, argv, "qh", longopts, NULL)) != -1)
    {
      if (c == 'q')
        quiet = true;
      else if (c == OPT_JSON)
        json = true;
      else if ((c = common_opt (c, ls_help, g)) >= 0)
        return c;
    }
  if (optind != argc)
    {
      fputs (ls_help, stderr);
      return CLI_EXIT_USAGE;
    }
  ps_error *err = NULL;
  cli_http *h = cli_http_new (g->host, &err);
  ps_buf body = { 0 };
  if (h == NULL || cli_http_call (h, "GET", "/solve", &body, &err) < 0)
    return fail (h, err, "ls");
  if (json)
    {
      printf ("%s%s", body.data, body.len && body.data[body.len - 1] == '\n' ? "" : "\n");
      ps_buf_free (&body);
      cli_http_free (h);
      return CLI_EXIT_OK;
    }
  cJSON *jobs = cJSON_ParseWithLength (body.data, body.len);
  ps_buf_free (&body);
  if (!cJSON_IsArray (jobs))
    {
      cJSON_Delete (jobs);
      ps_error_set (&err, 0, "GET /solve: the answer is not a JSON array");
      return fail (h, err, "ls");
    }
  /* Columns as wide as their longest value (a 64-hex ref, a long image
     name), so rows stay aligned. */
  int wref = 3, wname = 4;
  const cJSON *job;
  cJSON_ArrayForEach (job, jobs)
    {
      int r = (int) strlen (json_string (job, "ref", "?")), n = (int) strlen (json_string (job, "image", "-"));
      wref = r > wref ? r : wref;
      wname = n > wname ? n : wname;
    }
  if (!quiet)
    printf ("%-*s  %-*s  %-10s %-16s %-9s %s\n", wref, "REF", wname, "NAME", "STATE", "CREATED", "DURATION",
            "ERROR");
  cJSON_ArrayForEach (job, jobs)
    {
      const char *ref = json_string (job, "ref", "?");
      if (quiet)
        {
          printf ("%s\n", ref);
          continue;
        }
      char age[48], duration[32];
      format_age (cli_time_parse (json_string (job, "created", NULL)), age, sizeof age);
      format_duration (job, duration, sizeof duration);
      cleanup_free char *error = xstrdup (json_string (job, "error", ""));
      for (char *p = error; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
          *p = ' ';
      printf ("%-*s  %-*s  %-10s %-16s %-9s %.80s\n", wref, ref, wname, json_string (job, "image", "-"),
              json_string (job, "state", "?"), age, duration, error);
    }
  cJSON_Delete (jobs);
  cli_http_free (h);
  return CLI_EXIT_OK;
}

/* ---- status ------------------------------------------------------------------------ */

static const char status_help[] = "Usage: podsolve status [--progress MODE] REF\n\n"
                                  "Show the progress of solve REF from its start, then follow it until it ends.\n"
                                  "Exits like podsolve build: 0 when the solve succeeded, 1 when it failed.\n"
                                  "Ctrl-C detaches; the solve goes on.\n\n"
                                  "      --progress MODE  auto, tty, plain, rawjson or quiet (default auto)\n";

int
cmd_status (struct cli_global *g, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "progress", required_argument, NULL, OPT_PROGRESS },
    { "host", required_argument, NULL, CLI_OPT_HOST },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  enum cli_progress_mode mode = CLI_PROGRESS_AUTO;
  ps_error *err = NULL;
  int c;
  while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1)
    {
      if (c == OPT_PROGRESS)
        {
          if (cli_progress_parse_mode (optarg, &mode, &err) < 0)
            {
              cli_print_error (err);
              ps_error_free (err);
              return CLI_EXIT_USAGE;
            }
        }
      else if ((c = common_opt (c, status_help, g)) >= 0)
        return c;
    }
  if (optind + 1 != argc)
    {
      fputs (status_help, stderr);
      return CLI_EXIT_USAGE;
    }
  cli_http *h = cli_http_new (g->host, &err);
  if (h == NULL)
    return fail (h, err, "status");
  cleanup_free char *eref = cli_http_escape (argv[optind]);
  cleanup_free char *path = xasprintf ("/solve/%s/status", eref);
  cli_progress *progress = cli_progress_new (mode, stderr);
  struct cli_solve_stream s;
  cli_solve_stream_init (&s, progress);
  struct cli_http_stream hs = { .on_line = cli_solve_stream_line, .on_tick = cli_solve_stream_tick, .ud = &s };
  int ret = cli_http_stream (h, "GET", path, NULL, 0, &hs, &err);
  if (err)
    ps_error_wrap (&err, "status");
  int code = cli_solve_stream_report (&s, ret, err, "detached; the solve goes on (podsolve cancel stops it)");
  ps_error_free (err);
  free (hs.solve_ref);
  cli_solve_stream_free (&s);
  cli_progress_free (progress);
  cli_http_free (h);
  return code;
}

/* ---- cancel ------------------------------------------------------------------------ */

static const char cancel_help[] = "Usage: podsolve cancel REF\n\n"
                                  "Cancel solve REF and wait until its builder has stopped.  A solve that already\n"
                                  "ended is left as it is; its state is printed.\n";

int
cmd_cancel (struct cli_global *g, int argc, char **argv)
{
  static const struct option longopts[] = {
    { "host", required_argument, NULL, CLI_OPT_HOST },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long (argc, argv, "h", longopts, NULL)) != -1)
    if ((c = common_opt (c, cancel_help, g)) >= 0)
      return c;
  if (optind + 1 != argc)
    {
      fputs (cancel_help, stderr);
      return CLI_EXIT_USAGE;
    }
  ps_error *err = NULL;
  cli_http *h = cli_http_new (g->host, &err);
  if (h == NULL)
    return fail (h, err, "cancel");
  cleanup_free char *eref = cli_http_escape (argv[optind]);
  cleanup_free char *path = xasprintf ("/solve/%s/cancel", eref);
  ps_buf body = { 0 };
  if (cli_http_call (h, "POST", path, &body, &err) < 0)
    return fail (h, err, "cancel");
  cJSON *job = cJSON_ParseWithLength (body.data, body.len);
  ps_buf_free (&body);
  const char *state = json_string (job, "state", "unknown");
  if (strcmp (state, "cancelled") == 0)
    printf ("%s cancelled\n", argv[optind]);
  else
    printf ("%s had already ended: %s\n", argv[optind], state);
  cJSON_Delete (job);
  cli_http_free (h);
  return CLI_EXIT_OK;
}
