/* dockerignore.h — .dockerignore / .containerignore pattern matching with
 * Docker's semantics (moby/patternmatcher): one pattern per line, '#'
 * comments, surrounding white space trimmed, a leading '/' and "./"
 * dropped, the pattern cleaned like Go's filepath.Clean, '!' re-includes,
 * '*' '?' '[...]' within one path element, '**' across any number of
 * elements, '\\' escapes.  The last matching pattern decides; a path is
 * also excluded when one of its parent directories is excluded and no
 * later '!' pattern re-includes it. */
#ifndef SOLVER_DOCKERIGNORE_H
#define SOLVER_DOCKERIGNORE_H

#include "common/ps.h"

typedef struct ps_ignore ps_ignore;

/* Parse the text of an ignore file.  An empty text gives a matcher that
   matches nothing.  Fails (status 400) on a malformed pattern such as an
   unterminated '['. */
ps_ignore *ps_ignore_parse (const char *text, size_t len, ps_error **err);

/* Build a matcher from patterns already split (e.g. a JSON "excludes" list). */
ps_ignore *ps_ignore_from_patterns (const char *const *patterns, size_t n, ps_error **err);

/* True when `relpath` (relative, '/'-separated, no "." or ".." elements)
   is excluded by the patterns. */
bool ps_ignore_matches (const ps_ignore *ig, const char *relpath);

/* True when some '!' pattern could re-include a path below `reldir`, so a
   walker must not skip the excluded directory wholesale. */
bool ps_ignore_has_exceptions (const ps_ignore *ig);

size_t ps_ignore_count (const ps_ignore *ig);
void ps_ignore_free (ps_ignore *ig);

#endif
