/* multipart.c — the streaming multipart/form-data parser (see multipart.h).
 *
 * States, one per kind of bytes the body holds (RFC 2046 §5.1.1):
 *
 *   MP_PREAMBLE   ignored until the first delimiter
 *   MP_AFTER      right after a delimiter: "--" closes the body, anything
 *                 else is the delimiter line's padding and CRLF
 *   MP_PADDING    blanks, then the line end
 *   MP_HEADERS    the part's header block, up to the empty line
 *   MP_BODY       part data up to the next delimiter
 *   MP_EPILOGUE   ignored, after the closing delimiter
 *   MP_FAILED     an error was reported; nothing more is accepted
 *
 * The delimiter is CRLF "--" boundary; the buffer starts with a virtual
 * CRLF so the first one needs no special case.  Bytes that could still be
 * the start of a delimiter are held back until the next chunk decides. */
#define _GNU_SOURCE
#include "common/multipart.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum mp_state
{
  MP_PREAMBLE,
  MP_AFTER,
  MP_PADDING,
  MP_HEADERS,
  MP_BODY,
  MP_EPILOGUE,
  MP_FAILED,
};

struct ps_multipart
{
  enum mp_state state;
  char *boundary;
  char *delim; /* "\r\n--" boundary */
  size_t dlen;
  ps_buf buf; /* bytes received and not consumed yet */
  size_t nparts;
  char *part_name; /* of the part being read, for messages */
  struct ps_multipart_callbacks cb;
  void *ud;
};

/* ---- header values: `type; name=value; name="quoted \" value"` --------------- */

static bool
is_tchar (unsigned char c)
{
  /* RFC 9110 token characters. */
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return true;
  return c != '\0' && strchr ("!#$%&'*+-.^_`|~", c) != NULL;
}

static const char *
skip_ows (const char *p)
{
  while (*p == ' ' || *p == '\t')
    p++;
  return p;
}

/* One parameter from `p` (at its ';'): *name and *value (malloc'd, value
   unquoted).  Returns the position after it, or NULL when malformed.  At
   the end of the value, returns p unchanged with *name NULL. */
static const char *
next_param (const char *p, char **name, char **value)
{
  *name = *value = NULL;
  p = skip_ows (p);
  if (*p == '\0')
    return p;
  if (*p != ';')
    return NULL;
  p = skip_ows (p + 1);
  if (*p == '\0')
    return p; /* a trailing ';' */
  const char *n = p;
  while (is_tchar ((unsigned char) *p))
    p++;
  if (p == n)
    return NULL;
  size_t nlen = (size_t) (p - n);
  p = skip_ows (p);
  if (*p != '=')
    return NULL;
  p = skip_ows (p + 1);
  ps_buf v = { 0 };
  if (*p == '"')
    {
      for (p++; *p != '"'; p++)
        {
          if (*p == '\0')
            {
              ps_buf_free (&v);
              return NULL;
            }
          if (*p == '\\' && p[1] != '\0')
            p++;
          ps_buf_append (&v, p, 1);
        }
      p++;
    }
  else
    {
      const char *s = p;
      while (*p && *p != ';' && *p != ' ' && *p != '\t')
        p++;
      if (p == s)
        {
          ps_buf_free (&v);
          return NULL;
        }
      ps_buf_append (&v, s, (size_t) (p - s));
    }
  *name = xstrndup (n, nlen);
  *value = ps_buf_steal (&v);
  return p;
}

char *
ps_multipart_boundary (const char *content_type, ps_error **err)
{
  const char *p = content_type ? strchr (content_type, ';') : NULL;
  char *boundary = NULL;
  while (p && *p)
    {
      char *name, *value;
      p = next_param (p, &name, &value);
      if (p == NULL)
        {
          free (boundary);
          return ps_error_set (err, 400, "malformed Content-Type parameters: %.200s", content_type), NULL;
        }
      if (name == NULL)
        break;
      if (strcasecmp (name, "boundary") == 0 && boundary == NULL)
        boundary = steal_pointer (&value);
      free (name);
      free (value);
    }
  if (boundary == NULL)
    return ps_error_set (err, 400, "multipart/form-data without a boundary"), NULL;
  size_t n = strlen (boundary);
  bool ok = n >= 1 && n <= PS_MULTIPART_MAX_BOUNDARY && boundary[n - 1] != ' ';
  for (size_t i = 0; ok && i < n; i++)
    ok = boundary[i] >= 0x20 && boundary[i] < 0x7f;
  if (!ok)
    {
      free (boundary);
      return ps_error_set (err, 400, "multipart/form-data boundary must be 1-%d printable characters",
                           PS_MULTIPART_MAX_BOUNDARY),
             NULL;
    }
  return boundary;
}

/* ---- the parser --------------------------------------------------------------- */

ps_multipart *
ps_multipart_new (const char *boundary, const struct ps_multipart_callbacks *cb, void *ud)
{
  ps_multipart *mp = xcalloc (1, sizeof *mp);
  mp->state = MP_PREAMBLE;
  mp->boundary = xstrdup (boundary);
  mp->delim = xasprintf ("\r\n--%s", boundary);
  mp->dlen = strlen (mp->delim);
  mp->cb = *cb;
  mp->ud = ud;
  ps_buf_append (&mp->buf, "\r\n", 2);
  return mp;
}

void
ps_multipart_free (ps_multipart *mp)
{
  if (mp == NULL)
    return;
  free (mp->boundary);
  free (mp->delim);
  free (mp->part_name);
  ps_buf_free (&mp->buf);
  free (mp);
}

static int
fail (ps_multipart *mp)
{
  mp->state = MP_FAILED;
  return -1;
}

/* After a delimiter candidate at `at` (buf + at + dlen onward): 1 it is a
   delimiter, -1 it is data (Go's mime/multipart rule), 0 more bytes
   needed to tell. */
static int
delimiter_ends_well (const ps_multipart *mp, size_t at)
{
  size_t rest = mp->buf.len - at - mp->dlen;
  const char *c = mp->buf.data + at + mp->dlen;
  if (rest == 0)
    return 0;
  if (c[0] == ' ' || c[0] == '\t' || c[0] == '\r' || c[0] == '\n')
    return 1;
  if (c[0] != '-')
    return -1;
  if (rest == 1)
    return 0;
  return c[1] == '-' ? 1 : -1;
}

/* Hand part data to the callback (the preamble is dropped). */
static int
emit (ps_multipart *mp, size_t from, size_t to, ps_error **err)
{
  if (mp->state != MP_BODY || to <= from)
    return 0;
  if (mp->cb.on_data (mp->ud, mp->buf.data + from, to - from, err) < 0)
    return fail (mp);
  return 0;
}

/* Parse one part's header block (lines, without the final empty line). */
static int
begin_part (ps_multipart *mp, const char *block, size_t len, ps_error **err)
{
  size_t idx = mp->nparts;
  for (size_t i = 0; i < len; i++)
    if (((unsigned char) block[i] < 0x20 && block[i] != '\t' && block[i] != '\r' && block[i] != '\n')
        || block[i] == 0x7f)
      return ps_error_set (err, 400, "multipart part %zu: control characters in its headers", idx + 1);

  cleanup_free char *text = xstrndup (block, len);
  cleanup_free char *disposition = NULL, *content_type = NULL;
  /* Lines; a line starting with a blank continues the previous one
     (obsolete folding), which the header value then simply contains. */
  char *line = text;
  while (line && *line)
    {
      char *end = strstr (line, "\r\n");
      while (end && (end[2] == ' ' || end[2] == '\t'))
        {
          end[0] = end[1] = ' ';
          end = strstr (end + 2, "\r\n");
        }
      if (end)
        *end = '\0';
      if (strpbrk (line, "\r\n"))
        return ps_error_set (err, 400, "multipart part %zu: header lines must end in CRLF", idx + 1);
      char *colon = strchr (line, ':');
      if (colon == NULL || colon == line)
        return ps_error_set (err, 400, "multipart part %zu: malformed header line \"%.100s\"", idx + 1, line);
      for (char *q = line; q < colon; q++)
        if (!is_tchar ((unsigned char) *q))
          return ps_error_set (err, 400, "multipart part %zu: malformed header line \"%.100s\"", idx + 1, line);
      *colon = '\0';
      char *value = (char *) skip_ows (colon + 1);
      size_t vlen = strlen (value);
      while (vlen > 0 && (value[vlen - 1] == ' ' || value[vlen - 1] == '\t'))
        value[--vlen] = '\0';
      char **slot = strcasecmp (line, "Content-Disposition") == 0 ? &disposition
                    : strcasecmp (line, "Content-Type") == 0       ? &content_type
                                                                   : NULL;
      if (slot && *slot)
        return ps_error_set (err, 400, "multipart part %zu: header %s is sent twice", idx + 1, line);
      if (slot)
        *slot = xstrdup (value);
      line = end ? end + 2 : NULL;
    }

  if (disposition == NULL)
    return ps_error_set (err, 400, "multipart part %zu has no Content-Disposition header (form-data; name=\"...\")",
                         idx + 1);
  const char *p = disposition;
  while (is_tchar ((unsigned char) *p))
    p++;
  if (p - disposition != 9 || strncasecmp (disposition, "form-data", 9) != 0)
    return ps_error_set (err, 400, "multipart part %zu: Content-Disposition \"%.100s\" is not form-data", idx + 1,
                         disposition);
  cleanup_free char *name = NULL, *filename = NULL;
  while (*p)
    {
      char *k, *v;
      const char *next = next_param (p, &k, &v);
      if (next == NULL)
        return ps_error_set (err, 400, "multipart part %zu: malformed Content-Disposition \"%.100s\"", idx + 1,
                             disposition);
      if (k == NULL)
        break;
      char **slot = strcasecmp (k, "name") == 0 ? &name : strcasecmp (k, "filename") == 0 ? &filename : NULL;
      if (slot && *slot)
        {
          free (k);
          free (v);
          return ps_error_set (err, 400, "multipart part %zu: Content-Disposition gives %s twice", idx + 1,
                               slot == &name ? "name" : "filename");
        }
      if (slot)
        *slot = steal_pointer (&v);
      free (k);
      free (v);
      p = next;
    }
  if (name == NULL)
    return ps_error_set (err, 400, "multipart part %zu has no name (Content-Disposition: form-data; name=\"...\")",
                         idx + 1);
  struct ps_multipart_part part = { .name = name, .filename = filename, .content_type = content_type, .index = idx };
  free (mp->part_name);
  mp->part_name = xstrdup (name);
  mp->nparts++;
  return mp->cb.on_begin (mp->ud, &part, err);
}

int
ps_multipart_feed (ps_multipart *mp, const void *data, size_t len, ps_error **err)
{
  if (mp->state == MP_FAILED)
    return ps_error_set (err, 400, "malformed multipart/form-data body");
  if (mp->state == MP_EPILOGUE)
    return 0;
  ps_buf_append (&mp->buf, data, len);
  size_t pos = 0;
  bool more = true;
  while (more)
    {
      size_t avail = mp->buf.len - pos;
      const char *b = mp->buf.data + pos;
      switch (mp->state)
        {
        case MP_PREAMBLE:
        case MP_BODY:
          {
            size_t from = pos, at = pos;
            for (;;)
              {
                const char *hit = memmem (mp->buf.data + at, mp->buf.len - at, mp->delim, mp->dlen);
                if (hit == NULL)
                  {
                    /* Keep what could be the start of a delimiter. */
                    size_t safe = mp->buf.len >= mp->dlen - 1 ? mp->buf.len - (mp->dlen - 1) : 0;
                    if (safe < from)
                      safe = from;
                    if (emit (mp, from, safe, err) < 0)
                      return -1;
                    pos = safe;
                    more = false;
                    break;
                  }
                at = (size_t) (hit - mp->buf.data);
                int ends = delimiter_ends_well (mp, at);
                if (ends < 0)
                  {
                    at++; /* part data that looks like a delimiter */
                    continue;
                  }
                if (emit (mp, from, at, err) < 0)
                  return -1;
                pos = at;
                if (ends == 0)
                  {
                    more = false;
                    break;
                  }
                if (mp->state == MP_BODY && mp->cb.on_end (mp->ud, err) < 0)
                  return fail (mp);
                pos = at + mp->dlen;
                mp->state = MP_AFTER;
                break;
              }
            break;
          }

        case MP_AFTER:
          if (avail == 0 || (b[0] == '-' && avail < 2))
            {
              more = false;
              break;
            }
          if (b[0] == '-' && b[1] == '-')
            {
              mp->state = MP_EPILOGUE;
              pos = mp->buf.len;
              more = false;
              break;
            }
          mp->state = MP_PADDING;
          break;

        case MP_PADDING:
          while (pos < mp->buf.len && (mp->buf.data[pos] == ' ' || mp->buf.data[pos] == '\t'))
            pos++;
          avail = mp->buf.len - pos;
          b = mp->buf.data + pos;
          if (avail == 0 || (avail == 1 && b[0] == '\r'))
            {
              more = false;
              break;
            }
          if (b[0] == '\n' || (b[0] == '\r' && b[1] == '\n'))
            {
              pos += b[0] == '\n' ? 1 : 2;
              mp->state = MP_HEADERS;
              break;
            }
          ps_error_set (err, 400, "malformed multipart/form-data body: the delimiter line --%.70s is followed by "
                                  "other characters",
                        mp->boundary);
          return fail (mp);

        case MP_HEADERS:
          {
            size_t hlen;
            if (avail >= 2 && b[0] == '\r' && b[1] == '\n')
              hlen = 0; /* no headers at all */
            else
              {
                const char *end = avail >= 4 ? memmem (b, avail, "\r\n\r\n", 4) : NULL;
                if (end == NULL)
                  {
                    if (avail > PS_MULTIPART_MAX_HEADER_BYTES)
                      {
                        ps_error_set (err, 413, "multipart part %zu: headers larger than %d bytes", mp->nparts + 1,
                                      PS_MULTIPART_MAX_HEADER_BYTES);
                        return fail (mp);
                      }
                    more = false;
                    break;
                  }
                hlen = (size_t) (end - b) + 2; /* keep the last line's CRLF */
              }
            if (hlen > PS_MULTIPART_MAX_HEADER_BYTES)
              {
                ps_error_set (err, 413, "multipart part %zu: headers larger than %d bytes", mp->nparts + 1,
                              PS_MULTIPART_MAX_HEADER_BYTES);
                return fail (mp);
              }
            if (begin_part (mp, b, hlen >= 2 ? hlen - 2 : 0, err) < 0)
              return fail (mp);
            pos += hlen + 2;
            mp->state = MP_BODY;
            /* The part's data starts here; the delimiter that ends it
               starts with CRLF, so an empty part is "\r\n--" at once. */
            break;
          }

        case MP_EPILOGUE:
          pos = mp->buf.len;
          more = false;
          break;

        case MP_FAILED:
          return -1;
        }
    }
  /* Drop what was consumed; what is left is at most a delimiter's length
     of data or one header block. */
  if (pos > 0)
    {
      memmove (mp->buf.data, mp->buf.data + pos, mp->buf.len - pos);
      mp->buf.len -= pos;
      mp->buf.data[mp->buf.len] = '\0';
    }
  return 0;
}

int
ps_multipart_finish (ps_multipart *mp, ps_error **err)
{
  switch (mp->state)
    {
    case MP_EPILOGUE:
      return 0;
    case MP_FAILED:
      return ps_error_set (err, 400, "malformed multipart/form-data body");
    case MP_PREAMBLE:
      fail (mp);
      return ps_error_set (err, 400, "multipart/form-data body without any --%.70s delimiter", mp->boundary);
    case MP_BODY:
      fail (mp);
      return ps_error_set (err, 400, "multipart/form-data body ends inside part \"%.100s\" (no closing --%.70s-- line)",
                           mp->part_name ? mp->part_name : "?", mp->boundary);
    default:
      fail (mp);
      return ps_error_set (err, 400, "multipart/form-data body ends inside a delimiter line or part headers (no "
                                     "closing --%.70s-- line)",
                           mp->boundary);
    }
}
