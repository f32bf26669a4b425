/* jsonline.c — JSON lines as Go's encoding/json writes them (see jsonline.h). */
#include "schema/jsonline.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

char *
schema_utf8_sanitize (const char *data, size_t len)
{
  ps_buf b = { 0 };
  const unsigned char *s = (const unsigned char *) data;
  static const char replacement[] = "\xef\xbf\xbd";
  size_t i = 0;
  while (i < len)
    {
      unsigned char c = s[i];
      size_t n = 0;
      if (c >= 0x01 && c < 0x80)
        n = 1;
      else if (c >= 0xc2 && c <= 0xdf)
        n = 2;
      else if (c >= 0xe0 && c <= 0xef)
        n = 3;
      else if (c >= 0xf0 && c <= 0xf4)
        n = 4;
      bool ok = n > 0 && i + n <= len;
      for (size_t k = 1; ok && k < n; k++)
        if ((s[i + k] & 0xc0) != 0x80)
          ok = false;
      /* Overlong and surrogate forms. */
      if (ok && n == 3 && ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] >= 0xa0)))
        ok = false;
      if (ok && n == 4 && ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] >= 0x90)))
        ok = false;
      if (ok)
        {
          ps_buf_append (&b, s + i, n);
          i += n;
        }
      else
        {
          ps_buf_append (&b, replacement, 3);
          i++;
        }
    }
  return ps_buf_steal (&b);
}

/* Print `o` compactly the way Go's encoding/json does: '<', '>' and '&'
   escaped (they only ever occur inside strings here). */
void
schema_json_append_line (ps_buf *out, const cJSON *o)
{
  char *s = cJSON_PrintUnformatted (o);
  for (const char *p = s; *p; p++)
    {
      if (*p == '<')
        ps_buf_puts (out, "\\u003c");
      else if (*p == '>')
        ps_buf_puts (out, "\\u003e");
      else if (*p == '&')
        ps_buf_puts (out, "\\u0026");
      else
        ps_buf_append (out, p, 1);
    }
  ps_buf_puts (out, "\n");
  cJSON_free (s);
}

void
schema_json_append_crlf_line (ps_buf *out, const cJSON *o)
{
  schema_json_append_line (out, o);
  /* schema_json_append_line wrote "\n". */
  out->data[out->len - 1] = '\r';
  ps_buf_puts (out, "\n");
}
