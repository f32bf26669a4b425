/* ctrfilter.c — containerd filter expressions (see ctrfilter.h). */
#include "schema/ctrfilter.h"

#include <stdlib.h>
#include <string.h>

#include "common/regexp.h"

enum ctr_op
{
  OP_PRESENT,
  OP_EQ,
  OP_NE,
  OP_MATCH,
};

struct selector
{
  ps_strv path;
  enum ctr_op op;
  char *value;
  ps_regexp *re;
};

struct conjunction
{
  struct selector *sel;
  size_t n;
};

struct ctr_filter
{
  struct conjunction *any;
  size_t n;
};

static void
skip_space (const char **p)
{
  while (**p == ' ' || **p == '\t')
    (*p)++;
}

/* A double-quoted string with Go's common escapes; *p is past the quote. */
static char *
parse_quoted (const char **p)
{
  ps_buf b = { 0 };
  const char *s = *p + 1;
  while (*s && *s != '"')
    {
      if (*s == '\\' && s[1])
        {
          s++;
          char c = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
          ps_buf_append (&b, &c, 1);
        }
      else
        ps_buf_append (&b, s, 1);
      s++;
    }
  if (*s != '"')
    {
      ps_buf_free (&b);
      return NULL;
    }
  *p = s + 1;
  ps_buf_append (&b, "", 1);
  return b.data;
}

static bool
field_char (char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static ps_regexp *
compile (const char *value, const char **why)
{
  size_t len = strlen (value), n = 0;
  uint32_t *runes = xcalloc (len + 1, sizeof *runes);
  for (size_t i = 0; i < len;)
    {
      size_t w = 1;
      runes[n++] = ps_decode_rune ((const unsigned char *) value + i, len - i, &w);
      i += w;
    }
  ps_regexp *re = ps_regexp_compile (runes, n, why);
  free (runes);
  return re;
}

static void
selector_free (struct selector *s)
{
  ps_strv_free (&s->path);
  free (s->value);
  if (s->re)
    ps_regexp_free (s->re);
}

static int
parse_selector (const char **p, struct selector *s, const char **why)
{
  memset (s, 0, sizeof *s);
  for (;;)
    {
      skip_space (p);
      if (**p == '"')
        {
          char *q = parse_quoted (p);
          if (q == NULL)
            return (*why = "unterminated quoted field"), -1;
          ps_strv_push (&s->path, q);
          free (q);
        }
      else
        {
          const char *start = *p;
          while (field_char (**p))
            (*p)++;
          if (*p == start)
            return (*why = "expected a field name"), -1;
          cleanup_free char *f = xstrndup (start, (size_t) (*p - start));
          ps_strv_push (&s->path, f);
        }
      if (**p != '.')
        break;
      (*p)++;
    }
  skip_space (p);
  if (**p == '\0' || **p == ',')
    return 0; /* OP_PRESENT */
  if (strncmp (*p, "==", 2) == 0)
    s->op = OP_EQ;
  else if (strncmp (*p, "!=", 2) == 0)
    s->op = OP_NE;
  else if (strncmp (*p, "~=", 2) == 0)
    s->op = OP_MATCH;
  else
    return (*why = "expected ==, != or ~= after the field"), -1;
  *p += 2;
  skip_space (p);
  if (**p == '"')
    {
      s->value = parse_quoted (p);
      if (s->value == NULL)
        return (*why = "unterminated quoted value"), -1;
    }
  else
    {
      const char *start = *p;
      while (**p && **p != ',' && **p != ' ' && **p != '\t')
        (*p)++;
      s->value = xstrndup (start, (size_t) (*p - start));
    }
  skip_space (p);
  if (**p != '\0' && **p != ',')
    return (*why = "unexpected text after the value"), -1;
  if (s->op == OP_MATCH && (s->re = compile (s->value, why)) == NULL)
    return -1;
  return 0;
}

void
schema_ctr_filter_free (ctr_filter *f)
{
  if (f == NULL)
    return;
  for (size_t i = 0; i < f->n; i++)
    {
      for (size_t k = 0; k < f->any[i].n; k++)
        selector_free (&f->any[i].sel[k]);
      free (f->any[i].sel);
    }
  free (f->any);
  free (f);
}

int
schema_ctr_filter_parse (char *const *exprs, size_t n, ctr_filter **out, ps_error **err)
{
  *out = NULL;
  ctr_filter *f = xcalloc (1, sizeof *f);
  f->any = xcalloc (n + 1, sizeof *f->any);
  for (size_t i = 0; i < n; i++)
    {
      const char *p = exprs[i];
      skip_space (&p);
      if (*p == '\0')
        continue;
      struct conjunction *c = &f->any[f->n++];
      for (;;)
        {
          c->sel = xrealloc (c->sel, (c->n + 1) * sizeof *c->sel);
          const char *why = NULL;
          if (parse_selector (&p, &c->sel[c->n], &why) < 0)
            {
              selector_free (&c->sel[c->n]);
              ps_error_set (err, 400, "filter \"%s\": %s", exprs[i], why ? why : "syntax error");
              schema_ctr_filter_free (f);
              return -1;
            }
          c->n++;
          if (*p != ',')
            break;
          p++;
        }
    }
  if (f->n == 0)
    schema_ctr_filter_free (f);
  else
    *out = f;
  return 0;
}

static bool
selector_match (const struct selector *s, ctr_filter_field_fn field, void *obj)
{
  const char *value = NULL;
  bool present = field (obj, (const char *const *) s->path.v, s->path.n, &value);
  if (value == NULL)
    value = "";
  switch (s->op)
    {
    case OP_PRESENT:
      return present;
    case OP_EQ:
      return present && strcmp (value, s->value) == 0;
    case OP_NE:
      return strcmp (value, s->value) != 0;
    case OP_MATCH:
      return ps_regexp_match (s->re, value, strlen (value));
    }
  return false;
}

bool
schema_ctr_filter_match (const ctr_filter *f, ctr_filter_field_fn field, void *obj)
{
  if (f == NULL)
    return true;
  for (size_t i = 0; i < f->n; i++)
    {
      bool all = true;
      for (size_t k = 0; k < f->any[i].n && all; k++)
        all = selector_match (&f->any[i].sel[k], field, obj);
      if (all)
        return true;
    }
  return false;
}
