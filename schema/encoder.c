/* encoder.c — what the /build encoders share: the quiet hold and the
 * errorDetail line that ends a failed build. */
#include "schema/encoder.h"

#include <cjson/cJSON.h>
#include <string.h>

#include "schema/jsonline.h"

ps_buf *
quiet_hold_progress (struct quiet_hold *h, ps_buf *out)
{
  return h->quiet ? &h->held : out;
}

void
quiet_hold_drop (struct quiet_hold *h)
{
  ps_buf_free (&h->held);
}


void
quiet_hold_fail (struct quiet_hold *h, const struct solver_event *ev, bool crlf, ps_buf *out)
{
  if (h->held.len)
    ps_buf_append (out, h->held.data, h->held.len);
  ps_buf_free (&h->held);

  const char *msg = ev->error ? ev->error : "build failed";
  cleanup_free char *clean = schema_utf8_sanitize (msg, strlen (msg));
  cJSON *o = cJSON_CreateObject ();
  cJSON *detail = cJSON_AddObjectToObject (o, "errorDetail");
  if (ev->exit_code > 0)
    cJSON_AddNumberToObject (detail, "code", ev->exit_code);
  cJSON_AddStringToObject (detail, "message", clean);
  cJSON_AddStringToObject (o, "error", clean);
  if (crlf)
    schema_json_append_crlf_line (out, o);
  else
    schema_json_append_line (out, o);
  cJSON_Delete (o);
}
