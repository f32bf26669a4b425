/* cmd_build.c — `podsolve build`: a Dockerfile build through POST /solve.
 *
 * The context directory is tarred (ignore file applied) into an unlinked
 * temporary file and streamed as the multipart "context" part; a
 * Dockerfile outside the context travels as its own "dockerfile" part.
 * The NDJSON answer drives the progress display; after the result line,
 * outputs the daemon kept are downloaded to their --output destinations. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/context_tar.h"
#include "client/http.h"
#include "client/outputs.h"
#include "client/progress.h"
#include "client/solve_stream.h"

struct build_opts
{
  const char *context;
  const char *file; /* -f as given; "-" = stdin */
  ps_strv tags;
  ps_strv frontend_attrs; /* key, value, key, value ... */
  const char *ref;
  enum cli_progress_mode progress;
  struct cli_output *outputs;
  size_t n_outputs;
};

/* Where the Dockerfile comes from. */
struct dockerfile
{
  char *rel;      /* its name inside the context; NULL when it is sent apart */
  char *path;     /* its path here (NULL for stdin) */
  char *name;     /* frontendAttrs.filename */
  int fd;         /* sent apart: the open file (stdin is copied first) */
};

static void
usage (FILE *out)
{
  fprintf (out,
           "Usage: podsolve build [OPTIONS] CONTEXT\n\n"
           "Build CONTEXT (a directory) with its Dockerfile on podsolved.\n\n"
           "Options:\n"
           "  -f, --file FILE          the Dockerfile (default CONTEXT/Dockerfile or CONTEXT/Containerfile;\n"
           "                           - reads it from stdin)\n"
           "  -t, --tag NAME           name the image (repeatable)\n"
           "      --build-arg K=V      set a build argument (K alone: take V from the environment)\n"
           "      --label K=V          set an image label\n"
           "      --target STAGE       build up to this stage\n"
           "      --platform P         target platform(s), e.g. linux/amd64\n"
           "      --no-cache           do not use the build cache\n"
           "  -o, --output SPEC        type=local,dest=DIR | type=tar,dest=FILE|- | type=oci|docker,dest=FILE[,name=N]\n"
           "                           | type=image,name=N[,push=true] | type=cacheonly (repeatable)\n"
           "      --progress MODE      auto, tty, plain, rawjson or quiet (default auto)\n"
           "      --ref REF            name the solve (for podsolve status/cancel)\n"
           "      --host ADDRESS       daemon address (see podsolve --help)\n");
}

static void
opts_free (struct build_opts *o)
{
  ps_strv_free (&o->tags);
  ps_strv_free (&o->frontend_attrs);
  for (size_t i = 0; i < o->n_outputs; i++)
    cli_output_free (&o->outputs[i]);
  free (o->outputs);
}

static void
add_attr (struct build_opts *o, const char *key, const char *value)
{
  ps_strv_push (&o->frontend_attrs, key);
  ps_strv_push (&o->frontend_attrs, value);
}

/* --build-arg / --label: K=V; a build arg K alone takes $K (and is left out
   when $K is unset), as docker build does. */
static int
add_kv (struct build_opts *o, const char *prefix, const char *arg, bool from_env, ps_error **err)
{
  const char *eq = strchr (arg, '=');
  if (eq == arg || *arg == '\0')
    return ps_error_set (err, 0, "--%s %s: expected KEY=VALUE", strcmp (prefix, "label:") == 0 ? "label" : "build-arg",
                         arg);
  cleanup_free char *key = eq ? xstrndup (arg, (size_t) (eq - arg)) : xstrdup (arg);
  cleanup_free char *attr = xasprintf ("%s%s", prefix, key);
  const char *value = eq ? eq + 1 : from_env ? getenv (key) : "";
  if (value)
    add_attr (o, attr, value);
  return 0;
}

enum
{
  OPT_BUILD_ARG = 0x100,
  OPT_LABEL,
  OPT_TARGET,
  OPT_PLATFORM,
  OPT_NO_CACHE,
  OPT_PROGRESS,
  OPT_REF,
};

/* Returns 0 to build, 1 when --help was answered, -1 on a usage error. */
static int
parse_args (struct cli_global *g, int argc, char **argv, struct build_opts *o, ps_error **err)
{
  static const struct option longopts[] = {
    { "file", required_argument, NULL, 'f' },
    { "tag", required_argument, NULL, 't' },
    { "build-arg", required_argument, NULL, OPT_BUILD_ARG },
    { "label", required_argument, NULL, OPT_LABEL },
    { "target", required_argument, NULL, OPT_TARGET },
    { "platform", required_argument, NULL, OPT_PLATFORM },
    { "no-cache", no_argument, NULL, OPT_NO_CACHE },
    { "output", required_argument, NULL, 'o' },
    { "progress", required_argument, NULL, OPT_PROGRESS },
    { "ref", required_argument, NULL, OPT_REF },
    CLI_LONGOPT_HOST,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long (argc, argv, "f:t:o:h", longopts, NULL)) != -1)
    {
      int r = 0;
      switch (c)
        {
        case 'f':
          o->file = optarg;
          break;
        case 't':
          ps_strv_push (&o->tags, optarg);
          break;
        case OPT_BUILD_ARG:
          r = add_kv (o, "build-arg:", optarg, true, err);
          break;
        case OPT_LABEL:
          r = add_kv (o, "label:", optarg, false, err);
          break;
        case OPT_TARGET:
          add_attr (o, "target", optarg);
          break;
        case OPT_PLATFORM:
          add_attr (o, "platform", optarg);
          break;
        case OPT_NO_CACHE:
          add_attr (o, "no-cache", "");
          break;
        case 'o':
          o->outputs = xrealloc (o->outputs, (o->n_outputs + 1) * sizeof *o->outputs);
          r = cli_output_parse (optarg, &o->outputs[o->n_outputs], err);
          if (r == 0)
            o->n_outputs++;
          break;
        case OPT_PROGRESS:
          r = cli_progress_parse_mode (optarg, &o->progress, err);
          break;
        case OPT_REF:
          o->ref = optarg;
          break;
        case CLI_OPT_HOST:
          g->host = optarg;
          break;
        case 'h':
          usage (stdout);
          return 1;
        default:
          return ps_error_set (err, 0, "see 'podsolve build --help'");
        }
      if (r < 0)
        return -1;
    }
  if (optind + 1 != argc)
    return ps_error_set (err, 0, "build takes exactly one CONTEXT directory (see 'podsolve build --help')");
  o->context = argv[optind];
  size_t to_stdout = 0;
  for (size_t i = 0; i < o->n_outputs; i++)
    to_stdout += o->outputs[i].dest && strcmp (o->outputs[i].dest, "-") == 0;
  if (to_stdout > 1)
    return ps_error_set (err, 0, "only one --output can write to stdout");
  return 0;
}

/* ---- the inputs -------------------------------------------------------------------- */

static void
dockerfile_free (struct dockerfile *df)
{
  free (df->rel);
  free (df->path);
  free (df->name);
  if (df->fd >= 0)
    close (df->fd);
}

static bool
is_file (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 && S_ISREG (st.st_mode);
}

/* A copy of stdin in a temporary file: the part needs its size up front. */
static int
stdin_copy (ps_error **err)
{
  int fd = cli_tmpfile (err);
  if (fd < 0)
    return -1;
  char buf[65536];
  for (;;)
    {
      ssize_t r = read (STDIN_FILENO, buf, sizeof buf);
      if (r < 0 && errno == EINTR && !cli_interrupted)
        continue;
      if (r < 0)
        {
          ps_error_set_errno (err, 0, errno, "read the Dockerfile from stdin");
          close (fd);
          return -1;
        }
      if (r == 0)
        return fd;
      if (write (fd, buf, (size_t) r) != r)
        {
          ps_error_set_errno (err, 0, errno, "store the Dockerfile from stdin");
          close (fd);
          return -1;
        }
    }
}

static int
find_dockerfile (const char *context_real, const char *file, struct dockerfile *df, ps_error **err)
{
  df->fd = -1;
  if (file == NULL)
    {
      static const char *const defaults[] = { "Dockerfile", "Containerfile" };
      for (size_t i = 0; i < ARRAY_SIZE (defaults) && df->rel == NULL; i++)
        {
          cleanup_free char *path = xasprintf ("%s/%s", context_real, defaults[i]);
          if (is_file (path))
            {
              df->rel = xstrdup (defaults[i]);
              df->name = xstrdup (defaults[i]);
              df->path = steal_pointer (&path);
            }
        }
      if (df->rel == NULL)
        return ps_error_set (err, 0, "no Dockerfile or Containerfile in %s (name one with -f)", context_real);
      return 0;
    }
  if (strcmp (file, "-") == 0)
    {
      df->name = xstrdup ("Dockerfile");
      df->fd = stdin_copy (err);
      return df->fd < 0 ? -1 : 0;
    }
  /* -f is relative to the working directory, as with docker build */
  char real[PATH_MAX];
  if (realpath (file, real) == NULL)
    return ps_error_set_errno (err, 0, errno, "Dockerfile %s", file);
  if (!is_file (real))
    return ps_error_set (err, 0, "Dockerfile %s is not a regular file", file);
  df->path = xstrdup (file);
  size_t n = strlen (context_real);
  if (strncmp (real, context_real, n) == 0 && real[n] == '/')
    {
      df->rel = xstrdup (real + n + 1);
      df->name = xstrdup (df->rel);
      return 0;
    }
  cleanup_free char *copy = xstrdup (real);
  df->name = xstrdup (basename (copy));
  df->fd = open (real, O_RDONLY | O_CLOEXEC);
  if (df->fd < 0)
    return ps_error_set_errno (err, 0, errno, "open %s", file);
  return 0;
}

/* The context tar in a temporary file; returns its descriptor. */
static int
tar_context (const char *context_real, const struct dockerfile *df, uint64_t *size, ps_error **err)
{
  cleanup_free char *ignore_rel = NULL;
  ps_ignore *ig = cli_context_load_ignore (context_real, df->path, df->rel, &ignore_rel, err);
  if (ig == NULL && err && *err)
    return -1;
  const char *keep[] = { df->rel, ignore_rel };
  int fd = cli_tmpfile (err);
  struct cli_context_stats stats;
  int ret = fd < 0 ? -1 : cli_context_tar (context_real, ig, keep, ARRAY_SIZE (keep), fd, &stats, err);
  ps_ignore_free (ig);
  if (ret < 0)
    {
      if (fd >= 0)
        close (fd);
      return -1;
    }
  if (stats.skipped)
    fprintf (stderr, "podsolve: warning: %zu sockets, fifos or device nodes in the context were not sent\n",
             stats.skipped);
  off_t end = lseek (fd, 0, SEEK_END);
  if (end < 0)
    {
      close (fd);
      return ps_error_set_errno (err, 0, errno, "measure the context tar");
    }
  *size = (uint64_t) end;
  return fd;
}

/* The SolveRequest; numbers each output's exporter on the way. */
static char *
request_json (struct build_opts *o, const struct dockerfile *df)
{
  cJSON *req = cJSON_CreateObject ();
  if (o->ref)
    cJSON_AddStringToObject (req, "ref", o->ref);
  cJSON_AddStringToObject (req, "frontend", "dockerfile.v0");
  cJSON *attrs = cJSON_AddObjectToObject (req, "frontendAttrs");
  cJSON_AddStringToObject (attrs, "filename", df->name);
  for (size_t i = 0; i + 1 < o->frontend_attrs.n; i += 2)
    {
      cJSON_DeleteItemFromObjectCaseSensitive (attrs, o->frontend_attrs.v[i]); /* the last one wins */
      cJSON_AddStringToObject (attrs, o->frontend_attrs.v[i], o->frontend_attrs.v[i + 1]);
    }
  cJSON *exporters = cJSON_AddArrayToObject (req, "exporters");
  if (o->tags.n > 0)
    {
      ps_buf names = { 0 };
      for (size_t i = 0; i < o->tags.n; i++)
        ps_buf_printf (&names, "%s%s", i ? "," : "", o->tags.v[i]);
      cJSON *e = cJSON_CreateObject ();
      cJSON_AddStringToObject (e, "type", "image");
      cJSON_AddStringToObject (cJSON_AddObjectToObject (e, "attrs"), "name", names.data);
      cJSON_AddItemToArray (exporters, e);
      ps_buf_free (&names);
    }
  for (size_t i = 0; i < o->n_outputs; i++)
    {
      o->outputs[i].exporter = (size_t) cJSON_GetArraySize (exporters);
      cJSON_AddItemToArray (exporters, cli_output_exporter (&o->outputs[i]));
    }
  char *text = cJSON_PrintUnformatted (req);
  cJSON_Delete (req);
  if (text == NULL)
    abort ();
  char *copy = xstrdup (text);
  cJSON_free (text);
  return copy;
}

/* ---- the build ------------------------------------------------------------------------ */

static int
run_build (cli_http *h, struct build_opts *o, ps_error **err)
{
  char context_real[PATH_MAX];
  struct stat st;
  if (realpath (o->context, context_real) == NULL || stat (context_real, &st) < 0)
    {
      ps_error_set_errno (err, 0, errno, "context %s", o->context);
      return CLI_EXIT_FAILED;
    }
  if (!S_ISDIR (st.st_mode))
    {
      ps_error_set (err, 0, "context %s is not a directory", o->context);
      return CLI_EXIT_FAILED;
    }
  struct dockerfile df = { .fd = -1 };
  uint64_t ctx_size = 0, df_size = 0;
  cleanup_close int ctx_fd = -1;
  cleanup_close int df_tar = -1;
  if (find_dockerfile (context_real, o->file, &df, err) < 0
      || (ctx_fd = tar_context (context_real, &df, &ctx_size, err)) < 0)
    {
      dockerfile_free (&df);
      return cli_interrupted ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FAILED;
    }
  if (df.rel == NULL)
    {
      df_tar = cli_tmpfile (err);
      if (df_tar < 0 || cli_context_tar_file (df.fd, df.name, df_tar, err) < 0)
        {
          dockerfile_free (&df);
          return CLI_EXIT_FAILED;
        }
      df_size = (uint64_t) lseek (df_tar, 0, SEEK_END);
    }

  cleanup_free char *json = request_json (o, &df);
  struct cli_http_part parts[3] = {
    { .name = "request", .content_type = "application/json", .data = json, .len = strlen (json), .fd = -1 },
    { .name = "context", .content_type = "application/x-tar", .filename = "context.tar", .fd = ctx_fd,
      .size = ctx_size },
    { .name = "dockerfile", .content_type = "application/x-tar", .filename = "dockerfile.tar", .fd = df_tar,
      .size = df_size },
  };
  dockerfile_free (&df);

  cli_progress *progress = cli_progress_new (o->progress, stderr);
  struct cli_solve_stream s;
  cli_solve_stream_init (&s, progress);
  struct cli_http_stream hs = { .on_line = cli_solve_stream_line, .on_tick = cli_solve_stream_tick, .ud = &s };
  ps_error *stream_err = NULL;
  int ret = cli_http_stream (h, "POST", "/solve", parts, df_tar >= 0 ? 3 : 2, &hs, &stream_err);
  if (stream_err)
    ps_error_wrap (&stream_err, "build");
  int code = cli_solve_stream_report (&s, ret, stream_err,
                                      "interrupted: the connection is closed, so podsolved cancels the build");
  ps_error_free (stream_err);
  const char *ref = s.result_ref ? s.result_ref : hs.solve_ref;
  if (code == CLI_EXIT_OK && ref && cli_outputs_fetch (h, ref, o->outputs, o->n_outputs, err) < 0)
    code = cli_interrupted ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FAILED;
  cli_solve_stream_free (&s);
  cli_progress_free (progress);
  free (hs.solve_ref);
  return code;
}

int
cmd_build (struct cli_global *g, int argc, char **argv)
{
  struct build_opts o = { .progress = CLI_PROGRESS_AUTO };
  cleanup_error ps_error *err = NULL;
  int r = parse_args (g, argc, argv, &o, &err);
  if (r != 0)
    {
      opts_free (&o);
      if (r > 0)
        return CLI_EXIT_OK;
      cli_print_error (err);
      return CLI_EXIT_USAGE;
    }
  cli_http *h = cli_http_new (g->host, &err);
  int code = CLI_EXIT_USAGE;
  if (h)
    code = run_build (h, &o, &err);
  if (err)
    {
      ps_error_wrap (&err, "build");
      cli_print_error (err);
    }
  cli_http_free (h);
  opts_free (&o);
  return code;
}
