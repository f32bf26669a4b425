/* apierror.c — Podman's error body.  Docker clients read "message"; Podman's
 * clients read all three. */
#include "schema/apierror.h"

#include <cjson/cJSON.h>
#include <string.h>

char *
schema_api_error_json (int status, const char *cause, const char *message)
{
  cJSON *o = cJSON_CreateObject ();
  if (cause == NULL)
    {
      /* The innermost cause of "a: b: c" is "c". */
      const char *last = message;
      for (const char *p = message; p && (p = strstr (p, ": ")) != NULL; p += 2)
        last = p + 2;
      cause = last ? last : "";
    }
  cJSON_AddStringToObject (o, "cause", cause);
  cJSON_AddStringToObject (o, "message", message ? message : "");
  cJSON_AddNumberToObject (o, "response", status);
  char *s = cJSON_PrintUnformatted (o);
  cJSON_Delete (o);
  char *out = xasprintf ("%s\n", s);
  cJSON_free (s);
  return out;
}
