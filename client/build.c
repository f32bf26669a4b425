/* build.c — one build through POST /solve (see build.h).
 *
 * The context directory is tarred (ignore file applied) into an unlinked
 * temporary file and streamed as the multipart "context" part; a
 * Dockerfile outside the context travels as its own "dockerfile" part.
 * The NDJSON answer drives the progress display; after the result line,
 * outputs the daemon kept are downloaded to their --output destinations. */
#define _GNU_SOURCE
#include "client/build.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/context_tar.h"
#include "client/session.h"
#include "client/solve_stream.h"

/* Where the Dockerfile comes from. */
struct dockerfile
{
  char *rel;  /* its name inside the context; NULL when it is sent apart */
  char *path; /* its path here (NULL for stdin) */
  char *name; /* frontendAttrs.filename */
  int fd;     /* sent apart: the open file (stdin is copied first) */
};

void
cli_build_opts_free (struct cli_build_opts *o)
{
  ps_strv_free (&o->tags);
  ps_strv_free (&o->frontend_attrs);
  ps_strv_free (&o->add_hosts);
  ps_strv_free (&o->cache_from);
  ps_strv_free (&o->cache_to);
  ps_strv_free (&o->entitlements);
  for (size_t i = 0; i < o->n_secrets; i++)
    cli_secret_free (&o->secrets[i]);
  free (o->secrets);
  for (size_t i = 0; i < o->n_ssh; i++)
    cli_ssh_free (&o->ssh[i]);
  free (o->ssh);
  for (size_t i = 0; i < o->n_outputs; i++)
    cli_output_free (&o->outputs[i]);
  free (o->outputs);
  memset (o, 0, sizeof *o);
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
      for (ssize_t off = 0; off < r;)
        {
          ssize_t w = write (fd, buf + off, (size_t) (r - off));
          if (w < 0 && errno == EINTR)
            continue;
          if (w < 0)
            {
              ps_error_set_errno (err, 0, errno, "store the Dockerfile from stdin");
              close (fd);
              return -1;
            }
          off += w;
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

/* A --cache-from/--cache-to SPEC as {"type","attrs"}: buildx's CSV
   (type=registry,ref=R,mode=max; type=local,src=DIR|dest=DIR — a
   directory on the daemon's side), or a plain ref as type=registry. */
static cJSON *
cli_cache_entry_json (const char *spec)
{
  cJSON *e = cJSON_CreateObject ();
  cJSON *attrs = cJSON_CreateObject ();
  ps_strv pairs = { 0 };
  if (strchr (spec, '=') == NULL)
    cJSON_AddStringToObject (attrs, "ref", spec);
  else
    ps_csv_pairs (spec, &pairs);
  for (size_t i = 0; i + 1 < pairs.n; i += 2)
    if (strcmp (pairs.v[i], "type") != 0)
      cJSON_AddStringToObject (attrs, pairs.v[i], pairs.v[i + 1]);
  const char *type = ps_pairs_get (&pairs, "type");
  if (type == NULL)
    type = "registry";
  cJSON_AddStringToObject (e, "type", type);
  cJSON_AddItemToObject (e, "attrs", attrs);
  ps_strv_free (&pairs);
  return e;
}

/* The SolveRequest; numbers each output's exporter on the way.  `session`:
   the uuid of the session serving --secret and --ssh, or NULL. */
static char *
request_json (struct cli_build_opts *o, const char *df_name, const char *session)
{
  cJSON *req = cJSON_CreateObject ();
  if (o->ref)
    cJSON_AddStringToObject (req, "ref", o->ref);
  if (session)
    cJSON_AddStringToObject (req, "session", session);
  cJSON_AddStringToObject (req, "frontend", "dockerfile.v0");
  cJSON *attrs = cJSON_AddObjectToObject (req, "frontendAttrs");
  cJSON_AddStringToObject (attrs, "filename", df_name);
  for (size_t i = 0; i + 1 < o->frontend_attrs.n; i += 2)
    {
      cJSON_DeleteItemFromObjectCaseSensitive (attrs, o->frontend_attrs.v[i]); /* the last one wins */
      cJSON_AddStringToObject (attrs, o->frontend_attrs.v[i], o->frontend_attrs.v[i + 1]);
    }
  if (o->add_hosts.n)
    {
      ps_buf hosts = { 0 };
      for (size_t i = 0; i < o->add_hosts.n; i++)
        ps_buf_printf (&hosts, "%s%s", i ? "," : "", o->add_hosts.v[i]);
      cJSON_DeleteItemFromObjectCaseSensitive (attrs, "add-hosts");
      cJSON_AddStringToObject (attrs, "add-hosts", hosts.data);
      ps_buf_free (&hosts);
    }
  if (o->cache_from.n || o->cache_to.n)
    {
      cJSON *cache = cJSON_AddObjectToObject (req, "cache");
      for (int pass = 0; pass < 2; pass++)
        {
          const ps_strv *specs = pass ? &o->cache_to : &o->cache_from;
          if (specs->n == 0)
            continue;
          cJSON *list = cJSON_AddArrayToObject (cache, pass ? "exports" : "imports");
          for (size_t i = 0; i < specs->n; i++)
            cJSON_AddItemToArray (list, cli_cache_entry_json (specs->v[i]));
        }
    }
  if (o->entitlements.n)
    {
      cJSON *ents = cJSON_AddArrayToObject (req, "entitlements");
      for (size_t i = 0; i < o->entitlements.n; i++)
        cJSON_AddItemToArray (ents, cJSON_CreateString (o->entitlements.v[i]));
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

/* What goes on the wire, staged before the request starts. */
struct build_inputs
{
  int ctx_tar; /* the context tar (temporary file) */
  uint64_t ctx_size;
  int df_tar; /* the Dockerfile's own tar, or -1 when it is in the context */
  uint64_t df_size;
  char *df_name; /* frontendAttrs.filename */
  char *request; /* the SolveRequest JSON */
};

static void
inputs_free (struct build_inputs *in)
{
  if (in->ctx_tar >= 0)
    close (in->ctx_tar);
  if (in->df_tar >= 0)
    close (in->df_tar);
  free (in->df_name);
  free (in->request);
}

static int
prepare_inputs (struct cli_build_opts *o, struct build_inputs *in, ps_error **err)
{
  *in = (struct build_inputs){ .ctx_tar = -1, .df_tar = -1 };
  char context_real[PATH_MAX];
  struct stat st;
  if (realpath (o->context, context_real) == NULL || stat (context_real, &st) < 0)
    return ps_error_set_errno (err, 0, errno, "context %s", o->context);
  if (!S_ISDIR (st.st_mode))
    return ps_error_set (err, 0, "context %s is not a directory", o->context);

  struct dockerfile df = { .fd = -1 };
  int ret = find_dockerfile (context_real, o->file, &df, err);
  if (ret == 0)
    {
      in->ctx_tar = tar_context (context_real, &df, &in->ctx_size, err);
      ret = in->ctx_tar < 0 ? -1 : 0;
    }
  if (ret == 0 && df.rel == NULL)
    {
      off_t end = -1;
      in->df_tar = cli_tmpfile (err);
      if (in->df_tar < 0 || cli_context_tar_file (df.fd, df.name, in->df_tar, err) < 0)
        ret = -1;
      else if ((end = lseek (in->df_tar, 0, SEEK_END)) < 0)
        ret = ps_error_set_errno (err, 0, errno, "measure the Dockerfile tar");
      in->df_size = end < 0 ? 0 : (uint64_t) end;
    }
  in->df_name = df.name ? xstrdup (df.name) : NULL;
  dockerfile_free (&df);
  return ret;
}

int
cli_build_run (cli_http *h, struct cli_build_opts *o, ps_error **err)
{
  struct build_inputs in;
  if (prepare_inputs (o, &in, err) < 0)
    {
      inputs_free (&in);
      return cli_interrupted ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FAILED;
    }
  /* --secret and --ssh are served from here, on a session the request names. */
  cli_session *session = NULL;
  if (o->n_secrets || o->n_ssh)
    {
      session = cli_session_start (cli_http_address (h), o->context, o->secrets, o->n_secrets, o->ssh, o->n_ssh, err);
      if (session == NULL)
        {
          inputs_free (&in);
          return cli_interrupted ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FAILED;
        }
    }
  in.request = request_json (o, in.df_name, session ? cli_session_uuid (session) : NULL);
  const struct cli_http_part parts[] = {
    { .name = "request", .content_type = "application/json", .data = in.request, .len = strlen (in.request), .fd = -1 },
    { .name = "context",
      .content_type = "application/x-tar",
      .filename = "context.tar",
      .fd = in.ctx_tar,
      .size = in.ctx_size },
    { .name = "dockerfile",
      .content_type = "application/x-tar",
      .filename = "dockerfile.tar",
      .fd = in.df_tar,
      .size = in.df_size },
  };
  size_t n_parts = in.df_tar >= 0 ? 3 : 2;

  cli_progress *progress = cli_progress_new (o->progress, stderr);
  struct cli_solve_stream s;
  cli_solve_stream_init (&s, progress);
  struct cli_http_stream hs = { .on_line = cli_solve_stream_line, .on_tick = cli_solve_stream_tick, .ud = &s };
  ps_error *stream_err = NULL;
  int ret = cli_http_stream (h, "POST", "/solve", parts, n_parts, &hs, &stream_err);
  if (stream_err)
    ps_error_wrap (&stream_err, "build");
  int code = cli_solve_stream_report (&s, ret, stream_err,
                                      "interrupted: the connection is closed, so podsolved cancels the build");
  ps_error_free (stream_err);
  /* The build is over: nothing more will be asked of the session. */
  cli_session_close (session);

  const char *ref = s.result_ref ? s.result_ref : hs.solve_ref;
  if (code == CLI_EXIT_OK && ref && cli_outputs_fetch (h, ref, o->outputs, o->n_outputs, err) < 0)
    code = cli_interrupted ? CLI_EXIT_INTERRUPTED : CLI_EXIT_FAILED;
  if (code == CLI_EXIT_OK)
    {
      /* What the build made, last, where a script or a person looks:
         stdout, unless an output is being written there. */
      bool stdout_taken = false;
      for (size_t i = 0; i < o->n_outputs; i++)
        stdout_taken |= o->outputs[i].dest && strcmp (o->outputs[i].dest, "-") == 0;
      FILE *to = stdout_taken ? stderr : stdout;
      if (s.image_name)
        fprintf (to, "image %s%s%s\n", s.image_name, s.image_digest ? " " : "", s.image_digest ? s.image_digest : "");
      for (size_t i = 0; i < o->n_outputs; i++)
        if (o->outputs[i].dest && strcmp (o->outputs[i].dest, "-") != 0)
          fprintf (to, "output %s %s\n", o->outputs[i].type, o->outputs[i].dest);
      if (ref)
        fprintf (to, "ref %s\n", ref);
    }
  if (code == CLI_EXIT_OK && (o->iidfile || o->metadata_file))
    {
      ps_error *werr = NULL;
      if (o->iidfile && s.image_id && ps_write_file (o->iidfile, s.image_id, strlen (s.image_id), 0644, &werr) < 0)
        code = CLI_EXIT_FAILED;
      if (code == CLI_EXIT_OK && o->metadata_file && s.response_json
          && ps_write_file (o->metadata_file, s.response_json, strlen (s.response_json), 0644, &werr) < 0)
        code = CLI_EXIT_FAILED;
      if (werr)
        {
          cli_print_error (werr);
          ps_error_free (werr);
        }
    }
  cli_solve_stream_free (&s);
  cli_progress_free (progress);
  free (hs.solve_ref);
  inputs_free (&in);
  return code;
}
