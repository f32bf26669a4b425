/* apierror.c — Podman's error body.  Docker clients read "message"; Podman's
 * clients read all three. */
#include "schema/apierror.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <string.h>

#include "schema/jsonline.h"

char *
schema_api_error_json (int status, const char *cause, const char *message)
{
  /* A message may quote what the client sent (`request body is not valid
     JSON: ... at "<its bytes>"`), and a JSON body must be UTF-8 (RFC 8259
     §8.1; cJSON copies bytes as they are): invalid sequences become
     U+FFFD, as in every stream podsolved writes. */
  message = message ? message : "";
  cleanup_free char *clean_message = schema_utf8_sanitize (message, strlen (message));
  cleanup_free char *clean_cause = cause ? schema_utf8_sanitize (cause, strlen (cause)) : NULL;
  message = clean_message;
  cause = clean_cause;
  cJSON *o = cJSON_CreateObject ();
  if (cause == NULL)
    {
      /* The innermost cause of "a: b: c" is "c" — splitting only at ": "
         outside quotes and parentheses, so "x (supported: a, b)" stays whole. */
      const char *last = message;
      int depth = 0;
      bool quoted = false;
      for (const char *p = last; *p; p++)
        {
          if (*p == '\\' && quoted && p[1])
            p++;
          else if (*p == '"')
            quoted = !quoted;
          else if (!quoted && *p == '(')
            depth++;
          else if (!quoted && *p == ')' && depth > 0)
            depth--;
          else if (!quoted && depth == 0 && p[0] == ':' && p[1] == ' ')
            last = p + 2;
        }
      cause = last;
    }
  cJSON_AddStringToObject (o, "cause", cause);
  cJSON_AddStringToObject (o, "message", message);
  cJSON_AddNumberToObject (o, "response", status);
  char *s = cJSON_PrintUnformatted (o);
  cJSON_Delete (o);
  char *out = xasprintf ("%s\n", s);
  cJSON_free (s);
  return out;
}
