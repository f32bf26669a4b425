/* log.h — timestamped logging to stderr. */
#ifndef PS_LOG_H
#define PS_LOG_H

#include "ps.h"

enum ps_log_level
{
  PS_LOG_ERROR = 0,
  PS_LOG_WARN,
  PS_LOG_INFO,
  PS_LOG_DEBUG,
};

void ps_log_set_level (enum ps_log_level level);
int ps_log_parse_level (const char *name, enum ps_log_level *out);
bool ps_log_enabled (enum ps_log_level level);
/* "text" (the default: "TIME LEVEL msg") or "json" (one object a line:
   {"time","level","msg"}); -1 for anything else. */
int ps_log_set_format (const char *name);
void ps_log (enum ps_log_level level, const char *fmt, ...) PS_PRINTF (2, 3);

#define ps_error_log(...) ps_log (PS_LOG_ERROR, __VA_ARGS__)
#define ps_warn(...) ps_log (PS_LOG_WARN, __VA_ARGS__)
#define ps_info(...) ps_log (PS_LOG_INFO, __VA_ARGS__)
#define ps_debug(...) ps_log (PS_LOG_DEBUG, __VA_ARGS__)

#endif
