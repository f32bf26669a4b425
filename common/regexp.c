/* regexp.c — the small RE2-subset regular expression engine behind
 * .dockerignore matching (common/dockerignore.c), and UTF-8 decoding as Go
 * does it.
 *
 * The syntax is the part of Go's regexp/syntax that translated ignore
 * patterns can produce: literals, '.', classes ([a-z], [^/], [[:alpha:]],
 * \d \s \w and their complements), groups, '|', '*' '+' '?', '^' '$' and
 * \b \B.  A pattern is parsed to a tree, compiled to a Pike VM program and
 * run in O(len * program) over runes decoded as Go does (an invalid UTF-8
 * byte is U+FFFD with width 1).
 */
#define _GNU_SOURCE
#include "common/regexp.h"

#include <stdlib.h>
#include <string.h>

/* ---- UTF-8 as Go decodes it ----------------------------------------------- */

/* Decode one rune from s[0..n); invalid or truncated sequences, overlongs
   and surrogates give U+FFFD with width 1, as utf8.DecodeRuneInString. */
uint32_t
ps_decode_rune (const unsigned char *s, size_t n, size_t *width)
{
  *width = 1;
  if (n == 0)
    return PS_RUNE_ERROR;
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
    return PS_RUNE_ERROR;
  if (n < need + 1)
    return PS_RUNE_ERROR;
  for (size_t i = 1; i <= need; i++)
    {
      if ((s[i] & 0xC0) != 0x80)
        return PS_RUNE_ERROR;
      r = (r << 6) | (s[i] & 0x3F);
    }
  if (r < min || r > PS_RUNE_MAX || (r >= 0xD800 && r <= 0xDFFF))
    return PS_RUNE_ERROR;
  *width = need + 1;
  return r;
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
  if (next <= PS_RUNE_MAX)
    class_add (c, next, PS_RUNE_MAX);
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

struct ps_regexp
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
  ps_regexp *prog;
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
  ps_regexp *g = p->prog;
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
                if (r > PS_RUNE_MAX)
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
emit (ps_regexp *g, enum re_op op, uint32_t val)
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
compile_node (ps_regexp *g, const struct node *nodes, int ni)
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

void
ps_regexp_free (ps_regexp *g)
{
  if (g == NULL)
    return;
  for (size_t i = 0; i < g->nclasses; i++)
    free (g->classes[i].r);
  free (g->classes);
  free (g->inst);
  free (g);
}

ps_regexp *
ps_regexp_compile (const uint32_t *s, size_t len, const char **error)
{
  ps_regexp *g = xcalloc (1, sizeof (*g));
  struct re_parser p = { .s = s, .len = len, .prog = g };
  int root = parse_alt (&p);
  if (root >= 0 && p.pos < p.len)
    root = fail (&p, "unexpected )");
  if (root < 0)
    {
      *error = p.error;
      free (p.nodes);
      ps_regexp_free (g);
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
add_thread (const ps_regexp *g, struct thread_list *l, size_t *mark, size_t gen, size_t *stack,
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
bool
ps_regexp_match (const ps_regexp *g, const char *str, size_t len)
{
  const unsigned char *s = (const unsigned char *) str;
  size_t n = g->n;
  cleanup_free size_t *mem = xmalloc (sizeof (size_t) * n * 5 + sizeof (size_t));
  struct thread_list cur = { mem, 0 }, nxt = { mem + n, 0 };
  size_t *mark = mem + 2 * n;
  size_t *stack = mem + 3 * n; /* 2n: each instruction pushes at most two */
  memset (mark, 0xff, sizeof (size_t) * n);

  size_t gen = 0, pos = 0, w = 0;
  uint32_t prev = 0, r = len > 0 ? ps_decode_rune (s, len, &w) : 0;
  for (;;)
    {
      if (add_thread (g, &cur, mark, gen, stack, 0, pos, len, prev, r))
        return true;
      if (pos >= len)
        return false;
      size_t nw = 0;
      uint32_t nr = pos + w < len ? ps_decode_rune (s + pos + w, len - pos - w, &nw) : 0;
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
