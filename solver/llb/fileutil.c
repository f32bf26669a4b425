/* llb_fileutil.c — Go's filepath.Match, chmod(1) mode strings and
 * passwd/group lookups for LLB FileOps (see llb_fileutil.h).
 *
 * The matcher is a port of Go's path/filepath match.go (scanChunk,
 * matchChunk, getEsc) on bytes with '/' as separator, because BuildKit
 * resolves copy and rm wildcards with it: '*' and '?' never match '/',
 * classes are "[lo-hi...]" negated by '^' (not '!'), '\\' escapes.  The
 * mode code follows BSD setmode.c as ported by github.com/dchapes/mode,
 * which BuildKit's fsutil uses for modeStr. */
#define _GNU_SOURCE
#include "solver/llb/fileutil.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/ps.h"

/* ---- wildcards (Go path/filepath.Match) ---------------------------------------- */

bool
llb_has_wildcards (const char *s)
{
  for (; *s; s++)
    {
      if (*s == '\\')
        {
          if (s[1] == '\0')
            break;
          s++;
        }
      else if (*s == '*' || *s == '?' || *s == '[')
        return true;
    }
  return false;
}

/* utf8.DecodeRuneInString: invalid or truncated sequences are U+FFFD, 1 byte. */
static uint32_t
decode_rune (const char *s, size_t len, size_t *width)
{
  const unsigned char *u = (const unsigned char *) s;
  *width = 1;
  if (len == 0)
    return 0xFFFD;
  if (u[0] < 0x80)
    return u[0];
  size_t n;
  uint32_t r, min;
  if ((u[0] & 0xE0) == 0xC0)
    n = 2, r = u[0] & 0x1F, min = 0x80;
  else if ((u[0] & 0xF0) == 0xE0)
    n = 3, r = u[0] & 0x0F, min = 0x800;
  else if ((u[0] & 0xF8) == 0xF0)
    n = 4, r = u[0] & 0x07, min = 0x10000;
  else
    return 0xFFFD;
  if (len < n)
    return 0xFFFD;
  for (size_t i = 1; i < n; i++)
    {
      if ((u[i] & 0xC0) != 0x80)
        return 0xFFFD;
      r = r << 6 | (u[i] & 0x3F);
    }
  if (r < min || r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF))
    return 0xFFFD;
  *width = n;
  return r;
}

struct span
{
  const char *p;
  size_t n;
};

static void
advance (struct span *s, size_t k)
{
  s->p += k;
  s->n -= k;
}

/* scanChunk: leading stars, then up to the next '*' outside a class. */
static bool
scan_chunk (struct span *pattern, struct span *chunk)
{
  bool star = false;
  while (pattern->n > 0 && pattern->p[0] == '*')
    {
      advance (pattern, 1);
      star = true;
    }
  bool inrange = false;
  size_t i;
  for (i = 0; i < pattern->n; i++)
    {
      char c = pattern->p[i];
      if (c == '\\')
        {
          if (i + 1 < pattern->n)
            i++;
        }
      else if (c == '[')
        inrange = true;
      else if (c == ']')
        inrange = false;
      else if (c == '*' && !inrange)
        break;
    }
  chunk->p = pattern->p;
  chunk->n = i;
  advance (pattern, i);
  return star;
}

/* getEsc: one possibly escaped rune of a class; -1 = bad pattern. */
static int
get_esc (struct span *chunk, uint32_t *r)
{
  if (chunk->n == 0 || chunk->p[0] == '-' || chunk->p[0] == ']')
    return -1;
  if (chunk->p[0] == '\\')
    {
      advance (chunk, 1);
      if (chunk->n == 0)
        return -1;
    }
  size_t w;
  *r = decode_rune (chunk->p, chunk->n, &w);
  int ret = *r == 0xFFFD && w == 1 && (unsigned char) chunk->p[0] >= 0x80 ? -1 : 0;
  advance (chunk, w);
  if (chunk->n == 0)
    ret = -1;
  return ret;
}

/* matchChunk: 1 with *rest set, 0 no match, -1 bad pattern.  After a
   mismatch the chunk is still scanned, so a malformed one is reported. */
static int
match_chunk (struct span chunk, struct span s, struct span *rest)
{
  bool failed = false;
  while (chunk.n > 0)
    {
      if (!failed && s.n == 0)
        failed = true;
      switch (chunk.p[0])
        {
        case '[':
          {
            uint32_t r = 0;
            if (!failed)
              {
                size_t w;
                r = decode_rune (s.p, s.n, &w);
                advance (&s, w);
              }
            advance (&chunk, 1);
            bool negated = false;
            if (chunk.n > 0 && chunk.p[0] == '^')
              {
                negated = true;
                advance (&chunk, 1);
              }
            bool match = false;
            for (int nrange = 0;; nrange++)
              {
                if (chunk.n > 0 && chunk.p[0] == ']' && nrange > 0)
                  {
                    advance (&chunk, 1);
                    break;
                  }
                uint32_t lo, hi;
                if (get_esc (&chunk, &lo) < 0)
                  return -1;
                hi = lo;
                if (chunk.p[0] == '-')
                  {
                    advance (&chunk, 1);
                    if (get_esc (&chunk, &hi) < 0)
                      return -1;
                  }
                if (lo <= r && r <= hi)
                  match = true;
              }
            if (match == negated)
              failed = true;
            break;
          }
        case '?':
          if (!failed)
            {
              if (s.p[0] == '/')
                failed = true;
              size_t w;
              decode_rune (s.p, s.n, &w);
              advance (&s, w);
            }
          advance (&chunk, 1);
          break;
        case '\\':
          advance (&chunk, 1);
          if (chunk.n == 0)
            return -1;
          /* fall through */
        default:
          if (!failed)
            {
              if (chunk.p[0] != s.p[0])
                failed = true;
              advance (&s, 1);
            }
          advance (&chunk, 1);
        }
    }
  if (failed)
    return 0;
  *rest = s;
  return 1;
}

bool
llb_glob_valid (const char *pattern)
{
  struct span p = { pattern, strlen (pattern) }, chunk, rest;
  while (p.n > 0)
    {
      scan_chunk (&p, &chunk);
      if (match_chunk (chunk, (struct span) { "", 0 }, &rest) < 0)
        return false;
    }
  return true;
}

int
llb_glob_match (const char *pattern, const char *name)
{
  struct span p = { pattern, strlen (pattern) };
  struct span s = { name, strlen (name) };
  while (p.n > 0)
    {
      struct span chunk, t;
      bool star = scan_chunk (&p, &chunk);
      if (star && chunk.n == 0)
        return memchr (s.p, '/', s.n) == NULL; /* a trailing star takes the rest of the element */
      int r = match_chunk (chunk, s, &t);
      /* the last chunk must take all of the name */
      if (r == 1 && (t.n == 0 || p.n > 0))
        {
          s = t;
          continue;
        }
      if (r < 0)
        return -1;
      bool found = false;
      if (star)
        for (size_t i = 0; i < s.n && s.p[i] != '/'; i++)
          {
            r = match_chunk (chunk, (struct span) { s.p + i + 1, s.n - i - 1 }, &t);
            if (r == 1)
              {
                if (p.n == 0 && t.n > 0)
                  continue;
                s = t;
                found = true;
                break;
              }
            if (r < 0)
              return -1;
          }
      if (found)
        continue;
      return llb_glob_valid (p.p) ? 0 : -1;
    }
  return s.n == 0;
}

/* ---- chmod(1) modes (BSD setmode with umask 0) --------------------------------------- */

enum
{
  M_ISUID = 04000,
  M_ISGID = 02000,
  M_ISTXT = 01000,
  M_RWXU = 00700,
  M_RWXG = 00070,
  M_RWXO = 00007,
  M_R = 00444,
  M_W = 00222,
  M_X = 00111,
  M_STANDARD = M_ISUID | M_ISGID | M_RWXU | M_RWXG | M_RWXO,
};

enum
{
  CMD2_CLEAR = 1,
  CMD2_SET = 2,
  CMD2_GBITS = 4,
  CMD2_OBITS = 8,
  CMD2_UBITS = 16,
};

static void
add_cmd (struct llb_modeset *m, char op, uint16_t who, uint16_t oparg, uint16_t mask)
{
  struct llb_mode_cmd c = { 0 };
  switch (op)
    {
    case '=':
      c.cmd = '-';
      c.bits = who ? who : M_STANDARD;
      m->cmds[m->n++] = c;
      op = '+';
      /* fall through */
    case '+':
    case '-':
    case 'X':
      c.cmd = op;
      c.bits = who ? who & oparg : mask & oparg;
      break;
    default: /* 'u', 'g', 'o': oparg is the operator */
      c.cmd = op;
      if (who)
        {
          if (who & 0400)
            c.cmd2 |= CMD2_UBITS;
          if (who & 0040)
            c.cmd2 |= CMD2_GBITS;
          if (who & 0004)
            c.cmd2 |= CMD2_OBITS;
          c.bits = 0xFFFF;
        }
      else
        {
          c.cmd2 = CMD2_UBITS | CMD2_GBITS | CMD2_OBITS;
          c.bits = mask;
        }
      if (oparg == '+')
        c.cmd2 |= CMD2_SET;
      else if (oparg == '-')
        c.cmd2 |= CMD2_CLEAR;
      else
        c.cmd2 |= CMD2_SET | CMD2_CLEAR;
    }
  m->cmds[m->n++] = c;
}

int
llb_modeset_parse (const char *s, struct llb_modeset *m)
{
  m->n = 0;
  /* each input byte adds at most two commands, '=' one more */
  m->cmds = xcalloc (3 * strlen (s) + 4, sizeof *m->cmds);
  if (*s == '\0')
    goto bad;
  if (isdigit ((unsigned char) *s))
    {
      /* strconv.ParseInt(s, 8, 16) */
      unsigned long v = 0;
      for (const char *p = s; *p; p++)
        {
          if (*p < '0' || *p > '7' || (v = v * 8 + (unsigned long) (*p - '0')) > 077777)
            goto bad;
        }
      if (v & ~(unsigned long) (M_STANDARD | M_ISTXT))
        goto bad;
      add_cmd (m, '=', M_STANDARD | M_ISTXT, (uint16_t) v, 0);
      return 0;
    }

  const uint16_t mask = 0xFFFF; /* ^umask, umask 0 */
  bool equal_done = false;
  const char *p = s;
  for (;;)
    {
      uint16_t who = 0;
      for (;; p++)
        {
          if (*p == '\0')
            goto bad;
          if (*p == 'a')
            who |= M_STANDARD;
          else if (*p == 'u')
            who |= M_ISUID | M_RWXU;
          else if (*p == 'g')
            who |= M_ISGID | M_RWXG;
          else if (*p == 'o')
            who |= M_RWXO;
          else
            break;
        }
      for (;;) /* operators of one clause: "u+r-w" */
        {
          char op = *p++;
          if (op == '=')
            equal_done = false;
          else if (op != '+' && op != '-')
            goto bad;
          who &= (uint16_t) ~M_ISTXT;
          uint16_t perm = 0, permx = 0;
          for (;; p++)
            {
              char b = *p;
              if (b == 'r')
                perm |= M_R;
              else if (b == 'w')
                perm |= M_W;
              else if (b == 'x')
                perm |= M_X;
              else if (b == 's')
                {
                  if (who == 0 || (who & ~M_RWXO))
                    perm |= M_ISUID | M_ISGID;
                }
              else if (b == 't')
                {
                  if (who == 0 || (who & ~M_RWXO))
                    {
                      who |= M_ISTXT;
                      perm |= M_ISTXT;
                    }
                }
              else if (b == 'X')
                {
                  if (op == '+')
                    permx = M_X;
                }
              else if (b == 'u' || b == 'g' || b == 'o')
                {
                  if (perm)
                    {
                      add_cmd (m, op, who, perm, mask);
                      perm = 0;
                    }
                  if (op == '=')
                    equal_done = true;
                  if (permx)
                    {
                      add_cmd (m, 'X', who, permx, mask);
                      permx = 0;
                    }
                  add_cmd (m, b, who, (uint16_t) op, mask);
                }
              else
                {
                  if (perm || (op == '=' && !equal_done))
                    {
                      if (op == '=')
                        equal_done = true;
                      add_cmd (m, op, who, perm, mask);
                    }
                  if (permx)
                    add_cmd (m, 'X', who, permx, mask);
                  break;
                }
            }
          if (*p == '\0')
            return 0;
          if (*p == ',')
            break;
        }
      p++;
    }
bad:
  llb_modeset_free (m);
  return -1;
}

mode_t
llb_modeset_apply (const struct llb_modeset *m, mode_t mode)
{
  uint16_t omode = (uint16_t) (mode & 07777), newmode = omode;
  for (size_t i = 0; i < m->n; i++)
    {
      const struct llb_mode_cmd *c = &m->cmds[i];
      uint16_t value;
      switch (c->cmd)
        {
        case '+':
          newmode |= c->bits;
          break;
        case '-':
          newmode &= (uint16_t) ~c->bits;
          break;
        case 'X':
          if ((omode & M_X) || S_ISDIR (mode))
            newmode |= c->bits;
          break;
        default:
          value = c->cmd == 'u' ? (newmode & M_RWXU) >> 6 : c->cmd == 'g' ? (newmode & M_RWXG) >> 3 : newmode & M_RWXO;
          if (c->cmd2 & CMD2_CLEAR)
            {
              uint16_t clr = (c->cmd2 & CMD2_SET) ? M_RWXO : value;
              if (c->cmd2 & CMD2_UBITS)
                newmode &= (uint16_t) ~((clr << 6) & c->bits);
              if (c->cmd2 & CMD2_GBITS)
                newmode &= (uint16_t) ~((clr << 3) & c->bits);
              if (c->cmd2 & CMD2_OBITS)
                newmode &= (uint16_t) ~(clr & c->bits);
            }
          if (c->cmd2 & CMD2_SET)
            {
              if (c->cmd2 & CMD2_UBITS)
                newmode |= (uint16_t) ((value << 6) & c->bits);
              if (c->cmd2 & CMD2_GBITS)
                newmode |= (uint16_t) ((value << 3) & c->bits);
              if (c->cmd2 & CMD2_OBITS)
                newmode |= (uint16_t) (value & c->bits);
            }
        }
    }
  return (mode & ~(mode_t) 07777) | newmode;
}

void
llb_modeset_free (struct llb_modeset *m)
{
  free (m->cmds);
  m->cmds = NULL;
  m->n = 0;
}

/* ---- /etc/passwd and /etc/group ---------------------------------------------------- */

/* The entry for `name` split into fields (at most `max`); 1, 0 none. */
static int
find_entry (const char *text, size_t len, const char *name, struct span *fields, size_t max, size_t *nfields)
{
  size_t namelen = strlen (name);
  const char *end = text + len;
  for (const char *line = text; line < end;)
    {
      const char *nl = memchr (line, '\n', (size_t) (end - line));
      const char *le = nl ? nl : end;
      const char *next = nl ? nl + 1 : end;
      /* bytes.TrimSpace (ASCII white space; a CRLF file loses its '\r') */
      while (line < le && isspace ((unsigned char) *line))
        line++;
      while (le > line && isspace ((unsigned char) le[-1]))
        le--;
      if (le > line && *line != '#')
        {
          const char *colon = memchr (line, ':', (size_t) (le - line));
          const char *ne = colon ? colon : le;
          if ((size_t) (ne - line) == namelen && memcmp (line, name, namelen) == 0)
            {
              size_t n = 0;
              for (const char *f = line; n < max;)
                {
                  const char *c = memchr (f, ':', (size_t) (le - f));
                  fields[n++] = (struct span) { f, (size_t) ((c ? c : le) - f) };
                  if (c == NULL)
                    break;
                  f = c + 1;
                }
              *nfields = n;
              return 1;
            }
        }
      line = next;
    }
  return 0;
}

static bool
parse_id (struct span s, uint32_t *out)
{
  if (s.n == 0 || s.n > 10)
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < s.n; i++)
    {
      if (s.p[i] < '0' || s.p[i] > '9')
        return false;
      v = v * 10 + (uint64_t) (s.p[i] - '0');
    }
  if (v > UINT32_MAX)
    return false;
  *out = (uint32_t) v;
  return true;
}

int
llb_passwd_lookup (const char *text, size_t len, const char *name, uint32_t *uid, uint32_t *gid)
{
  struct span f[4];
  size_t n = 0;
  if (!find_entry (text, len, name, f, 4, &n))
    return 0;
  if (n < 4 || !parse_id (f[2], uid) || !parse_id (f[3], gid))
    return -1;
  return 1;
}

int
llb_group_lookup (const char *text, size_t len, const char *name, uint32_t *gid)
{
  struct span f[3];
  size_t n = 0;
  if (!find_entry (text, len, name, f, 3, &n))
    return 0;
  if (n < 3 || !parse_id (f[2], gid))
    return -1;
  return 1;
}
