/* buildah_output.c — classify `buildah build` output lines and map them to
 * job events.  The shapes are listed in buildah_output.h. */
#define _GNU_SOURCE
#include "solver/dockerfile/buildah_output.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/limits.h"
#include "common/log.h"

static bool
all_hex (const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!isxdigit ((unsigned char) s[i]) || isupper ((unsigned char) s[i]))
      return false;
  return true;
}

/* Parse "[s/S] " at the start of `line`; returns the rest or NULL. */
static const char *
parse_stage_prefix (const char *line, int *stage, int *nstages)
{
  int s, S, n = 0;
  if (sscanf (line, "[%d/%d] %n", &s, &S, &n) == 2 && n > 0 && s > 0 && S > 0)
    {
      *stage = s;
      *nstages = S;
      return line + n;
    }
  return NULL;
}

/* buildah 1.28 (internal/parse: GetSSHMount... "ssh required but no ssh
   with id %s found") for a required ssh mount whose id has no --ssh; the
   client sees BuildKit's text for the same case (solver/llbsolver/mounts).
   If buildah rewords it, the client gets buildah's words instead. */
#define BUILDAH_SSH_MISSING "ssh required but no ssh with id "

char *
buildah_error_message (const char *message)
{
  const char *p = strstr (message, BUILDAH_SSH_MISSING);
  if (p == NULL)
    return xstrdup (message);
  const char *id = p + strlen (BUILDAH_SSH_MISSING);
  const char *end = strstr (id, " found");
  if (end == NULL || end == id)
    return xstrdup (message);
  return xasprintf ("%.*sno SSH key \"%.*s\" forwarded from the client", (int) (p - message), message,
                    (int) (end - id), id);
}

void
buildah_line_classify (const char *line, bool from_stderr, struct buildah_line *out)
{
  memset (out, 0, sizeof *out);
  out->kind = BUILDAH_LINE_OTHER;
  out->rest = line;
  size_t len = strlen (line);

  if (from_stderr)
    {
      int code, n = 0;
      if (ps_str_has_prefix (line, "Error: "))
        {
          out->kind = BUILDAH_LINE_ERROR;
          out->rest = line + 7;
        }
      else if (sscanf (line, "subprocess exited with status %d%n", &code, &n) == 1
               && line[n] == '\0')
        {
          out->kind = BUILDAH_LINE_SUBPROCESS_EXIT;
          out->exit_code = code;
        }
      return;
    }

  const char *p = line;
  int stage = 0, nstages = 0;
  const char *after = parse_stage_prefix (line, &stage, &nstages);
  if (after != NULL)
    p = after;

  int step, nsteps, n = 0;
  if (sscanf (p, "STEP %d/%d: %n", &step, &nsteps, &n) == 2 && n > 0 && step > 0)
    {
      out->kind = BUILDAH_LINE_STEP;
      out->stage = stage;
      out->nstages = nstages;
      out->step = step;
      out->nsteps = nsteps;
      out->rest = p + n;
      return;
    }
  if (strcmp (p, "COMMIT") == 0 || ps_str_has_prefix (p, "COMMIT "))
    {
      out->kind = BUILDAH_LINE_COMMIT;
      out->stage = stage;
      out->nstages = nstages;
      out->rest = p[6] == ' ' ? p + 7 : p + 6;
      return;
    }
  if (after != NULL)
    return;

  if (ps_str_has_prefix (line, "--> Using cache ") && len == 16 + 64 && all_hex (line + 16, 64))
    {
      out->kind = BUILDAH_LINE_USING_CACHE;
      memcpy (out->id, line + 16, 64);
      return;
    }
  if (ps_str_has_prefix (line, "--> ") && len >= 4 + 11 && len <= 4 + 64 && all_hex (line + 4, len - 4))
    {
      out->kind = BUILDAH_LINE_LAYER;
      memcpy (out->id, line + 4, len - 4);
      return;
    }
  if (ps_str_has_prefix (line, "Successfully tagged "))
    {
      out->kind = BUILDAH_LINE_TAGGED;
      out->rest = line + 20;
      return;
    }
  if (len == 64 && all_hex (line, 64))
    {
      out->kind = BUILDAH_LINE_IMAGE_ID;
      memcpy (out->id, line, 64);
    }
}

/* ---- progress mapping --------------------------------------------------- */

#define MAX_STAGES 128

struct buildah_progress
{
  solver_job *job;
  char *root_digest;

  /* the open vertex */
  char *digest;
  char *name;
  char *input;        /* previous vertex of the same stage, or NULL */
  int64_t started_ns;
  bool open;          /* started and not yet completed */

  char *stage_labels[MAX_STAGES];
  char *stage_last[MAX_STAGES]; /* last vertex digest of each stage */
  char *last_digest;            /* last vertex of any stage */

  char image_id[65];
  char *error;
  int exit_code;
  char *context_dir;

  char *platform;          /* a multi-platform build's platform of this run, or NULL */
  char *announced;         /* the first STEP line, said before buildah printed it */
  bool arg_step;           /* the step running is an ARG */
  ps_strv arg_cache_keys;  /* keys of the ARG steps pushed to --cache-to */
};

buildah_progress *
buildah_progress_new (solver_job *job, const char *root_digest)
{
  buildah_progress *p = xcalloc (1, sizeof *p);
  p->job = job;
  p->root_digest = xstrdup (root_digest ? root_digest : "");
  return p;
}

void
buildah_progress_free (buildah_progress *p)
{
  if (p == NULL)
    return;
  free (p->root_digest);
  free (p->announced);
  free (p->digest);
  free (p->name);
  free (p->input);
  for (int i = 0; i < MAX_STAGES; i++)
    {
      free (p->stage_labels[i]);
      free (p->stage_last[i]);
    }
  free (p->last_digest);
  free (p->error);
  free (p->context_dir);
  free (p->platform);
  ps_strv_free (&p->arg_cache_keys);
  free (p);
}

void
buildah_progress_set_context_dir (buildah_progress *p, const char *dir)
{
  free (p->context_dir);
  p->context_dir = dir ? xstrdup (dir) : NULL;
}

void
buildah_progress_announce (buildah_progress *p, const char *line)
{
  cleanup_free char *text = xasprintf ("%s\n", line);
  buildah_progress_line (p, text, strlen (text), false);
  free (p->announced);
  p->announced = xstrdup (line);
}

void
buildah_progress_set_platform (buildah_progress *p, const char *platform)
{
  free (p->platform);
  p->platform = platform ? xstrdup (platform) : NULL;
  if (platform)
    {
      /* Each platform's steps are vertices of their own. */
      cleanup_free char *material = xasprintf ("%s\nplatform %s", p->root_digest, platform);
      char hex[65];
      ps_sha256_hex (material, strlen (material), hex);
      free (p->root_digest);
      p->root_digest = xasprintf ("sha256:%s", hex);
    }
}

/* `s` with every `from` replaced by `to`. */
static char *
replace_all (const char *s, const char *from, const char *to)
{
  ps_buf b = { 0 };
  size_t flen = strlen (from);
  for (const char *hit; (hit = strstr (s, from)) != NULL; s = hit + flen)
    ps_buf_printf (&b, "%.*s%s", (int) (hit - s), s, to);
  ps_buf_printf (&b, "%s", s);
  return ps_buf_steal (&b);
}

char *
buildah_error_for_user (const char *msg, const char *ctx_dir)
{
  cleanup_free char *cut = buildah_error_message (msg);
  char *dump = strstr (cut, " &imagebuilder.");
  if (dump)
    *dump = '\0';
  if (ctx_dir == NULL || *ctx_dir == '\0')
    return steal_pointer (&cut);
  /* "checking on sources under \"CTX\": ...", then "CTX/x" as "x". */
  cleanup_free char *under = xasprintf ("under \"%s\"", ctx_dir);
  cleanup_free char *named = replace_all (cut, under, "in the build context");
  cleanup_free char *prefix = xasprintf ("%s/", ctx_dir);
  cleanup_free char *rel = replace_all (named, prefix, "");
  return replace_all (rel, ctx_dir, "the build context");
}

static char *
chain_digest (const char *parent, const char *label, const char *instr)
{
  cleanup_free char *material = xasprintf ("%s\n%s\n%s", parent ? parent : "", label, instr);
  char hex[65];
  ps_sha256_hex (material, strlen (material), hex);
  return xasprintf ("sha256:%s", hex);
}

static void
emit_vertex (buildah_progress *p, bool completed, bool cached, const char *error, const char *text)
{
  const char *inputs[] = { p->input, NULL };
  int64_t completed_ns = !completed ? 0 : cached ? p->started_ns : ps_now_ns ();
  solver_job_emit_vertex (p->job, p->digest, p->name, inputs, p->started_ns, completed_ns, cached, error, text);
}

static void
emit_text (buildah_progress *p, const char *text)
{
  struct solver_event ev = { .kind = SOLVER_EV_TEXT };
  ev.vertex = p->digest ? xstrdup (p->digest) : NULL;
  ev.text = xstrdup (text);
  solver_job_emit (p->job, &ev);
}

static void
close_vertex (buildah_progress *p)
{
  if (p->open)
    emit_vertex (p, true, false, NULL, NULL);
  p->open = false;
}

static void
open_vertex (buildah_progress *p, char *digest, char *name, const char *input, const char *text)
{
  close_vertex (p);
  free (p->digest);
  free (p->name);
  free (p->input);
  p->digest = digest;
  p->name = name;
  p->input = input ? xstrdup (input) : NULL;
  p->started_ns = ps_now_ns ();
  p->open = true;
  free (p->last_digest);
  p->last_digest = xstrdup (digest);
  emit_vertex (p, false, false, NULL, text);
}

/* BuildKit names stages by their "AS" name, else "stage-<index>". */
static const char *
stage_label (buildah_progress *p, int stage, const char *from_instr)
{
  int i = stage - 1;
  if (i < 0 || i >= MAX_STAGES)
    return "stage";
  if (p->stage_labels[i] == NULL)
    {
      const char *as = NULL;
      if (from_instr && strncasecmp (from_instr, "FROM ", 5) == 0)
        {
          const char *q = strcasestr (from_instr, " AS ");
          if (q)
            as = q + 4;
        }
      p->stage_labels[i] = as && *as ? xstrdup (as) : xasprintf ("stage-%d", i);
    }
  return p->stage_labels[i];
}

static void
on_step (buildah_progress *p, const struct buildah_line *l, const char *text)
{
  char *name;
  const char *label;
  int si = l->stage > 0 ? l->stage - 1 : 0;
  if (si >= MAX_STAGES)
    si = MAX_STAGES - 1;
  /* BuildKit shows "FROM image" without its " AS name" (the name is the
     stage label already). */
  size_t instr_len = strlen (l->rest);
  if (strncasecmp (l->rest, "FROM ", 5) == 0)
    {
      const char *as = strcasestr (l->rest, " AS ");
      if (as)
        instr_len = (size_t) (as - l->rest);
    }
  if (l->nstages > 1)
    {
      label = stage_label (p, l->stage, l->step == 1 ? l->rest : NULL);
      /* BuildKit: "[linux/arm64 build 2/4] RUN ..." */
      name = xasprintf ("[%s%s%s %d/%d] %.*s", p->platform ? p->platform : "", p->platform ? " " : "", label,
                        l->step, l->nsteps, (int) instr_len, l->rest);
    }
  else
    {
      label = "stage-0";
      name = xasprintf ("[%s%s%d/%d] %.*s", p->platform ? p->platform : "", p->platform ? " " : "", l->step,
                        l->nsteps, (int) instr_len, l->rest);
    }
  p->arg_step = strncasecmp (l->rest, "ARG ", 4) == 0;
  const char *parent = l->step == 1 ? NULL : p->stage_last[si];
  char *digest = chain_digest (parent ? parent : p->root_digest, label, l->rest);
  open_vertex (p, digest, name, parent, text);
  free (p->stage_last[si]); /* only now: `parent` pointed at it */
  p->stage_last[si] = xstrdup (digest);
}

/* buildah 1.28 passes TARGETPLATFORM and friends as build args when
   --platform is given, then warns that the Dockerfile did not use them;
   BuildKit defines them quietly.  True for that warning when it names
   nothing else. */
static bool
unconsumed_automatic_args (const char *line)
{
  static const char prefix[] = "[Warning] one or more build args were not consumed: [";
  if (!ps_str_has_prefix (line, prefix))
    return false;
  static const char *const automatic[] = { "TARGETPLATFORM", "TARGETOS",    "TARGETARCH",   "TARGETVARIANT",
                                           "BUILDPLATFORM",  "BUILDOS",     "BUILDARCH",    "BUILDVARIANT" };
  const char *p = line + sizeof prefix - 1;
  while (*p && *p != ']')
    {
      size_t n = strcspn (p, " ]");
      bool known = false;
      for (size_t i = 0; i < sizeof automatic / sizeof automatic[0]; i++)
        known = known || (strlen (automatic[i]) == n && strncmp (p, automatic[i], n) == 0);
      if (!known)
        return false;
      p += n;
      while (*p == ' ')
        p++;
    }
  return *p == ']';
}

void
buildah_progress_line (buildah_progress *p, const char *line, size_t len, bool from_stderr)
{
  /* Classify without the newline; keep the line as printed for the text. */
  cleanup_free char *bare = xstrndup (line, len);
  size_t blen = len;
  while (blen > 0 && (bare[blen - 1] == '\n' || bare[blen - 1] == '\r'))
    bare[--blen] = '\0';

  struct buildah_line l;
  buildah_line_classify (bare, from_stderr, &l);
  if (l.kind == BUILDAH_LINE_STEP && p->announced)
    {
      /* The first STEP line: said already if buildah says the same. */
      bool same = strcmp (bare, p->announced) == 0;
      free (p->announced);
      p->announced = NULL;
      if (same)
        return;
      ps_warn ("buildah's first step line differs from the one podsolve announced: \"%s\"", bare);
    }
  cleanup_free char *text = xstrndup (line, len);

  switch (l.kind)
    {
    case BUILDAH_LINE_STEP:
      on_step (p, &l, text);
      return;

    case BUILDAH_LINE_USING_CACHE:
      buildah_progress_cached (p, text);
      return;

    case BUILDAH_LINE_COMMIT:
      {
        const char *input = p->last_digest;
        char *digest = chain_digest (input ? input : p->root_digest, "export", "exporting to image");
        open_vertex (p, digest, xstrdup ("exporting to image"), input, text);
        return;
      }

    case BUILDAH_LINE_IMAGE_ID:
      memcpy (p->image_id, l.id, 65);
      emit_text (p, text);
      return;

    case BUILDAH_LINE_LAYER:
    case BUILDAH_LINE_TAGGED:
      emit_text (p, text);
      return;

    case BUILDAH_LINE_ERROR:
      free (p->error);
      p->error = buildah_error_for_user (l.rest, p->context_dir);
      return;

    case BUILDAH_LINE_SUBPROCESS_EXIT:
      p->exit_code = l.exit_code;
      emit_text (p, text);
      return;

    case BUILDAH_LINE_OTHER:
      /* logrus's "(UNHANDLED LOGLEVEL)" echo of a Go struct: the error
         line after it says what went wrong. */
      if (strstr (line, "(UNHANDLED LOGLEVEL)") != NULL)
        return;
      if (unconsumed_automatic_args (bare))
        return;
      /* "--> Pushing cache REPO:KEY" (buildah 1.28's logCachePush). */
      if (!from_stderr && p->arg_step && ps_str_has_prefix (bare, "--> Pushing cache "))
        {
          const char *key = strrchr (bare, ':');
          if (key && strlen (key + 1) == 64 && all_hex (key + 1, 64))
            ps_strv_push (&p->arg_cache_keys, key + 1);
        }
      solver_job_emit_log (p->job, p->open ? p->digest : NULL, from_stderr ? 2 : 1, line, len, NULL);
      return;
    }
}

void
buildah_progress_cached (buildah_progress *p, const char *text)
{
  if (p->open)
    {
      emit_vertex (p, true, true, NULL, NULL);
      p->open = false;
    }
  if (text)
    emit_text (p, text);
}

void
buildah_progress_finish (buildah_progress *p, bool success, const char *error)
{
  if (!p->open)
    return;
  if (success)
    close_vertex (p);
  else
    {
      emit_vertex (p, true, false, error ? error : (p->error ? p->error : "failed"), NULL);
      p->open = false;
    }
}

const char *
buildah_progress_image_id (const buildah_progress *p)
{
  return p->image_id;
}

const char *
buildah_progress_error (const buildah_progress *p)
{
  return p->error;
}

int
buildah_progress_exit_code (const buildah_progress *p)
{
  return p->exit_code;
}

const ps_strv *
buildah_progress_arg_cache_keys (const buildah_progress *p)
{
  return &p->arg_cache_keys;
}

const char *
buildah_progress_current_vertex (const buildah_progress *p)
{
  return p->digest;
}
