/* trace.c — the BuildKit trace encoder.  One event becomes one
 * {"id":"moby.buildkit.trace","aux":"<base64>"} line around the
 * StatusResponse schema/status_response.c builds (the bytes Control.Status
 * sends over gRPC). */
#include "schema/trace.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "schema/jsonline.h"
#include "schema/status_response.h"

struct trace_encoder
{
  struct event_encoder base;
  struct quiet_hold hold;
};

static void
trace_encode (struct event_encoder *base, const struct solver_event *ev, ps_buf *out)
{
  struct trace_encoder *enc = (struct trace_encoder *) base;
  if (ev->kind == SOLVER_EV_VERTEX || ev->kind == SOLVER_EV_STATUS || ev->kind == SOLVER_EV_LOG
      || ev->kind == SOLVER_EV_WARNING)
    {
      size_t len = 0;
      cleanup_free uint8_t *pb = schema_status_response_pack (ev, &len);
      cleanup_free char *b64 = ps_base64_encode (pb, len);
      cJSON *o = cJSON_CreateObject ();
      cJSON_AddStringToObject (o, "id", "moby.buildkit.trace");
      cJSON_AddStringToObject (o, "aux", b64);
      schema_json_append_crlf_line (quiet_hold_progress (&enc->hold, out), o);
      cJSON_Delete (o);
      return;
    }
  if (ev->kind == SOLVER_EV_RESULT)
    {
      quiet_hold_drop (&enc->hold);
      cleanup_free char *id = xasprintf ("sha256:%s", ev->image_id ? ev->image_id : "");
      if (enc->hold.quiet)
        {
          cleanup_free char *line = xasprintf ("%s\n", id);
          cJSON *o = cJSON_CreateObject ();
          cJSON_AddStringToObject (o, "stream", line);
          schema_json_append_crlf_line (out, o);
          cJSON_Delete (o);
          return;
        }
      cJSON *o = cJSON_CreateObject ();
      cJSON_AddStringToObject (o, "id", "moby.image.id");
      cJSON *aux = cJSON_AddObjectToObject (o, "aux");
      cJSON_AddStringToObject (aux, "ID", id);
      schema_json_append_crlf_line (out, o);
      cJSON_Delete (o);
      for (char **t = ev->tags; t && *t; t++)
        {
          cleanup_free char *line = xasprintf ("Successfully tagged %s\n", *t);
          cJSON *s = cJSON_CreateObject ();
          cJSON_AddStringToObject (s, "stream", line);
          schema_json_append_crlf_line (out, s);
          cJSON_Delete (s);
        }
      return;
    }
  if (ev->kind == SOLVER_EV_ERROR)
    quiet_hold_fail (&enc->hold, ev, true, out);
}

static void
trace_free (struct event_encoder *base)
{
  struct trace_encoder *enc = (struct trace_encoder *) base;
  ps_buf_free (&enc->hold.held);
  free (enc);
}

static const struct event_encoder_ops trace_ops = {
  .encode = trace_encode,
  .free = trace_free,
};

struct event_encoder *
schema_trace_encoder_new (bool quiet)
{
  struct trace_encoder *enc = xcalloc (1, sizeof *enc);
  enc->base.ops = &trace_ops;
  enc->hold.quiet = quiet;
  return &enc->base;
}
