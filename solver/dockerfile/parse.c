/* parse.c — a Dockerfile's structure, as BuildKit's parser reads it, and
 * the buildah dialect check (see parse.h). */
#define _GNU_SOURCE
#include "solver/dockerfile/parse.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- lines ------------------------------------------------------------------------- */

struct lines
{
  char **v; /* each without its "\n" (and a "\r" before it) */
  size_t n;
};

static void
lines_split (const char *text, size_t len, struct lines *out)
{
  size_t cap = 0;
  for (size_t at = 0; at < len;)
    {
      const char *nl = memchr (text + at, '\n', len - at);
      size_t end = nl ? (size_t) (nl - text) : len;
      size_t l = end - at;
      if (l > 0 && text[at + l - 1] == '\r')
        l--;
      if (out->n == cap)
        {
          cap = cap ? cap * 2 : 64;
          out->v = xrealloc (out->v, cap * sizeof *out->v);
        }
      out->v[out->n++] = xstrndup (text + at, l);
      at = end + 1;
    }
}

static void
lines_free (struct lines *l)
{
  for (size_t i = 0; i < l->n; i++)
    free (l->v[i]);
  free (l->v);
}

static const char *
skip_blank (const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

static bool
is_comment (const char *line)
{
  return *skip_blank (line) == '#';
}

static bool
is_blank (const char *line)
{
  return *skip_blank (line) == '\0';
}

/* Drop a trailing escape character (and blanks after it): returns true
   when the line continues on the next one. */
static bool
trim_continuation (char *line, char escape)
{
  size_t n = strlen (line);
  while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
    n--;
  if (n == 0 || line[n - 1] != escape)
    return false;
  line[n - 1] = '\0';
  return true;
}

/* ---- directives -------------------------------------------------------------------- */

/* "# name = value" at the top of the file; false for anything else. */
static bool
parse_directive (const char *line, char **name, char **value)
{
  const char *p = skip_blank (line);
  if (*p != '#')
    return false;
  p = skip_blank (p + 1);
  if (!isalpha ((unsigned char) *p))
    return false;
  const char *n0 = p;
  while (isalnum ((unsigned char) *p))
    p++;
  size_t nlen = (size_t) (p - n0);
  p = skip_blank (p);
  if (*p != '=')
    return false;
  p = skip_blank (p + 1);
  size_t vlen = strlen (p);
  while (vlen > 0 && isspace ((unsigned char) p[vlen - 1]))
    vlen--;
  if (vlen == 0)
    return false;
  *name = xstrndup (n0, nlen);
  for (char *c = *name; *c; c++)
    *c = (char) tolower ((unsigned char) *c);
  *value = xstrndup (p, vlen);
  return true;
}

static int
add_directive (dockerfile *df, char *name, char *value, unsigned line, const char *fname, ps_error **err)
{
  static const char *const known[] = { "syntax", "escape", "check" };
  bool is_known = false;
  for (size_t i = 0; i < sizeof known / sizeof *known; i++)
    is_known |= strcmp (name, known[i]) == 0;
  if (!is_known)
    {
      free (name); /* a comment that looks like one */
      free (value);
      return 0;
    }
  if (dockerfile_directive (df, name) != NULL)
    {
      ps_error_set (err, 400, "%s:%u: only one %s parser directive can be used", fname, line, name);
      free (name);
      free (value);
      return -1;
    }
  if (strcmp (name, "escape") == 0)
    {
      if (strcmp (value, "\\") != 0 && strcmp (value, "`") != 0)
        {
          ps_error_set (err, 400, "%s:%u: invalid escape token '%s' does not match ` or \\", fname, line, value);
          free (name);
          free (value);
          return -1;
        }
      df->escape = value[0];
    }
  df->directives = xrealloc (df->directives, (df->n_directives + 1) * sizeof *df->directives);
  df->directives[df->n_directives++] = (struct df_directive) { name, value, line };
  return 0;
}

/* ---- words ------------------------------------------------------------------------- */

/* The next blank-separated word of *s, quotes kept and blanks inside
   them not splitting; NULL at the end. */
static char *
next_word (const char **s, char escape)
{
  const char *p = skip_blank (*s);
  if (*p == '\0')
    {
      *s = p;
      return NULL;
    }
  const char *start = p;
  char quote = 0;
  for (; *p; p++)
    {
      if (*p == escape && p[1] != '\0')
        {
          p++;
          continue;
        }
      if (quote)
        {
          if (*p == quote)
            quote = 0;
        }
      else if (*p == '\'' || *p == '"')
        quote = *p;
      else if (*p == ' ' || *p == '\t')
        break;
    }
  *s = p;
  return xstrndup (start, (size_t) (p - start));
}

/* A flag word as BuildKit's extractBuilderFlags keeps it: quotes
   removed, an escaped character taken as itself (in place). */
static void
unquote (char *w, char escape)
{
  char *out = w, quote = 0;
  for (const char *p = w; *p; p++)
    {
      if (*p == escape && p[1] != '\0' && quote != '\'')
        *out++ = *++p;
      else if (quote == 0 && (*p == '"' || *p == '\''))
        quote = *p;
      else if (quote != 0 && *p == quote)
        quote = 0;
      else
        *out++ = *p;
    }
  *out = '\0';
}

/* BuildKit's extractBuilderFlags: the leading --name[=value] words; `--`
   alone ends them.  *rest points after them. */
static void
split_flags (const char *args, char escape, struct df_instruction *in, const char **rest)
{
  const char *p = args;
  for (;;)
    {
      const char *before = p;
      char *w = next_word (&p, escape);
      if (w == NULL || strncmp (w, "--", 2) != 0)
        {
          free (w);
          p = before;
          break;
        }
      if (w[2] == '\0')
        {
          free (w);
          break;
        }
      unquote (w, escape);
      char *eq = strchr (w + 2, '=');
      struct df_flag f = { xstrndup (w + 2, eq ? (size_t) (eq - w - 2) : strlen (w + 2)),
                           eq ? xstrdup (eq + 1) : NULL };
      free (w);
      in->flags = xrealloc (in->flags, (in->n_flags + 1) * sizeof *in->flags);
      in->flags[in->n_flags++] = f;
    }
  *rest = skip_blank (p);
}

/* A heredoc marker, BuildKit's ^(\d*)<<(-?)([^<]*)$ on a word with its
   quotes kept: the terminator, unquoted. */
static bool
parse_heredoc_word (const char *w, struct df_heredoc *h)
{
  while (isdigit ((unsigned char) *w))
    w++;
  if (strncmp (w, "<<", 2) != 0)
    return false;
  w += 2;
  bool strip = *w == '-';
  if (strip)
    w++;
  if (*w == '\0' || strchr (w, '<'))
    return false;
  size_t n = strlen (w);
  bool quoted = n >= 2 && (w[0] == '"' || w[0] == '\'') && w[n - 1] == w[0];
  char *word = quoted ? xstrndup (w + 1, n - 2) : xstrdup (w);
  if (*word == '\0')
    {
      free (word);
      return false;
    }
  *h = (struct df_heredoc) { .word = word, .strip_tabs = strip, .expand = !quoted };
  return true;
}

/* ---- the parse --------------------------------------------------------------------- */

static bool
can_hold_heredoc (const char *keyword)
{
  return strcmp (keyword, "RUN") == 0 || strcmp (keyword, "COPY") == 0 || strcmp (keyword, "ADD") == 0;
}

static void
instruction_free (struct df_instruction *in)
{
  free (in->keyword);
  free (in->original);
  for (size_t i = 0; i < in->n_flags; i++)
    {
      free (in->flags[i].name);
      free (in->flags[i].value);
    }
  free (in->flags);
  free (in->args);
  for (size_t i = 0; i < in->n_heredocs; i++)
    {
      free (in->heredocs[i].word);
      free (in->heredocs[i].body);
    }
  free (in->heredocs);
}

void
dockerfile_free (dockerfile *df)
{
  if (df == NULL)
    return;
  for (size_t i = 0; i < df->n_directives; i++)
    {
      free (df->directives[i].name);
      free (df->directives[i].value);
    }
  free (df->directives);
  for (size_t i = 0; i < df->n_insns; i++)
    instruction_free (&df->insns[i]);
  free (df->insns);
  free (df);
}

/* The heredoc bodies of `in`, read from the lines after *i. */
static int
read_heredocs (struct df_instruction *in, const struct lines *l, size_t *i, char escape, const char *fname,
               ps_error **err)
{
  const char *p = in->args;
  for (char *w; (w = next_word (&p, escape)) != NULL; free (w))
    {
      struct df_heredoc h;
      if (!parse_heredoc_word (w, &h))
        continue;
      ps_buf body = { 0 };
      bool terminated = false;
      while (*i + 1 < l->n)
        {
          const char *line = l->v[++*i];
          const char *cmp = line;
          if (h.strip_tabs)
            while (*cmp == '\t')
              cmp++;
          if (strcmp (cmp, h.word) == 0)
            {
              terminated = true;
              break;
            }
          ps_buf_printf (&body, "%s\n", line);
        }
      if (!terminated)
        {
          ps_error_set (err, 400, "%s:%u: unterminated heredoc: no line \"%s\" ends the %s <<%s", fname, in->line,
                        h.word, in->keyword, h.word);
          ps_buf_free (&body);
          free (h.word);
          free (w);
          return -1;
        }
      h.body = body.data ? ps_buf_steal (&body) : xstrdup ("");
      in->heredocs = xrealloc (in->heredocs, (in->n_heredocs + 1) * sizeof *in->heredocs);
      in->heredocs[in->n_heredocs++] = h;
    }
  return 0;
}

int
dockerfile_parse (const char *text, size_t len, const char *fname, dockerfile **out, ps_error **err)
{
  if (memchr (text, '\0', len) != NULL)
    return ps_error_set (err, 400, "%s: not a text file (it holds NUL bytes)", fname);
  /* A UTF-8 byte-order mark is dropped, as BuildKit does. */
  if (len >= 3 && memcmp (text, "\xef\xbb\xbf", 3) == 0)
    {
      text += 3;
      len -= 3;
    }
  struct lines l = { 0 };
  lines_split (text, len, &l);
  dockerfile *df = xcalloc (1, sizeof *df);
  df->escape = '\\';
  bool directives_done = false;
  int ret = 0;
  for (size_t i = 0; i < l.n && ret == 0; i++)
    {
      if (!directives_done)
        {
          char *name, *value;
          if (parse_directive (l.v[i], &name, &value))
            {
              ret = add_directive (df, name, value, (unsigned) i + 1, fname, err);
              continue;
            }
          directives_done = true;
        }
      if (is_comment (l.v[i]) || is_blank (l.v[i]))
        continue;

      unsigned start = (unsigned) i + 1;
      ps_buf logical = { 0 };
      char *first = xstrdup (skip_blank (l.v[i]));
      bool more = trim_continuation (first, df->escape);
      ps_buf_printf (&logical, "%s", first);
      free (first);
      while (more && i + 1 < l.n)
        {
          const char *next = l.v[++i];
          if (is_comment (next) || is_blank (next))
            continue;
          char *cont = xstrdup (next);
          more = trim_continuation (cont, df->escape);
          ps_buf_printf (&logical, "%s", cont);
          free (cont);
        }
      char *line = logical.data ? ps_buf_steal (&logical) : xstrdup ("");
      if (is_blank (line))
        {
          free (line);
          continue;
        }

      struct df_instruction in = { .line = start, .original = line };
      const char *p = skip_blank (line);
      size_t kw = strcspn (p, " \t");
      in.keyword = xstrndup (p, kw);
      for (char *c = in.keyword; *c; c++)
        *c = (char) toupper ((unsigned char) *c);
      const char *rest;
      split_flags (p + kw, df->escape, &in, &rest);
      in.args = xstrdup (rest);
      size_t n = strlen (in.args);
      while (n > 0 && isspace ((unsigned char) in.args[n - 1]))
        in.args[--n] = '\0';
      if (can_hold_heredoc (in.keyword) && strstr (in.args, "<<") != NULL)
        ret = read_heredocs (&in, &l, &i, df->escape, fname, err);
      df->insns = xrealloc (df->insns, (df->n_insns + 1) * sizeof *df->insns);
      df->insns[df->n_insns++] = in;
    }
  lines_free (&l);
  if (ret < 0)
    {
      dockerfile_free (df);
      return -1;
    }
  *out = df;
  return 0;
}

const char *
dockerfile_directive (const dockerfile *df, const char *name)
{
  for (size_t i = 0; i < df->n_directives; i++)
    if (strcmp (df->directives[i].name, name) == 0)
      return df->directives[i].value;
  return NULL;
}

const char *
df_instruction_flag (const struct df_instruction *in, const char *name)
{
  for (size_t i = 0; i < in->n_flags; i++)
    if (strcmp (in->flags[i].name, name) == 0)
      return in->flags[i].value ? in->flags[i].value : "";
  return NULL;
}

/* ---- what buildah 1.28 builds ------------------------------------------------------ */

/* Every instruction and the flags buildah 1.28 (openshift/imagebuilder's
   dispatchers) accepts for it. */
static const struct
{
  const char *keyword;
  const char *flags[5];
} buildah_dialect[] = {
  { "ADD", { "chown", "chmod" } },
  { "ARG", { 0 } },
  { "CMD", { 0 } },
  { "COPY", { "from", "chown", "chmod" } },
  { "ENTRYPOINT", { 0 } },
  { "ENV", { 0 } },
  { "EXPOSE", { 0 } },
  { "FROM", { "platform" } },
  { "HEALTHCHECK", { "interval", "timeout", "start-period", "retries" } },
  { "LABEL", { 0 } },
  { "MAINTAINER", { 0 } },
  { "ONBUILD", { 0 } },
  { "RUN", { "mount" } },
  { "SHELL", { 0 } },
  { "STOPSIGNAL", { 0 } },
  { "USER", { 0 } },
  { "VOLUME", { 0 } },
  { "WORKDIR", { 0 } },
};

static int
dialect_index (const char *keyword)
{
  for (size_t i = 0; i < sizeof buildah_dialect / sizeof *buildah_dialect; i++)
    if (strcmp (buildah_dialect[i].keyword, keyword) == 0)
      return (int) i;
  return -1;
}

/* "--from, --chown and --chmod", or "no flags". */
static char *
flag_list (int idx)
{
  ps_buf b = { 0 };
  size_t n = 0;
  while (n < 5 && buildah_dialect[idx].flags[n])
    n++;
  if (n == 0)
    return xstrdup ("no flags");
  for (size_t i = 0; i < n; i++)
    ps_buf_printf (&b, "%s--%s", i == 0 ? "" : i + 1 == n ? " and " : ", ", buildah_dialect[idx].flags[i]);
  return ps_buf_steal (&b);
}

static bool
octal_mode (const char *v)
{
  if (*v == '\0')
    return false;
  for (; *v; v++)
    if (*v < '0' || *v > '7')
      return false;
  return true;
}

static int
check_instruction (const struct df_instruction *in, const char *keyword, const char *fname, ps_error **err)
{
  int idx = dialect_index (keyword);
  if (idx < 0)
    return ps_error_set (err, 400, "%s:%u: unknown instruction: %s", fname, in->line, keyword);
  if (in->n_heredocs > 0)
    return ps_error_set (err, 400,
                         "%s:%u: %s <<%s: heredocs are not supported by podsolve's Dockerfile builder "
                         "(buildah 1.28)",
                         fname, in->line, keyword, in->heredocs[0].word);
  /* Instructions that take no flags take words starting with "--" as
     arguments in buildah (CMD --help), so only those with flags are
     checked. */
  bool has_flags = buildah_dialect[idx].flags[0] != NULL;
  for (size_t f = 0; has_flags && f < in->n_flags; f++)
    {
      bool known = false;
      for (size_t k = 0; k < 5 && buildah_dialect[idx].flags[k]; k++)
        known |= strcmp (buildah_dialect[idx].flags[k], in->flags[f].name) == 0;
      if (!known)
        {
          cleanup_free char *allowed = flag_list (idx);
          return ps_error_set (err, 400,
                               "%s:%u: %s --%s is not supported by podsolve's Dockerfile builder "
                               "(buildah 1.28 takes %s on %s)",
                               fname, in->line, keyword, in->flags[f].name, allowed, keyword);
        }
      if (strcmp (in->flags[f].name, "chmod") == 0 && !octal_mode (in->flags[f].value ? in->flags[f].value : ""))
        return ps_error_set (err, 400,
                             "%s:%u: %s --chmod=%s: podsolve's Dockerfile builder (buildah 1.28) takes an "
                             "octal mode only, such as --chmod=755",
                             fname, in->line, keyword, in->flags[f].value ? in->flags[f].value : "");
    }
  if (in->args[0] == '\0' && (has_flags || in->n_flags == 0))
    return ps_error_set (err, 400, "%s:%u: %s requires at least one argument", fname, in->line, keyword);
  return 0;
}

int
dockerfile_check_buildah (const dockerfile *df, const char *fname, ps_error **err)
{
  if (df->n_insns == 0)
    return ps_error_set (err, 400, "%s: the Dockerfile has no instructions", fname);
  bool seen_from = false;
  for (size_t i = 0; i < df->n_insns; i++)
    {
      const struct df_instruction *in = &df->insns[i];
      if (check_instruction (in, in->keyword, fname, err) < 0)
        return -1;
      if (strcmp (in->keyword, "FROM") == 0)
        seen_from = true;
      else if (!seen_from && strcmp (in->keyword, "ARG") != 0)
        return ps_error_set (err, 400, "%s:%u: %s before the first FROM (only ARG may come before FROM)", fname,
                             in->line, in->keyword);
      if (strcmp (in->keyword, "ONBUILD") == 0)
        {
          /* The instruction it stores, checked as one. */
          struct df_instruction inner = { .line = in->line };
          const char *p = in->args;
          size_t kw = strcspn (p, " \t");
          cleanup_free char *keyword = xstrndup (p, kw);
          for (char *c = keyword; *c; c++)
            *c = (char) toupper ((unsigned char) *c);
          if (strcmp (keyword, "ONBUILD") == 0 || strcmp (keyword, "FROM") == 0
              || strcmp (keyword, "MAINTAINER") == 0)
            return ps_error_set (err, 400, "%s:%u: %s isn't allowed as an ONBUILD trigger", fname, in->line, keyword);
          const char *rest;
          split_flags (p + kw, df->escape, &inner, &rest);
          inner.args = xstrdup (rest);
          int r = check_instruction (&inner, keyword, fname, err);
          instruction_free (&inner);
          if (r < 0)
            return -1;
        }
    }
  return 0;
}

char *
dockerfile_detect_syntax (const char *text, size_t len)
{
  if (len >= 3 && memcmp (text, "\xef\xbb\xbf", 3) == 0)
    {
      text += 3;
      len -= 3;
    }
  const char *end = text + len;
  char *found = NULL;
  while (text < end && found == NULL)
    {
      const char *nl = memchr (text, '\n', (size_t) (end - text));
      size_t n = nl ? (size_t) (nl - text) : (size_t) (end - text);
      cleanup_free char *line = xstrndup (text, n);
      text += n + (nl != NULL);
      /* "// syntax=" as "# syntax=": BuildKit reads both */
      const char *p = skip_blank (line);
      cleanup_free char *hashed = p[0] == '/' && p[1] == '/' ? xasprintf ("#%s", p + 2) : NULL;
      char *name = NULL, *value = NULL;
      if (!parse_directive (hashed ? hashed : line, &name, &value))
        break;
      if (strcmp (name, "syntax") == 0)
        found = value;
      else
        free (value);
      free (name);
    }
  return found;
}

char *
dockerfile_buildah_first_step (const dockerfile *df)
{
  size_t i = 0;
  while (i < df->n_insns && strcmp (df->insns[i].keyword, "ARG") == 0)
    i++;
  if (i == df->n_insns)
    return NULL;
  const struct df_instruction *from = &df->insns[i];
  if (strcmp (from->keyword, "FROM") != 0 || from->n_flags > 0 || from->args[0] == '\0'
      || from->args[strcspn (from->args, " \t$")] != '\0')
    return NULL;
  for (size_t j = i + 1; j < df->n_insns; j++)
    if (strcmp (df->insns[j].keyword, "FROM") == 0)
      return NULL;
  return xasprintf ("STEP 1/%zu: FROM %s", df->n_insns - i, from->args);
}
