/* log.c — timestamped log lines on stderr, one write per line so lines
 * from concurrent threads never interleave. */
#define _GNU_SOURCE
#include "log.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static enum ps_log_level current_level = PS_LOG_INFO;
static bool json_lines; /* --log-format json */

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
ps_log_set_level (enum ps_log_level level)
{
  current_level = level;
}

int
ps_log_parse_level (const char *name, enum ps_log_level *out)
{
  for (size_t i = 0; i < ARRAY_SIZE (level_names); i++)
    if (strcasecmp (name, level_names[i]) == 0)
      {
        *out = (enum ps_log_level) i;
        return 0;
      }
  if (strcasecmp (name, "warning") == 0)
    {
      *out = PS_LOG_WARN;
      return 0;
    }
  return -1;
}

int
ps_log_set_format (const char *name)
{
  if (strcmp (name, "text") == 0)
    json_lines = false;
  else if (strcmp (name, "json") == 0)
    json_lines = true;
  else
    return -1;
  return 0;
}

bool
ps_log_enabled (enum ps_log_level level)
{
  return level <= current_level;
}

void
ps_log (enum ps_log_level level, const char *fmt, ...)
{
  if (level > current_level)
    return;
  char ts[48];
  ps_format_rfc3339 (ps_now_ns (), ts, sizeof ts);
  ts[23] = 'Z'; /* milliseconds are enough in a log */
  ts[24] = '\0';
  char *msg = NULL;
  va_list ap;
  va_start (ap, fmt);
  if (vasprintf (&msg, fmt, ap) < 0)
    {
      va_end (ap);
      return;
    }
  va_end (ap);
  char *line = NULL;
  int n = -1;
  if (json_lines)
    {
      /* One object a line, for journald, Loki and jq: time, level, msg. */
      cJSON *o = cJSON_CreateObject ();
      cJSON_AddStringToObject (o, "time", ts);
      cJSON_AddStringToObject (o, "level", level_names[level]);
      cJSON_AddStringToObject (o, "msg", msg);
      char *j = cJSON_PrintUnformatted (o);
      cJSON_Delete (o);
      if (j)
        n = asprintf (&line, "%s\n", j);
      free (j);
    }
  else
    n = asprintf (&line, "%s %-5s %s\n", ts, level_names[level], msg);
  if (n > 0)
    {
      ssize_t ignored = write (STDERR_FILENO, line, (size_t) n);
      (void) ignored;
    }
  free (line);
  free (msg);
}
