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
 * The regexp is then run by a small RE2-subset engine (parse to a tree,
 * compile to a Pike VM program, simulate in O(len * program)), working on
 * runes decoded as Go does (invalid UTF-8 byte = U+FFFD, width 1).  Escapes
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

#include <stdlib.h>
#include <string.h>

/* bufio.Scanner's MaxScanTokenSize: the longest line ReadAll accepts. */
#define IGNORE_MAX_LINE (64 * 1024)

#define RUNE_ERROR 0xFFFDu
#define RUNE_MAX 0x10FFFFu

/* ---- UTF-8 as Go decodes it ----------------------------------------------- */

/* Decode one rune from s[0..n); invalid or truncated sequences, overlongs
   and surrogates give U+FFFD with width 1, as utf8.DecodeRuneInString. */
static uint32_t
decode_rune (const unsigned char *s, size_t n, size_t *width)
{
  *width = 1;
  if (n == 0)
    return RUNE_ERROR;
  unsigned c = s[0];
  if (c < 0x80)
    return c;
  size_t need;
  uint32_t r, min;
  if (c >= 0xC2 && c <= 0xDF)
    need = 1, r = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF)
    need = 2, r = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4)
    need = 3, r = c & 0x07, min = 0x10000;
  else
    return RUNE_ERROR;
  if (n < need + 1)
    return RUNE_ERROR;
  for (size_t i = 1; i <= need; i++)
    {
      if ((s[i] & 0xC0) != 0x80)
        return RUNE_ERROR;
      r = (r << 6) | (s[i] & 0x3F);
    }
  if (r < min || r > RUNE_MAX || (r >= 0xD800 && r <= 0xDFFF))
    return RUNE_ERROR;
  *width = need + 1;
  return r;
}

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
      uint32_t r = decode_rune (u + i, n - i, &w);
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
  uint32_t r = decode_rune ((const unsigned char *) p, (size_t) (end - p), &w);
  if (r == RUNE_ERROR && w == 1)
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

/* ---- RE2-subset regexp: classes ------------------------------------------ */

struct rune_range
{
  uint32_t lo, hi;
};

struct re_class
{
  struct rune_range *r;
  size_t n, cap;
  bool negate;
};

static void
class_add (struct re_class *c, uint32_t lo, uint32_t hi)
{
  if (c->n == c->cap)
    {
      c->cap = c->cap ? c->cap * 2 : 8;
      c->r = xrealloc (c->r, c->cap * sizeof (*c->r));
    }
  c->r[c->n].lo = lo;
  c->r[c->n].hi = hi;
  c->n++;
}

/* Add `ranges` (sorted, disjoint) or, when `negate`, their complement. */
static void
class_add_group (struct re_class *c, const struct rune_range *ranges, size_t n, bool negate)
{
  if (!negate)
    {
      for (size_t i = 0; i < n; i++)
        class_add (c, ranges[i].lo, ranges[i].hi);
      return;
    }
  uint32_t next = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (ranges[i].lo > next)
        class_add (c, next, ranges[i].lo - 1);
      next = ranges[i].hi + 1;
    }
  if (next <= RUNE_MAX)
    class_add (c, next, RUNE_MAX);
}

static bool
class_matches (const struct re_class *c, uint32_t r)
{
  bool in = false;
  for (size_t i = 0; i < c->n && !in; i++)
    in = c->r[i].lo <= r && r <= c->r[i].hi;
  return in != c->negate;
}

/* Go's perlGroup and posixGroup tables (regexp/syntax/perl_groups.go). */
static const struct rune_range g_digit[] = { { '0', '9' } };
static const struct rune_range g_perl_space[] = { { '\t', '\n' }, { '\f', '\r' }, { ' ', ' ' } };
static const struct rune_range g_word[]
    = { { '0', '9' }, { 'A', 'Z' }, { '_', '_' }, { 'a', 'z' } };
static const struct rune_range g_alnum[] = { { '0', '9' }, { 'A', 'Z' }, { 'a', 'z' } };
static const struct rune_range g_alpha[] = { { 'A', 'Z' }, { 'a', 'z' } };
static const struct rune_range g_ascii[] = { { 0, 0x7F } };
static const struct rune_range g_blank[] = { { '\t', '\t' }, { ' ', ' ' } };
static const struct rune_range g_cntrl[] = { { 0, 0x1F }, { 0x7F, 0x7F } };
static const struct rune_range g_graph[] = { { '!', '~' } };
static const struct rune_range g_lower[] = { { 'a', 'z' } };
static const struct rune_range g_print[] = { { ' ', '~' } };
static const struct rune_range g_punct[]
    = { { '!', '/' }, { ':', '@' }, { '[', '`' }, { '{', '~' } };
static const struct rune_range g_space[] = { { '\t', '\r' }, { ' ', ' ' } };
static const struct rune_range g_upper[] = { { 'A', 'Z' } };
static const struct rune_range g_xdigit[] = { { '0', '9' }, { 'A', 'F' }, { 'a', 'f' } };

struct named_group
{
  const char *name;
  const struct rune_range *r;
  size_t n;
};

#define GROUP(name, g) { name, g, ARRAY_SIZE (g) }
static const struct named_group posix_groups[] = {
  GROUP ("alnum", g_alnum), GROUP ("alpha", g_alpha), GROUP ("ascii", g_ascii),
  GROUP ("blank", g_blank), GROUP ("cntrl", g_cntrl), GROUP ("digit", g_digit),
  GROUP ("graph", g_graph), GROUP ("lower", g_lower), GROUP ("print", g_print),
  GROUP ("punct", g_punct), GROUP ("space", g_space), GROUP ("upper", g_upper),
  GROUP ("word", g_word),   GROUP ("xdigit", g_xdigit),
};
#undef GROUP

/* \d \s \w (and upper case for the complement); false if `c` is none. */
static bool
perl_group (uint32_t c, const struct rune_range **r, size_t *n, bool *negate)
{
  switch (c)
    {
    case 'd': case 'D':
      *r = g_digit, *n = ARRAY_SIZE (g_digit);
      break;
    case 's': case 'S':
      *r = g_perl_space, *n = ARRAY_SIZE (g_perl_space);
      break;
    case 'w': case 'W':
      *r = g_word, *n = ARRAY_SIZE (g_word);
      break;
    default:
      return false;
    }
  *negate = c < 'a';
  return true;
}

/* ---- RE2-subset regexp: parse tree ------------------------------------- */

enum node_kind
{
  N_EMPTY,
  N_RUNE,
  N_CLASS,
  N_ANY_NOT_NL,
  N_ASSERT,
  N_CAT, /* children: a, then the chain of `next` */
  N_ALT, /* a | b */
  N_STAR,
  N_PLUS,
  N_QUEST,
};

enum re_assert
{
  AS_BEGIN_TEXT,
  AS_END_TEXT,
  AS_WORD_BOUNDARY,
  AS_NOT_WORD_BOUNDARY,
};

struct node
{
  enum node_kind kind;
  uint32_t val; /* rune, class index or assertion */
  int a, b;     /* children (node indices), -1 when absent */
  int next;     /* next sibling inside an N_CAT */
};

enum re_op
{
  OP_RUNE,
  OP_CLASS,
  OP_ANY_NOT_NL,
  OP_ASSERT,
  OP_SPLIT,
  OP_JMP,
  OP_MATCH,
};

struct re_inst
{
  enum re_op op;
  uint32_t val;
  size_t x, y;
};

struct re_prog
{
  struct re_inst *inst;
  size_t n, cap;
  struct re_class *classes;
  size_t nclasses;
};

struct re_parser
{
  const uint32_t *s;
  size_t pos, len;
  struct node *nodes;
  size_t nnodes, capnodes;
  struct re_prog *prog;
  const char *error; /* static message */
};

static int
new_node (struct re_parser *p, enum node_kind kind, uint32_t val, int a, int b)
{
  if (p->nnodes == p->capnodes)
    {
      p->capnodes = p->capnodes ? p->capnodes * 2 : 32;
      p->nodes = xrealloc (p->nodes, p->capnodes * sizeof (struct node));
    }
  struct node *n = &p->nodes[p->nnodes];
  n->kind = kind;
  n->val = val;
  n->a = a;
  n->b = b;
  n->next = -1;
  return (int) p->nnodes++;
}

static uint32_t
new_class (struct re_parser *p)
{
  struct re_prog *g = p->prog;
  g->classes = xrealloc (g->classes, (g->nclasses + 1) * sizeof (struct re_class));
  memset (&g->classes[g->nclasses], 0, sizeof (struct re_class));
  return (uint32_t) g->nclasses++;
}

static int
fail (struct re_parser *p, const char *msg)
{
  if (p->error == NULL)
    p->error = msg;
  return -1;
}

static bool
is_alnum_rune (uint32_t c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
unhex (uint32_t c)
{
  if (c >= '0' && c <= '9')
    return (int) (c - '0');
  if (c >= 'a' && c <= 'f')
    return (int) (c - 'a' + 10);
  if (c >= 'A' && c <= 'F')
    return (int) (c - 'A' + 10);
  return -1;
}

/* Go's parseEscape: p->s[p->pos] is the backslash.  Returns the rune. */
static int
parse_escape (struct re_parser *p, uint32_t *out)
{
  p->pos++;
  if (p->pos >= p->len)
    return fail (p, "trailing backslash at end of expression");
  uint32_t c = p->s[p->pos++];
  if (c < 0x80 && !is_alnum_rune (c))
    {
      *out = c;
      return 0;
    }
  switch (c)
    {
    case '1': case '2': case '3': case '4': case '5': case '6': case '7':
      /* A single non-zero digit would be a backreference. */
      if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '7')
        break;
      /* fallthrough */
    case '0':
      {
        uint32_t r = c - '0';
        for (int i = 1; i < 3 && p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '7'; i++)
          r = r * 8 + (p->s[p->pos++] - '0');
        *out = r;
        return 0;
      }
    case 'x':
      {
        if (p->pos >= p->len)
          break;
        uint32_t d = p->s[p->pos++];
        if (d == '{')
          {
            int nhex = 0;
            uint32_t r = 0;
            while (p->pos < p->len && p->s[p->pos] != '}')
              {
                int v = unhex (p->s[p->pos++]);
                if (v < 0)
                  return fail (p, "invalid escape sequence");
                r = r * 16 + (uint32_t) v;
                if (r > RUNE_MAX)
                  return fail (p, "invalid escape sequence");
                nhex++;
              }
            if (p->pos >= p->len || nhex == 0)
              return fail (p, "invalid escape sequence");
            p->pos++;
            *out = r;
            return 0;
          }
        if (p->pos >= p->len)
          break;
        int x = unhex (d), y = unhex (p->s[p->pos++]);
        if (x < 0 || y < 0)
          break;
        *out = (uint32_t) (x * 16 + y);
        return 0;
      }
    case 'a':
      *out = 7;
      return 0;
    case 'f':
      *out = '\f';
      return 0;
    case 'n':
      *out = '\n';
      return 0;
    case 'r':
      *out = '\r';
      return 0;
    case 't':
      *out = '\t';
      return 0;
    case 'v':
      *out = '\v';
      return 0;
    default:
      break;
    }
  return fail (p, "invalid escape sequence");
}

static int
parse_class_char (struct re_parser *p, uint32_t *out)
{
  if (p->pos >= p->len)
    return fail (p, "missing closing ]");
  if (p->s[p->pos] == '\\')
    return parse_escape (p, out);
  *out = p->s[p->pos++];
  return 0;
}

/* Go's parseClass with the Perl flags regexp.Compile uses (ClassNL: a
   negated class also matches '\n'). */
static int
parse_class (struct re_parser *p)
{
  uint32_t ci = new_class (p);
  p->pos++; /* '[' */
  if (p->pos < p->len && p->s[p->pos] == '^')
    {
      p->prog->classes[ci].negate = true;
      p->pos++;
    }
  bool first = true;
  while (p->pos >= p->len || p->s[p->pos] != ']' || first)
    {
      if (p->pos >= p->len)
        return fail (p, "missing closing ]");
      struct re_class *c = &p->prog->classes[ci];
      first = false;
      /* [:alpha:] — Go searches for ":]" in the whole rest of the text. */
      if (p->len - p->pos > 2 && p->s[p->pos] == '[' && p->s[p->pos + 1] == ':')
        {
          size_t end = 0;
          for (size_t i = p->pos + 2; i + 1 < p->len; i++)
            if (p->s[i] == ':' && p->s[i + 1] == ']')
              {
                end = i;
                break;
              }
          if (end != 0)
            {
              size_t nstart = p->pos + 2;
              bool negate = nstart < end && p->s[nstart] == '^';
              if (negate)
                nstart++;
              const struct named_group *g = NULL;
              for (size_t k = 0; k < ARRAY_SIZE (posix_groups) && g == NULL; k++)
                {
                  const char *nm = posix_groups[k].name;
                  size_t nl = strlen (nm);
                  if (nl != end - nstart)
                    continue;
                  size_t j = 0;
                  while (j < nl && p->s[nstart + j] == (unsigned char) nm[j])
                    j++;
                  if (j == nl)
                    g = &posix_groups[k];
                }
              if (g == NULL)
                return fail (p, "invalid character class range");
              class_add_group (c, g->r, g->n, negate);
              p->pos = end + 2;
              continue;
            }
        }
      if (p->s[p->pos] == '\\' && p->pos + 1 < p->len)
        {
          uint32_t e = p->s[p->pos + 1];
          if (e == 'p' || e == 'P')
            return fail (p, "Unicode classes (\\p) are not supported");
          const struct rune_range *r;
          size_t n;
          bool negate;
          if (perl_group (e, &r, &n, &negate))
            {
              class_add_group (c, r, n, negate);
              p->pos += 2;
              continue;
            }
        }
      uint32_t lo, hi;
      if (parse_class_char (p, &lo) < 0)
        return -1;
      hi = lo;
      if (p->len - p->pos >= 2 && p->s[p->pos] == '-' && p->s[p->pos + 1] != ']')
        {
          p->pos++;
          if (parse_class_char (p, &hi) < 0)
            return -1;
          if (hi < lo)
            return fail (p, "invalid character class range");
        }
      class_add (&p->prog->classes[ci], lo, hi);
    }
  p->pos++; /* ']' */
  return new_node (p, N_CLASS, ci, -1, -1);
}

static int parse_alt (struct re_parser *p);

static int
parse_atom (struct re_parser *p)
{
  uint32_t c = p->s[p->pos];
  switch (c)
    {
    case '(':
      {
        p->pos++;
        if (p->pos < p->len && p->s[p->pos] == '?')
          return fail (p, "group flags are not supported");
        int sub = parse_alt (p);
        if (sub < 0)
          return -1;
        if (p->pos >= p->len || p->s[p->pos] != ')')
          return fail (p, "missing closing )");
        p->pos++;
        return sub;
      }
    case '[':
      return parse_class (p);
    case '.':
      p->pos++;
      return new_node (p, N_ANY_NOT_NL, 0, -1, -1);
    case '^':
      p->pos++;
      return new_node (p, N_ASSERT, AS_BEGIN_TEXT, -1, -1);
    case '$':
      p->pos++;
      return new_node (p, N_ASSERT, AS_END_TEXT, -1, -1);
    case '*':
    case '+':
    case '?':
      return fail (p, "missing argument to repetition operator");
    case '\\':
      {
        if (p->pos + 1 < p->len)
          {
            uint32_t e = p->s[p->pos + 1];
            int as = -1;
            if (e == 'A')
              as = AS_BEGIN_TEXT;
            else if (e == 'z')
              as = AS_END_TEXT;
            else if (e == 'b')
              as = AS_WORD_BOUNDARY;
            else if (e == 'B')
              as = AS_NOT_WORD_BOUNDARY;
            if (as >= 0)
              {
                p->pos += 2;
                return new_node (p, N_ASSERT, (uint32_t) as, -1, -1);
              }
            if (e == 'C')
              return fail (p, "invalid escape sequence");
            if (e == 'Q' || e == 'p' || e == 'P')
              return fail (p, "\\Q and Unicode classes (\\p) are not supported");
            const struct rune_range *r;
            size_t n;
            bool negate;
            if (perl_group (e, &r, &n, &negate))
              {
                uint32_t ci = new_class (p);
                class_add_group (&p->prog->classes[ci], r, n, negate);
                p->pos += 2;
                return new_node (p, N_CLASS, ci, -1, -1);
              }
          }
        uint32_t r;
        if (parse_escape (p, &r) < 0)
          return -1;
        return new_node (p, N_RUNE, r, -1, -1);
      }
    default:
      p->pos++;
      return new_node (p, N_RUNE, c, -1, -1);
    }
}

static bool
is_repeat_op (uint32_t c)
{
  return c == '*' || c == '+' || c == '?';
}

static int
parse_repeat (struct re_parser *p)
{
  int atom = parse_atom (p);
  if (atom < 0 || p->pos >= p->len || !is_repeat_op (p->s[p->pos]))
    return atom;
  uint32_t op = p->s[p->pos++];
  if (p->pos < p->len && p->s[p->pos] == '?')
    p->pos++; /* non-greedy: irrelevant to a yes/no match */
  if (p->pos < p->len && is_repeat_op (p->s[p->pos]))
    return fail (p, "invalid nested repetition operator");
  enum node_kind k = op == '*' ? N_STAR : op == '+' ? N_PLUS : N_QUEST;
  return new_node (p, k, 0, atom, -1);
}

static int
parse_concat (struct re_parser *p)
{
  int cat = new_node (p, N_CAT, 0, -1, -1);
  int last = -1;
  while (p->pos < p->len && p->s[p->pos] != '|' && p->s[p->pos] != ')')
    {
      int item = parse_repeat (p);
      if (item < 0)
        return -1;
      if (last < 0)
        p->nodes[cat].a = item;
      else
        p->nodes[last].next = item;
      last = item;
    }
  return cat;
}

static int
parse_alt (struct re_parser *p)
{
  int left = parse_concat (p);
  while (left >= 0 && p->pos < p->len && p->s[p->pos] == '|')
    {
      p->pos++;
      int right = parse_concat (p);
      if (right < 0)
        return -1;
      left = new_node (p, N_ALT, 0, left, right);
    }
  return left;
}

/* ---- RE2-subset regexp: compile and run -------------------------------- */

static size_t
emit (struct re_prog *g, enum re_op op, uint32_t val)
{
  if (g->n == g->cap)
    {
      g->cap = g->cap ? g->cap * 2 : 32;
      g->inst = xrealloc (g->inst, g->cap * sizeof (struct re_inst));
    }
  g->inst[g->n].op = op;
  g->inst[g->n].val = val;
  g->inst[g->n].x = g->inst[g->n].y = 0;
  return g->n++;
}

/* Thompson construction.  Recursion depth is the group/repeat nesting
   depth, which the pattern translation keeps at two or three; a long
   concatenation is iterated, not recursed. */
static void
compile_node (struct re_prog *g, const struct node *nodes, int ni)
{
  const struct node *n = &nodes[ni];
  switch (n->kind)
    {
    case N_EMPTY:
      break;
    case N_RUNE:
      emit (g, OP_RUNE, n->val);
      break;
    case N_CLASS:
      emit (g, OP_CLASS, n->val);
      break;
    case N_ANY_NOT_NL:
      emit (g, OP_ANY_NOT_NL, 0);
      break;
    case N_ASSERT:
      emit (g, OP_ASSERT, n->val);
      break;
    case N_CAT:
      for (int c = n->a; c >= 0; c = nodes[c].next)
        compile_node (g, nodes, c);
      break;
    case N_ALT:
      {
        size_t split = emit (g, OP_SPLIT, 0);
        g->inst[split].x = g->n;
        compile_node (g, nodes, n->a);
        size_t jmp = emit (g, OP_JMP, 0);
        g->inst[split].y = g->n;
        compile_node (g, nodes, n->b);
        g->inst[jmp].x = g->n;
        break;
      }
    case N_QUEST:
      {
        size_t split = emit (g, OP_SPLIT, 0);
        g->inst[split].x = g->n;
        compile_node (g, nodes, n->a);
        g->inst[split].y = g->n;
        break;
      }
    case N_STAR:
      {
        size_t split = emit (g, OP_SPLIT, 0);
        g->inst[split].x = g->n;
        compile_node (g, nodes, n->a);
        size_t jmp = emit (g, OP_JMP, 0);
        g->inst[jmp].x = split;
        g->inst[split].y = g->n;
        break;
      }
    case N_PLUS:
      {
        size_t start = g->n;
        compile_node (g, nodes, n->a);
        size_t split = emit (g, OP_SPLIT, 0);
        g->inst[split].x = start;
        g->inst[split].y = g->n;
        break;
      }
    }
}

static void
re_prog_free (struct re_prog *g)
{
  if (g == NULL)
    return;
  for (size_t i = 0; i < g->nclasses; i++)
    free (g->classes[i].r);
  free (g->classes);
  free (g->inst);
  free (g);
}

static struct re_prog *
re_compile (const uint32_t *s, size_t len, const char **error)
{
  struct re_prog *g = xcalloc (1, sizeof (*g));
  struct re_parser p = { .s = s, .len = len, .prog = g };
  int root = parse_alt (&p);
  if (root >= 0 && p.pos < p.len)
    root = fail (&p, "unexpected )");
  if (root < 0)
    {
      *error = p.error;
      free (p.nodes);
      re_prog_free (g);
      return NULL;
    }
  compile_node (g, p.nodes, root);
  emit (g, OP_MATCH, 0);
  free (p.nodes);
  return g;
}

static bool
is_word_rune (uint32_t r)
{
  return r == '_' || is_alnum_rune (r);
}

static bool
assert_holds (uint32_t kind, size_t pos, size_t len, uint32_t prev, uint32_t next)
{
  switch (kind)
    {
    case AS_BEGIN_TEXT:
      return pos == 0;
    case AS_END_TEXT:
      return pos == len;
    case AS_WORD_BOUNDARY:
    case AS_NOT_WORD_BOUNDARY:
      {
        bool a = pos > 0 && is_word_rune (prev);
        bool b = pos < len && is_word_rune (next);
        return (a != b) == (kind == AS_WORD_BOUNDARY);
      }
    default:
      return false;
    }
}

struct thread_list
{
  size_t *pc;
  size_t n;
};

/* Add pc and everything reachable from it without consuming input. */
static bool
add_thread (const struct re_prog *g, struct thread_list *l, size_t *mark, size_t gen, size_t *stack,
            size_t pc, size_t pos, size_t len, uint32_t prev, uint32_t next)
{
  size_t sp = 0;
  stack[sp++] = pc;
  while (sp > 0)
    {
      pc = stack[--sp];
      if (mark[pc] == gen)
        continue;
      mark[pc] = gen;
      const struct re_inst *in = &g->inst[pc];
      switch (in->op)
        {
        case OP_JMP:
          stack[sp++] = in->x;
          break;
        case OP_SPLIT:
          stack[sp++] = in->y;
          stack[sp++] = in->x;
          break;
        case OP_ASSERT:
          if (assert_holds (in->val, pos, len, prev, next))
            stack[sp++] = pc + 1;
          break;
        case OP_MATCH:
          return true;
        default:
          l->pc[l->n++] = pc;
          break;
        }
    }
  return false;
}

/* Unanchored search, as Go's MatchString (the translated patterns carry
   their own ^ and $). */
static bool
re_match (const struct re_prog *g, const char *str, size_t len)
{
  const unsigned char *s = (const unsigned char *) str;
  size_t n = g->n;
  cleanup_free size_t *mem = xmalloc (sizeof (size_t) * n * 5 + sizeof (size_t));
  struct thread_list cur = { mem, 0 }, nxt = { mem + n, 0 };
  size_t *mark = mem + 2 * n;
  size_t *stack = mem + 3 * n; /* 2n: each instruction pushes at most two */
  memset (mark, 0xff, sizeof (size_t) * n);

  size_t gen = 0, pos = 0, w = 0;
  uint32_t prev = 0, r = len > 0 ? decode_rune (s, len, &w) : 0;
  for (;;)
    {
      if (add_thread (g, &cur, mark, gen, stack, 0, pos, len, prev, r))
        return true;
      if (pos >= len)
        return false;
      size_t nw = 0;
      uint32_t nr = pos + w < len ? decode_rune (s + pos + w, len - pos - w, &nw) : 0;
      gen++;
      nxt.n = 0;
      for (size_t i = 0; i < cur.n; i++)
        {
          const struct re_inst *in = &g->inst[cur.pc[i]];
          bool ok;
          switch (in->op)
            {
            case OP_RUNE:
              ok = in->val == r;
              break;
            case OP_CLASS:
              ok = class_matches (&g->classes[in->val], r);
              break;
            case OP_ANY_NOT_NL:
              ok = r != '\n';
              break;
            default:
              ok = false;
              break;
            }
          if (ok
              && add_thread (g, &nxt, mark, gen, stack, cur.pc[i] + 1, pos + w, len, r, nr))
            return true;
        }
      struct thread_list t = cur;
      cur = nxt;
      nxt = t;
      pos += w;
      prev = r;
      r = nr;
      w = nw;
    }
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
  struct re_prog *re;
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
  return decode_rune (s + pos, n - pos, w);
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
      uint32_t ch = decode_rune (s + pos, n - pos, &w);
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
              rv_push (&re, decode_rune (s + pos, n - pos, &w));
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
      pat->re = re_compile (re.v, re.n, error);
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
      return re_match (p->re, path, n);
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
      re_prog_free (ig->pats[i].re);
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
