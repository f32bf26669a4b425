/* dockerignore.c — .dockerignore matching exactly as Docker does it.
 *
 * Docker's behaviour is the sum of three Go pieces, and each is reproduced
 * here rather than approximated, because users debug their ignore files
 * against `docker build`:
 *
 *   1. moby/patternmatcher/ignorefile.ReadAll: split lines (bufio.Scanner:
 *      '\n', one trailing '\r' dropped, 64 KiB per line), drop a UTF-8 BOM,
 *      skip lines whose *first byte* is '#', trim Unicode white space, then
 *      filepath.Clean the pattern (after a '!') and drop one leading '/'.
 *   2. patternmatcher.New: trim and Clean again, split off '!', and reject
 *      the pattern when Go's filepath.Match(pattern, ".") reports
 *      ErrBadPattern (ported below as pattern_syntax_ok).
 *   3. Pattern.compile: translate the pattern into a Go regexp string
 *      (star -> "[^/]" star, '?' -> "[^/]", double star -> an optional
 *      group "any text then '/'" or "any text" at the end, backslash-x ->
 *      backslash-x, '[' and ']' passed through raw), or into one of three
 *      literal fast paths (exact; prefix for "dir/" + double star; suffix
 *      for double star + literal) whose semantics differ subtly from the
 *      regexp's; both are kept.  Because '[' ... ']' is copied raw into
 *      the regexp, classes follow RE2 syntax ([^a], [[:alpha:]], \d ...),
 *      not filepath.Match's: "[!a]" is the set {'!', 'a'}, not a negation.
 *
 * The regexp is then run by a small RE2-subset engine (common/regexp.c:
 * parse to a tree, compile to a Pike VM program, simulate in
 * O(len * program)), working on runes decoded as Go does (invalid UTF-8 byte = U+FFFD, width 1).  Escapes
 * Go accepts but this engine does not (\p{..}, \Q..\E) make the pattern
 * fail with 400 at parse time, as do those Go rejects (\q, [z-a]); Docker
 * fails the build on those when the pattern is first evaluated.
 *
 * Matching is MatchesOrParentMatches: walk the patterns in order, skipping
 * a pattern whose polarity cannot change the current verdict; a pattern
 * hits when it matches the path or any of its parent directories.
 */
#define _GNU_SOURCE
#include "common/dockerignore.h"
#include "common/regexp.h"

#include <stdlib.h>
#include <string.h>

/* bufio.Scanner's MaxScanTokenSize: the longest line ReadAll accepts. */
#define IGNORE_MAX_LINE (64 * 1024)

/* unicode.IsSpace, which strings.TrimSpace uses. */
static bool
is_go_space (uint32_t r)
{
  switch (r)
    {
    case '\t': case '\n': case '\v': case '\f': case '\r': case ' ':
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
    case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return r >= 0x2000 && r <= 0x200A;
    }
}

/* strings.TrimSpace on s[0..n): sets *start and returns the new length. */
static size_t
trim_space (const char *s, size_t n, size_t *start)
{
  const unsigned char *u = (const unsigned char *) s;
  size_t i = 0, first = n, last_end = 0;
  while (i < n)
    {
      size_t w;
      uint32_t r = ps_decode_rune (u + i, n - i, &w);
      if (!is_go_space (r))
        {
          if (first == n)
            first = i;
          last_end = i + w;
        }
      i += w;
    }
  if (first == n)
    {
      *start = 0;
      return 0;
    }
  *start = first;
  return last_end - first;
}

/* ---- Go's filepath.Clean (Unix) ----------------------------------------- */

static char *
go_clean (const char *path, size_t n)
{
  if (n == 0)
    return xstrdup (".");
  char *out = xmalloc (n + 4);
  bool rooted = path[0] == '/';
  size_t w = 0, r = 0, dotdot = 0;
  if (rooted)
    {
      out[w++] = '/';
      r = dotdot = 1;
    }
  while (r < n)
    {
      if (path[r] == '/')
        r++;
      else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/'))
        r++;
      else if (path[r] == '.' && path[r + 1] == '.' && (r + 2 == n || path[r + 2] == '/'))
        {
          r += 2;
          if (w > dotdot)
            {
              w--;
              while (w > dotdot && out[w] != '/')
                w--;
            }
          else if (!rooted)
            {
              if (w > 0)
                out[w++] = '/';
              out[w++] = '.';
              out[w++] = '.';
              dotdot = w;
            }
        }
      else
        {
          if ((rooted && w != 1) || (!rooted && w != 0))
            out[w++] = '/';
          for (; r < n && path[r] != '/'; r++)
            out[w++] = path[r];
        }
    }
  if (w == 0)
    out[w++] = '.';
  out[w] = '\0';
  return out;
}

/* ---- Go's filepath.Match syntax check ------------------------------------ */

/* getEsc: one class character, possibly escaped; false on a syntax error. */
static bool
class_esc_ok (const char **pp, const char *end)
{
  const char *p = *pp;
  if (p >= end || *p == '-' || *p == ']')
    return false;
  if (*p == '\\')
    {
      p++;
      if (p >= end)
        return false;
    }
  size_t w;
  uint32_t r = ps_decode_rune ((const unsigned char *) p, (size_t) (end - p), &w);
  if (r == PS_RUNE_ERROR && w == 1)
    return false;
  p += w;
  if (p >= end)
    return false;
  *pp = p;
  return true;
}

/* matchChunk's syntax checks, which run to the end of the chunk whatever
   the name, so checking each chunk once equals filepath.Match(p, ".")
   returning ErrBadPattern. */
static bool
chunk_syntax_ok (const char *p, const char *end)
{
  while (p < end)
    {
      switch (*p)
        {
        case '[':
          {
            p++;
            if (p < end && *p == '^')
              p++;
            int nrange = 0;
            for (;;)
              {
                if (p < end && *p == ']' && nrange > 0)
                  {
                    p++;
                    break;
                  }
                if (!class_esc_ok (&p, end))
                  return false;
                if (*p == '-')
                  {
                    p++;
                    if (!class_esc_ok (&p, end))
                      return false;
                  }
                nrange++;
              }
            break;
          }
        case '\\':
          p++;
          if (p >= end)
            return false;
          p++;
          break;
        default:
          p++;
          break;
        }
    }
  return true;
}

static bool
pattern_syntax_ok (const char *pat, size_t n)
{
  const char *p = pat, *end = pat + n;
  while (p < end)
    {
      while (p < end && *p == '*')
        p++;
      /* scanChunk */
      const char *chunk = p;
      bool inrange = false;
      for (; p < end; p++)
        {
          if (*p == '\\')
            {
              if (p + 1 < end)
                p++;
            }
          else if (*p == '[')
            inrange = true;
          else if (*p == ']')
            inrange = false;
          else if (*p == '*' && !inrange)
            break;
        }
      if (!chunk_syntax_ok (chunk, p))
        return false;
    }
  return true;
}

/* ---- a rune vector -------------------------------------------------------- */

typedef struct
{
  uint32_t *v;
  size_t n, cap;
} runevec;

static void
rv_push (runevec *rv, uint32_t r)
{
  if (rv->n == rv->cap)
    {
      rv->cap = rv->cap ? rv->cap * 2 : 64;
      rv->v = xrealloc (rv->v, rv->cap * sizeof (uint32_t));
    }
  rv->v[rv->n++] = r;
}

static void
rv_push_str (runevec *rv, const char *s)
{
  for (; *s; s++)
    rv_push (rv, (unsigned char) *s);
}

/* ---- patterns --------------------------------------------------------------- */

enum match_type
{
  MATCH_EXACT,
  MATCH_PREFIX, /* "dir/" + double star: raw string prefix */
  MATCH_SUFFIX, /* double star + literal: raw string suffix */
  MATCH_REGEXP,
};

struct ignore_pattern
{
  char *cleaned;
  size_t len;
  bool exclusion;
  enum match_type type;
  ps_regexp *re;
};

struct ps_ignore
{
  struct ignore_pattern *pats;
  size_t n;
  bool exclusions;
};

/* Runes that mean something in a Go regexp but nothing in filepath.Match. */
static bool
should_escape (uint32_t c)
{
  return c != 0 && c < 0x80 && strchr (".+()|{}$", (int) c) != NULL;
}

#define RUNE_EOF UINT32_MAX

static uint32_t
peek_rune (const unsigned char *s, size_t n, size_t pos, size_t *w)
{
  if (pos >= n)
    {
      *w = 0;
      return RUNE_EOF;
    }
  return ps_decode_rune (s + pos, n - pos, w);
}

/* Pattern.compile, rune for rune. */
static int
compile_pattern (struct ignore_pattern *pat, const char **error)
{
  const unsigned char *s = (const unsigned char *) pat->cleaned;
  size_t n = pat->len, pos = 0;
  runevec re = { 0 };
  enum match_type type = MATCH_EXACT;

  rv_push (&re, '^');
  for (int i = 0; pos < n; i++)
    {
      size_t w;
      uint32_t ch = ps_decode_rune (s + pos, n - pos, &w);
      pos += w;
      if (ch == '*')
        {
          if (peek_rune (s, n, pos, &w) == '*')
            {
              pos += w;
              if (peek_rune (s, n, pos, &w) == '/')
                pos += w; /* treat "**" + "/" as "**" */
              if (pos >= n)
                {
                  /* "**" at the end: to align with .gitignore, accept all */
                  if (type == MATCH_EXACT)
                    type = MATCH_PREFIX;
                  else
                    {
                      rv_push_str (&re, ".*");
                      type = MATCH_REGEXP;
                    }
                }
              else
                {
                  /* any number of path elements, even none */
                  rv_push_str (&re, "(.*/)?");
                  type = MATCH_REGEXP;
                }
              if (i == 0)
                type = MATCH_SUFFIX;
            }
          else
            {
              rv_push_str (&re, "[^/]*");
              type = MATCH_REGEXP;
            }
        }
      else if (ch == '?')
        {
          rv_push_str (&re, "[^/]");
          type = MATCH_REGEXP;
        }
      else if (should_escape (ch))
        {
          rv_push (&re, '\\');
          rv_push (&re, ch);
        }
      else if (ch == '\\')
        {
          /* escape the next rune; a trailing '\' is kept (and was
             already refused by the syntax check) */
          rv_push (&re, '\\');
          if (pos < n)
            {
              rv_push (&re, ps_decode_rune (s + pos, n - pos, &w));
              pos += w;
              type = MATCH_REGEXP;
            }
        }
      else if (ch == '[' || ch == ']')
        {
          rv_push (&re, ch);
          type = MATCH_REGEXP;
        }
      else
        rv_push (&re, ch);
    }

  pat->type = type;
  if (type == MATCH_REGEXP)
    {
      rv_push (&re, '$');
      pat->re = ps_regexp_compile (re.v, re.n, error);
      if (pat->re == NULL)
        {
          free (re.v);
          return -1;
        }
    }
  free (re.v);
  return 0;
}

static bool
pattern_match (const struct ignore_pattern *p, const char *path, size_t n)
{
  switch (p->type)
    {
    case MATCH_EXACT:
      return n == p->len && memcmp (path, p->cleaned, n) == 0;
    case MATCH_PREFIX:
      return n >= p->len - 2 && memcmp (path, p->cleaned, p->len - 2) == 0;
    case MATCH_SUFFIX:
      {
        const char *suf = p->cleaned + 2;
        size_t sl = p->len - 2;
        if (n >= sl && memcmp (path + n - sl, suf, sl) == 0)
          return true;
        /* "**" "/foo" matches "foo" */
        return sl > 0 && suf[0] == '/' && n == sl - 1 && memcmp (path, suf + 1, n) == 0;
      }
    case MATCH_REGEXP:
      return ps_regexp_match (p->re, path, n);
    }
  return false;
}

void
ps_ignore_free (ps_ignore *ig)
{
  if (ig == NULL)
    return;
  for (size_t i = 0; i < ig->n; i++)
    {
      free (ig->pats[i].cleaned);
      ps_regexp_free (ig->pats[i].re);
    }
  free (ig->pats);
  free (ig);
}

static void
ignore_freep (ps_ignore **ig)
{
  ps_ignore_free (*ig);
}
#define cleanup_ignore __attribute__ ((cleanup (ignore_freep)))

/* patternmatcher.New for one pattern (already through ReadAll's
   normalisation); `what` names it in errors. */
static int
ignore_add (ps_ignore *ig, const char *raw, size_t rawlen, const char *what, ps_error **err)
{
  size_t start;
  size_t n = trim_space (raw, rawlen, &start);
  if (n == 0)
    return 0;
  cleanup_free char *p = go_clean (raw + start, n);
  size_t plen = strlen (p);
  bool exclusion = false;
  const char *body = p;
  if (p[0] == '!')
    {
      if (plen == 1)
        return ps_error_set (err, 400, "%sillegal exclusion pattern: \"!\"", what);
      exclusion = true;
      body++;
      plen--;
    }
  if (!pattern_syntax_ok (body, plen))
    return ps_error_set (err, 400, "%sinvalid pattern \"%s\": syntax error in pattern", what, p);

  ig->pats = xrealloc (ig->pats, (ig->n + 1) * sizeof (struct ignore_pattern));
  struct ignore_pattern *pat = &ig->pats[ig->n];
  memset (pat, 0, sizeof (*pat));
  pat->cleaned = xstrndup (body, plen);
  pat->len = plen;
  pat->exclusion = exclusion;
  const char *re_error = NULL;
  if (compile_pattern (pat, &re_error) < 0)
    {
      free (pat->cleaned);
      return ps_error_set (err, 400, "%sinvalid pattern \"%s\": %s", what, p,
                           re_error ? re_error : "syntax error in pattern");
    }
  ig->n++;
  if (exclusion)
    ig->exclusions = true;
  return 0;
}

/* ignorefile.ReadAll's per-line normalisation after the comment check:
   trim, split off '!', Clean, drop one leading '/'.  Returns a new string,
   or NULL for a line that holds no pattern. */
static char *
normalise_line (const char *line, size_t n)
{
  size_t start;
  n = trim_space (line, n, &start);
  line += start;
  if (n == 0)
    return NULL;
  bool invert = line[0] == '!';
  if (invert)
    {
      n = trim_space (line + 1, n - 1, &start);
      line += 1 + start;
    }
  cleanup_free char *clean = NULL;
  const char *pat = "";
  if (n > 0)
    {
      clean = go_clean (line, n);
      pat = clean;
      if (strlen (pat) > 1 && pat[0] == '/')
        pat++;
    }
  return xasprintf ("%s%s", invert ? "!" : "", pat);
}

ps_ignore *
ps_ignore_parse (const char *text, size_t len, ps_error **err)
{
  cleanup_ignore ps_ignore *ig = xcalloc (1, sizeof (*ig));
  if (text == NULL || len == 0)
    return steal_pointer (&ig);
  if (memchr (text, '\0', len) != NULL)
    {
      ps_error_set (err, 400, "ignore file contains a NUL byte");
      return NULL;
    }
  size_t pos = 0, lineno = 0;
  while (pos < len)
    {
      const char *line = text + pos;
      const char *nl = memchr (line, '\n', len - pos);
      size_t n = nl ? (size_t) (nl - line) : len - pos;
      pos += n + (nl ? 1 : 0);
      if (n > 0 && line[n - 1] == '\r')
        n--;
      if (lineno == 0 && n >= 3 && memcmp (line, "\xEF\xBB\xBF", 3) == 0)
        {
          line += 3;
          n -= 3;
        }
      lineno++;
      if (n >= IGNORE_MAX_LINE)
        {
          ps_error_set (err, 400, "line %zu: longer than %d bytes", lineno, IGNORE_MAX_LINE);
          return NULL;
        }
      if (n > 0 && line[0] == '#')
        continue;
      cleanup_free char *pat = normalise_line (line, n);
      if (pat == NULL)
        continue;
      cleanup_free char *what = xasprintf ("line %zu: ", lineno);
      if (ignore_add (ig, pat, strlen (pat), what, err) < 0)
        return NULL;
    }
  return steal_pointer (&ig);
}

ps_ignore *
ps_ignore_from_patterns (const char *const *patterns, size_t n, ps_error **err)
{
  cleanup_ignore ps_ignore *ig = xcalloc (1, sizeof (*ig));
  for (size_t i = 0; i < n; i++)
    {
      if (patterns[i] == NULL)
        continue;
      size_t len = strlen (patterns[i]);
      if (len >= IGNORE_MAX_LINE)
        {
          ps_error_set (err, 400, "exclude pattern %zu: longer than %d bytes", i + 1,
                        IGNORE_MAX_LINE);
          return NULL;
        }
      /* Lists come from clients that normally ran ReadAll already; doing it
         again is idempotent and makes "/abs" and "! x" behave as in a file.
         A '#' here is a pattern, not a comment. */
      cleanup_free char *pat = normalise_line (patterns[i], len);
      if (pat == NULL)
        continue;
      if (ignore_add (ig, pat, strlen (pat), "", err) < 0)
        return NULL;
    }
  return steal_pointer (&ig);
}

bool
ps_ignore_matches (const ps_ignore *ig, const char *relpath)
{
  if (ig == NULL || ig->n == 0 || relpath == NULL)
    return false;
  cleanup_free char *file = go_clean (relpath, strlen (relpath));
  size_t flen = strlen (file);
  if (strcmp (file, ".") == 0)
    return false; /* "Don't let them exclude everything" */

  /* filepath.Dir(file): everything before the last '/', cleaned. */
  const char *slash = strrchr (file, '/');
  cleanup_free char *parent = go_clean (file, slash ? (size_t) (slash - file + 1) : 0);
  size_t plen = strlen (parent);
  bool has_parent = strcmp (parent, ".") != 0;

  bool matched = false;
  for (size_t i = 0; i < ig->n; i++)
    {
      const struct ignore_pattern *p = &ig->pats[i];
      /* An inclusion cannot change a path already excluded, nor an
         exception one that is not. */
      if (p->exclusion != matched)
        continue;
      bool m = pattern_match (p, file, flen);
      /* strings.Join(parentPathDirs[:k+1], "/") for each k */
      for (size_t k = 0; !m && has_parent && k <= plen; k++)
        if (k == plen || parent[k] == '/')
          m = pattern_match (p, parent, k);
      if (m)
        matched = !p->exclusion;
    }
  return matched;
}

bool
ps_ignore_has_exceptions (const ps_ignore *ig)
{
  return ig != NULL && ig->exclusions;
}

size_t
ps_ignore_count (const ps_ignore *ig)
{
  return ig ? ig->n : 0;
}
