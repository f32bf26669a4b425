/* parse.h — a Dockerfile's structure, read the way BuildKit's parser reads
 * it (frontend/dockerfile/parser): parser directives at the top (syntax,
 * escape, check), comments and blank lines dropped, line continuations
 * joined with the escape character, heredocs (<<EOF, <<-EOF, <<"EOF") of
 * RUN/COPY/ADD taken with their bodies, `--flag[=value]` words split off
 * the front of each instruction.  It knows the shape of the file, not what
 * the instructions mean: the buildah path checks the dialect with it before
 * anything runs (dockerfile_check_buildah), so what buildah cannot do is
 * one clear error naming the file and line. */
#ifndef SOLVER_DOCKERFILE_PARSE_H
#define SOLVER_DOCKERFILE_PARSE_H

#include "common/ps.h"

struct df_flag
{
  char *name;  /* without the leading "--" */
  char *value; /* NULL for a bare --flag */
};

struct df_heredoc
{
  char *word;      /* the terminator, unquoted */
  bool strip_tabs; /* <<-WORD */
  bool expand;     /* the word was not quoted */
  char *body;      /* the lines in between, each ending in "\n" */
};

struct df_instruction
{
  unsigned line;   /* 1-based: the instruction's first line */
  char *keyword;   /* upper case */
  char *original;  /* the logical line, continuations joined */
  struct df_flag *flags;
  size_t n_flags;
  char *args;      /* what follows the flags, trimmed */
  struct df_heredoc *heredocs;
  size_t n_heredocs;
};

struct df_directive
{
  char *name; /* lower case */
  char *value;
  unsigned line;
};

typedef struct dockerfile
{
  char escape; /* '\\' or '`' */
  struct df_directive *directives;
  size_t n_directives;
  struct df_instruction *insns;
  size_t n_insns;
} dockerfile;

/* Parse `text` (`len` bytes; NUL bytes are an error).  400 errors name
   `fname` and the line: an unknown escape character, a repeated
   directive, a heredoc without its terminator. */
int dockerfile_parse (const char *text, size_t len, const char *fname, dockerfile **out, ps_error **err);
void dockerfile_free (dockerfile *df);
static inline void
cleanup_dockerfilep (dockerfile **p)
{
  dockerfile_free (*p);
}
#define cleanup_dockerfile __attribute__ ((cleanup (cleanup_dockerfilep)))

/* The value of directive `name` (lower case), or NULL. */
const char *dockerfile_directive (const dockerfile *df, const char *name);

/* The `syntax` directive of a build definition that may not be a
   Dockerfile at all (a gateway frontend's own format): only the leading
   `# name=value` (or `// name=value`) lines are read, as BuildKit's
   DetectSyntax does.  malloc'd, or NULL. */
char *dockerfile_detect_syntax (const char *text, size_t len);

/* The value of instruction flag `name`, "" for a bare flag, NULL if absent. */
const char *df_instruction_flag (const struct df_instruction *in, const char *name);

/* Whether `df` is a Dockerfile buildah 1.28 (podsolve's Dockerfile builder)
   builds: the instructions exist, come after a FROM (ARG excepted) and
   have arguments, and use only the flags buildah knows — no heredocs, no
   COPY --link/--parents/--exclude, ADD --checksum/--keep-git-dir, RUN
   --network/--security, symbolic --chmod.  0, or -1 with a 400 naming
   `fname`, the line and the instruction as written. */
int dockerfile_check_buildah (const dockerfile *df, const char *fname, ps_error **err);

/* The first line `buildah build` prints for `df`, "STEP 1/N: FROM IMAGE",
   when it can be told from the file alone: one stage, ARGs at most before
   it, a FROM of one literal word without flags (no variable, no
   --platform, no AS).  malloc'd, or NULL for every other file.  podsolve
   says it before buildah has started (a Go program that opens the store
   first: 20 ms), so a client's first line does not wait for that. */
char *dockerfile_buildah_first_step (const dockerfile *df);

#endif
