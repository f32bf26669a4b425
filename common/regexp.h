/* regexp.h — a small RE2-subset regular expression engine (the syntax Go's
 * regexp accepts that .dockerignore patterns translate to), over runes
 * decoded from UTF-8 as Go decodes them.  Used by common/dockerignore.c. */
#ifndef COMMON_REGEXP_H
#define COMMON_REGEXP_H

#include "common/ps.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* utf8.RuneError, and the largest code point. */
#define PS_RUNE_ERROR 0xFFFDu
#define PS_RUNE_MAX 0x10FFFFu

/* Decode one rune from s[0..n) (n > 0) as Go's utf8.DecodeRuneInString:
   invalid or truncated sequences, overlongs and surrogates give
   PS_RUNE_ERROR with *width 1. */
uint32_t ps_decode_rune (const unsigned char *s, size_t n, size_t *width);

typedef struct ps_regexp ps_regexp;

/* Compile the regexp spelled by the runes s[0..len).  On a syntax error
   returns NULL and points *error at a static message (Go's wording). */
ps_regexp *ps_regexp_compile (const uint32_t *s, size_t len, const char **error);

/* Unanchored search, as Go's MatchString: true when some substring of
   str[0..len) matches (anchor with ^ and $ in the pattern). */
bool ps_regexp_match (const ps_regexp *re, const char *str, size_t len);

void ps_regexp_free (ps_regexp *re);

#endif
