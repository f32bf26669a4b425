/* test_parse.c — the Dockerfile's structure as BuildKit's parser reads it
 * (solver/dockerfile/parse.h), and the buildah dialect check: what
 * buildah 1.28 would refuse after running FROM is refused first, naming
 * the file and line; what it builds passes. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "solver/dockerfile/parse.h"
#include "solver/frontend_image.h"
#include "tests/unit/unit.h"

static dockerfile *
parse_ok (const char *text)
{
  dockerfile *df = NULL;
  ps_error *err = NULL;
  int r = dockerfile_parse (text, strlen (text), "Dockerfile", &df, &err);
  ck_assert_msg (r == 0, "parse failed: %s", err ? err->msg : "?");
  return df;
}

static char *
parse_err (const char *text, size_t len)
{
  dockerfile *df = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (dockerfile_parse (text, len, "Dockerfile", &df, &err), -1);
  ck_assert_ptr_null (df);
  ck_assert_int_eq (err->status, 400);
  char *msg = xstrdup (err->msg);
  ps_error_free (err);
  return msg;
}

/* The check's message, or NULL when the Dockerfile passes. */
static char *
check (const char *text)
{
  cleanup_dockerfile dockerfile *df = parse_ok (text);
  ps_error *err = NULL;
  if (dockerfile_check_buildah (df, "app/Dockerfile", &err) == 0)
    return NULL;
  ck_assert_int_eq (err->status, 400);
  char *msg = xstrdup (err->msg);
  ps_error_free (err);
  return msg;
}

START_TEST (directives_at_the_top_only)
{
  cleanup_dockerfile dockerfile *df = parse_ok ("# syntax = docker/dockerfile:1.7\n"
                                                "#escape=`\n"
                                                "# check=skip=all\n"
                                                "# not a directive\n"
                                                "# syntax=ignored/after/a/comment\n"
                                                "FROM busybox\n");
  ck_assert_str_eq (dockerfile_directive (df, "syntax"), "docker/dockerfile:1.7");
  ck_assert_str_eq (dockerfile_directive (df, "check"), "skip=all");
  ck_assert_int_eq (df->escape, '`');
  ck_assert_int_eq (df->n_insns, 1);
  ck_assert_int_eq (df->insns[0].line, 6);

  /* A blank line or an instruction ends the directives. */
  cleanup_dockerfile dockerfile *late = parse_ok ("\n# syntax=x\nFROM a\n# escape=`\n");
  ck_assert_ptr_null (dockerfile_directive (late, "syntax"));
  ck_assert_int_eq (late->escape, '\\');
}
END_TEST

START_TEST (directive_errors)
{
  cleanup_free char *dup = parse_err ("# syntax=a\n# syntax=b\nFROM x\n", 29);
  ck_assert_str_eq (dup, "Dockerfile:2: only one syntax parser directive can be used");
  cleanup_free char *esc = parse_err ("# escape=x\nFROM x\n", 18);
  ck_assert_pstr_eq (strstr (esc, "invalid escape token 'x'") != NULL ? "found" : esc, "found");
  cleanup_free char *nul = parse_err ("FROM x\0\n", 8);
  ck_assert (strstr (nul, "NUL") != NULL);
}
END_TEST

START_TEST (continuations_comments_and_crlf)
{
  cleanup_dockerfile dockerfile *df = parse_ok ("\xef\xbb\xbf"
                                                "FROM busybox AS base\r\n"
                                                "   RUN echo a \\\r\n"
                                                "  # a comment inside\n"
                                                "\n"
                                                "  && echo b \\  \n"
                                                "  && echo c\n"
                                                "run echo last\\\n");
  ck_assert_int_eq (df->n_insns, 3);
  ck_assert_str_eq (df->insns[0].keyword, "FROM");
  ck_assert_str_eq (df->insns[0].args, "busybox AS base");
  ck_assert_str_eq (df->insns[1].keyword, "RUN");
  ck_assert_int_eq (df->insns[1].line, 2);
  ck_assert_str_eq (df->insns[1].args, "echo a   && echo b   && echo c");
  ck_assert_str_eq (df->insns[2].keyword, "RUN");
  ck_assert_int_eq (df->insns[2].line, 7);
  ck_assert_str_eq (df->insns[2].args, "echo last");

  /* With the backtick as escape character, "\" is just a character. */
  cleanup_dockerfile dockerfile *win = parse_ok ("# escape=`\nFROM x\nCOPY a \\\nRUN dir `\n  c:\\\n");
  ck_assert_int_eq (win->n_insns, 3);
  ck_assert_str_eq (win->insns[1].args, "a \\");
  ck_assert_str_eq (win->insns[2].args, "dir   c:\\");
}
END_TEST

START_TEST (flags_are_split_off_the_front)
{
  cleanup_dockerfile dockerfile *df
      = parse_ok ("FROM --platform=$BUILDPLATFORM busybox\n"
                  "RUN --mount=type=secret,id=\"a b\" --network=none -- echo --not-a-flag\n"
                  "COPY --link --chmod=755 src /dst\n"
                  "CMD echo --help\n");
  ck_assert_str_eq (df_instruction_flag (&df->insns[0], "platform"), "$BUILDPLATFORM");
  ck_assert_str_eq (df->insns[0].args, "busybox");
  ck_assert_int_eq (df->insns[1].n_flags, 2);
  ck_assert_str_eq (df_instruction_flag (&df->insns[1], "mount"), "type=secret,id=a b");
  ck_assert_str_eq (df_instruction_flag (&df->insns[1], "network"), "none");
  ck_assert_str_eq (df->insns[1].args, "echo --not-a-flag");
  ck_assert_str_eq (df_instruction_flag (&df->insns[2], "link"), "");
  ck_assert_str_eq (df_instruction_flag (&df->insns[2], "chmod"), "755");
  ck_assert_ptr_null (df_instruction_flag (&df->insns[2], "from"));
  ck_assert_int_eq (df->insns[3].n_flags, 0);
}
END_TEST

START_TEST (heredocs_take_their_bodies)
{
  cleanup_dockerfile dockerfile *df = parse_ok ("FROM busybox\n"
                                                "RUN <<EOF\n"
                                                "echo hi > /x\n"
                                                "FROM not-an-instruction\n"
                                                "EOF\n"
                                                "COPY <<-\"ONE\" 3<<TWO /dst/\n"
                                                "\tfirst $X\n"
                                                "\t\tONE\n"
                                                "second\n"
                                                "TWO\n"
                                                "RUN cat <<<not-a-heredoc\n"
                                                "RUN echo '<<EOF'\n");
  ck_assert_int_eq (df->n_insns, 5);
  const struct df_instruction *run = &df->insns[1];
  ck_assert_int_eq (run->n_heredocs, 1);
  ck_assert_str_eq (run->heredocs[0].word, "EOF");
  ck_assert_str_eq (run->heredocs[0].body, "echo hi > /x\nFROM not-an-instruction\n");
  ck_assert (run->heredocs[0].expand);
  const struct df_instruction *copy = &df->insns[2];
  ck_assert_int_eq (copy->line, 6);
  ck_assert_int_eq (copy->n_heredocs, 2);
  ck_assert_str_eq (copy->heredocs[0].word, "ONE");
  ck_assert (copy->heredocs[0].strip_tabs);
  ck_assert (!copy->heredocs[0].expand);
  ck_assert_str_eq (copy->heredocs[0].body, "\tfirst $X\n");
  ck_assert_str_eq (copy->heredocs[1].word, "TWO");
  ck_assert_str_eq (copy->heredocs[1].body, "second\n");
  ck_assert_int_eq (df->insns[3].n_heredocs, 0);
  ck_assert_int_eq (df->insns[4].n_heredocs, 0);
  ck_assert_int_eq (df->insns[4].line, 12);

  const char *open = "FROM x\nRUN <<EOF\necho\n";
  cleanup_free char *msg = parse_err (open, strlen (open));
  ck_assert_str_eq (msg, "Dockerfile:2: unterminated heredoc: no line \"EOF\" ends the RUN <<EOF");
}
END_TEST

START_TEST (buildah_builds_these)
{
  const char *ok[] = {
    "FROM busybox\nRUN echo hi\n",
    "ARG BASE=busybox\nFROM $BASE AS one\nCOPY --from=one --chown=1:1 --chmod=0644 a /a\nADD --chmod=755 b /b\n",
    "from busybox\nrun --mount=type=cache,target=/c true\nonbuild run echo later\n",
    "FROM --platform=linux/amd64 busybox\nHEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=2 "
    "CMD true\n",
    "FROM busybox\nCMD --help\nENTRYPOINT [\"sh\"]\nMAINTAINER me\nSTOPSIGNAL SIGTERM\nSHELL [\"sh\", \"-c\"]\n",
  };
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    {
      cleanup_free char *msg = check (ok[i]);
      ck_assert_msg (msg == NULL, "case %zu refused: %s", i, msg);
    }
}
END_TEST

START_TEST (buildah_refuses_these_before_anything_runs)
{
  static const struct
  {
    const char *text, *msg;
  } cases[] = {
    { "FROM b\nRUN <<EOF\ntrue\nEOF\n",
      "app/Dockerfile:2: RUN <<EOF: heredocs are not supported by podsolve's Dockerfile builder (buildah 1.28)" },
    { "FROM b\nCOPY --link a /a\n", "app/Dockerfile:2: COPY --link is not supported by podsolve's Dockerfile builder "
                                    "(buildah 1.28 takes --from, --chown and --chmod on COPY)" },
    { "FROM b\n\nADD --checksum=sha256:00 a /a\n",
      "app/Dockerfile:3: ADD --checksum is not supported by podsolve's Dockerfile builder (buildah 1.28 takes "
      "--chown and --chmod on ADD)" },
    { "FROM b\nRUN --network=none true\n",
      "app/Dockerfile:2: RUN --network is not supported by podsolve's Dockerfile builder (buildah 1.28 takes "
      "--mount on RUN)" },
    { "FROM b\nCOPY --chmod=u+x a /a\n", "app/Dockerfile:2: COPY --chmod=u+x: podsolve's Dockerfile builder "
                                         "(buildah 1.28) takes an octal mode only, such as --chmod=755" },
    { "FROM b\nECHO hi\n", "app/Dockerfile:2: unknown instruction: ECHO" },
    { "RUN true\nFROM b\n", "app/Dockerfile:1: RUN before the first FROM (only ARG may come before FROM)" },
    { "FROM b\nWORKDIR\n", "app/Dockerfile:2: WORKDIR requires at least one argument" },
    { "FROM b\nONBUILD FROM c\n", "app/Dockerfile:2: FROM isn't allowed as an ONBUILD trigger" },
    { "FROM b\nONBUILD COPY --link a /a\n",
      "app/Dockerfile:2: COPY --link is not supported by podsolve's Dockerfile builder (buildah 1.28 takes --from, "
      "--chown and --chmod on COPY)" },
    { "# only a comment\n", "app/Dockerfile: the Dockerfile has no instructions" },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    {
      cleanup_free char *msg = check (cases[i].text);
      ck_assert_msg (msg != NULL, "case %zu passed", i);
      ck_assert_str_eq (msg, cases[i].msg);
    }
}
END_TEST

/* BuildKit's DetectSyntax: only the leading directive lines, `#` or `//`,
   of a file that need not be a Dockerfile at all. */
START_TEST (syntax_is_detected_in_any_definition)
{
  struct
  {
    const char *text, *want;
  } cases[] = {
    { "# syntax=docker/dockerfile:1\nFROM b\n", "docker/dockerfile:1" },
    { "\xef\xbb\xbf#syntax = docker/dockerfile:1.7 --opt x\n", "docker/dockerfile:1.7 --opt x" },
    { "# escape=`\n# syntax=img\n", "img" },
    { "// syntax=localhost/fe\n[app]\nbase = \"x\"\n", "localhost/fe" },
    { "FROM b\n# syntax=late\n", NULL },
    { "# a comment\n# syntax=after-comment\n", NULL },
    { "[app] <<EOF unterminated\n", NULL },
    { "", NULL },
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    {
      cleanup_free char *got = dockerfile_detect_syntax (cases[i].text, strlen (cases[i].text));
      if (cases[i].want == NULL)
        ck_assert_msg (got == NULL, "case %zu: got %s", i, got);
      else
        ck_assert_str_eq (got, cases[i].want);
    }
}
END_TEST

/* Which frontend a Dockerfile build runs through: the BUILDKIT_SYNTAX
   build-arg over the directive, then the daemon's default. */
START_TEST (frontend_for_a_dockerfile)
{
  frontend_image_set_dockerfile_default (NULL);
  ck_assert_ptr_null (frontend_image_for_dockerfile (NULL, NULL, NULL));
  cleanup_free char *cmd = NULL;
  cleanup_free char *a = frontend_image_for_dockerfile (" docker/dockerfile:1  --x y", NULL, &cmd);
  ck_assert_str_eq (a, "docker/dockerfile:1");
  ck_assert_str_eq (cmd, "--x y");
  cleanup_free char *b = frontend_image_for_dockerfile ("docker/dockerfile:1", "localhost/other", NULL);
  ck_assert_str_eq (b, "localhost/other");
  frontend_image_set_dockerfile_default ("buildah");
  ck_assert_ptr_null (frontend_image_for_dockerfile (NULL, "", NULL));
  frontend_image_set_dockerfile_default ("docker.io/docker/dockerfile:1");
  cleanup_free char *c = frontend_image_for_dockerfile (NULL, NULL, NULL);
  ck_assert_str_eq (c, "docker.io/docker/dockerfile:1");
  cleanup_free char *d = frontend_image_for_dockerfile ("mine", NULL, NULL);
  ck_assert_str_eq (d, "mine");
  frontend_image_set_dockerfile_default (NULL);
}
END_TEST

/* What buildah 1.28 printed first for these files (checked by hand with
   `buildah build`): "STEP 1/N: FROM IMAGE", global ARGs not counted, the
   continuation joined.  Where the file alone cannot say (variables, AS,
   flags, several stages whose order buildah picks by need): nothing. */
START_TEST (buildah_first_step_is_predicted_only_when_certain)
{
  static const struct
  {
    const char *text, *want;
  } cases[] = {
    { "FROM scratch\nLABEL a=b\n", "STEP 1/2: FROM scratch" },
    { "# syntax=x\n# c\n\nFROM \\\n  localhost/busybox:latest\nRUN true\nCMD [\"sh\"]\n",
      "STEP 1/3: FROM localhost/busybox:latest" },
    { "ARG V=1\nFROM scratch\n", "STEP 1/1: FROM scratch" },
    { "ARG X=scratch\nFROM $X\nLABEL a=b\n", NULL },
    { "FROM ${X}\n", NULL },
    { "FROM scratch AS base\nLABEL a=b\n", NULL },
    { "FROM --platform=linux/arm64 scratch\n", NULL },
    { "FROM scratch AS a\nLABEL x=1\nFROM a\n", NULL },
    { "FROM scratch\nCOPY --from=other / /\nFROM scratch\n", NULL },
    { "LABEL a=b\n", NULL },
    { "ARG A\n", NULL },
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      cleanup_dockerfile dockerfile *df = parse_ok (cases[i].text);
      cleanup_free char *got = dockerfile_buildah_first_step (df);
      if (cases[i].want)
        ck_assert_msg (got && strcmp (got, cases[i].want) == 0, "case %zu: %s", i, got ? got : "(null)");
      else
        ck_assert_msg (got == NULL, "case %zu: %s", i, got);
    }
}
END_TEST

PS_TEST_SUITE (dockerfile_parse)
{
  Suite *s = suite_create ("dockerfile_parse");
  TCase *tc = tcase_create ("parse");
  tcase_add_test (tc, directives_at_the_top_only);
  tcase_add_test (tc, directive_errors);
  tcase_add_test (tc, continuations_comments_and_crlf);
  tcase_add_test (tc, flags_are_split_off_the_front);
  tcase_add_test (tc, heredocs_take_their_bodies);
  tcase_add_test (tc, syntax_is_detected_in_any_definition);
  tcase_add_test (tc, frontend_for_a_dockerfile);
  suite_add_tcase (s, tc);
  TCase *dialect = tcase_create ("buildah dialect");
  tcase_add_test (dialect, buildah_builds_these);
  tcase_add_test (dialect, buildah_refuses_these_before_anything_runs);
  tcase_add_test (dialect, buildah_first_step_is_predicted_only_when_certain);
  suite_add_tcase (s, dialect);
  return s;
}
