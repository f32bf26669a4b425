/* jsonmessage.c — the Podman-compatible /build stream.
 *
 * Podman compat sends, in order: buildah's own lines as {"stream"}, then
 * {"aux":{"ID":"sha256:…"}}, {"stream":"Successfully built <12 hex>\n"} and
 * one {"stream":"Successfully tagged <t>\n"} per t as the client sent it
 * (docker-compose v1 scans for "Successfully built", the docker CLI and
 * compose v2 read aux.ID).  libpod sends no aux; its client takes the last
 * bare-ID stream line.  Errors after the 200 are
 * {"errorDetail":{"code":N,"message":…},"error":…}; the docker CLI exits
 * with `code`. */
#include "schema/jsonmessage.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void
schema_jsonmessage_stream (ps_buf *out, const char *text, size_t len)
{
  cleanup_free char *clean = schema_utf8_sanitize (text, len);
  cJSON *o = cJSON_CreateObject ();
  cJSON_AddStringToObject (o, "stream", clean);
  schema_json_append_line (out, o);
  cJSON_Delete (o);
}

struct jsonmessage_encoder
{
  struct event_encoder base;
  bool compat;
  struct quiet_hold hold;
};

static void
encode_result (struct jsonmessage_encoder *o, const struct solver_event *ev, ps_buf *out)
{
  const char *id = ev->image_id ? ev->image_id : "";
  if (o->hold.quiet)
    {
      cleanup_free char *line = xasprintf ("%s\n", id);
      schema_jsonmessage_stream (out, line, strlen (line));
      return;
    }
  if (!o->compat)
    return; /* buildah's own last line already was the bare ID */

  cJSON *aux = cJSON_CreateObject ();
  cJSON *inner = cJSON_AddObjectToObject (aux, "aux");
  cleanup_free char *full = xasprintf ("sha256:%s", id);
  cJSON_AddStringToObject (inner, "ID", full);
  schema_json_append_line (out, aux);
  cJSON_Delete (aux);

  cleanup_free char *built = xasprintf ("Successfully built %.12s\n", id);
  schema_jsonmessage_stream (out, built, strlen (built));
  for (char **t = ev->tags; t && *t; t++)
    {
      cleanup_free char *tagged = xasprintf ("Successfully tagged %s\n", *t);
      schema_jsonmessage_stream (out, tagged, strlen (tagged));
    }
}

static void
jsonmessage_encode (struct event_encoder *enc, const struct solver_event *ev, ps_buf *out)
{
  struct jsonmessage_encoder *o = (struct jsonmessage_encoder *) enc;
  ps_buf *progress = quiet_hold_progress (&o->hold, out);
  switch (ev->kind)
    {
    case SOLVER_EV_VERTEX:
    case SOLVER_EV_TEXT:
    case SOLVER_EV_WARNING:
      if (ev->text)
        schema_jsonmessage_stream (progress, ev->text, strlen (ev->text));
      return;
    case SOLVER_EV_LOG:
      schema_jsonmessage_stream (progress, ev->data, ev->len);
      return;
    case SOLVER_EV_STATUS:
      return;
    case SOLVER_EV_RESULT:
      quiet_hold_drop (&o->hold);
      encode_result (o, ev, out);
      return;
    case SOLVER_EV_ERROR:
      quiet_hold_fail (&o->hold, ev, false, out);
      return;
    }
}

static void
jsonmessage_free (struct event_encoder *enc)
{
  struct jsonmessage_encoder *o = (struct jsonmessage_encoder *) enc;
  ps_buf_free (&o->hold.held);
  free (o);
}

static const struct event_encoder_ops jsonmessage_ops = {
  .encode = jsonmessage_encode,
  .free = jsonmessage_free,
};

struct event_encoder *
schema_jsonmessage_encoder_new (bool compat, bool quiet)
{
  struct jsonmessage_encoder *o = xcalloc (1, sizeof *o);
  o->base.ops = &jsonmessage_ops;
  o->compat = compat;
  o->hold.quiet = quiet;
  return &o->base;
}
