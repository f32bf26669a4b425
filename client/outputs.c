/* outputs.c — `--output` specs and the download of kept outputs (see
 * outputs.h).  Tar extraction for local outputs is in extract.c. */
#define _GNU_SOURCE
#include "client/outputs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/context_tar.h"

static const char *const output_types[] = { "image", "oci", "docker", "tar", "local", "cacheonly", "store", "s3" };
/* The attrs of type=s3, BuildKit's names (api-docs/s3.md); passed through. */
static const char *const s3_keys[] = { "bucket",        "region",           "endpoint_url",       "prefix",
                                       "use_path_style", "access_key_id",   "secret_access_key", "session_token",
                                       "upload_parallelism", "touch_refresh" };

static bool
type_is (const struct cli_output *o, const char *t)
{
  return o->type && strcmp (o->type, t) == 0;
}

void
cli_output_free (struct cli_output *o)
{
  free (o->spec);
  free (o->type);
  free (o->dest);
  free (o->name);
  free (o->push);
  free (o->endpoint);
  if (o->token)
    explicit_bzero (o->token, strlen (o->token));
  free (o->token);
  for (size_t i = 0; i < o->s3.n; i++)
    explicit_bzero (o->s3.v[i], strlen (o->s3.v[i]));
  ps_strv_free (&o->s3);
  memset (o, 0, sizeof *o);
}

bool
cli_output_downloads (const struct cli_output *o)
{
  return type_is (o, "tar") || type_is (o, "local") || type_is (o, "oci") || type_is (o, "docker");
}

static int
set_key (struct cli_output *o, const char *key, const char *value, ps_error **err)
{
  char **slot = strcmp (key, "type") == 0   ? &o->type
                : strcmp (key, "dest") == 0 ? &o->dest
                : strcmp (key, "name") == 0 ? &o->name
                : strcmp (key, "push") == 0 ? &o->push
                : strcmp (key, "endpoint") == 0 ? &o->endpoint
                : strcmp (key, "token") == 0    ? &o->token
                                                : NULL;
  for (size_t i = 0; slot == NULL && i < ARRAY_SIZE (s3_keys); i++)
    if (strcmp (key, s3_keys[i]) == 0)
      {
        if (ps_pairs_get (&o->s3, key))
          return ps_error_set (err, 0, "\"%s\" is given twice", key);
        ps_strv_push (&o->s3, key);
        ps_strv_push (&o->s3, value);
        return 0;
      }
  if (slot == NULL)
    return ps_error_set (err, 0,
                         "unknown key \"%s\" (accepted: type, dest, name, push, endpoint, token; for type=s3: "
                         "bucket, region, endpoint_url, prefix, use_path_style, access_key_id, secret_access_key, "
                         "session_token, upload_parallelism, touch_refresh)",
                         key);
  if (*slot)
    return ps_error_set (err, 0, "\"%s\" is given twice", key);
  *slot = xstrdup (value);
  return 0;
}

static int
parse_pairs (const char *spec, struct cli_output *o, ps_error **err)
{
  cleanup_free char *copy = xstrdup (spec);
  char *save = NULL;
  const char *last_key = NULL;
  for (char *item = strtok_r (copy, ",", &save); item; item = strtok_r (NULL, ",", &save))
    {
      char *eq = strchr (item, '=');
      if (eq == NULL)
        {
          /* "name=a,b": a bare word continues a name list */
          if (last_key && strcmp (last_key, "name") == 0)
            {
              char *joined = xasprintf ("%s,%s", o->name, item);
              free (o->name);
              o->name = joined;
              continue;
            }
          return ps_error_set (err, 0, "\"%s\" is not key=value", item);
        }
      *eq = '\0';
      if (set_key (o, item, eq + 1, err) < 0)
        return -1;
      last_key = strcmp (item, "name") == 0 ? "name" : "";
    }
  return 0;
}

static int
validate (struct cli_output *o, ps_error **err)
{
  if (o->type == NULL)
    {
      if (o->dest == NULL)
        return ps_error_set (err, 0, "missing type (image, oci, docker, tar, local, cacheonly or store)");
      o->type = xstrdup (strcmp (o->dest, "-") == 0 ? "tar" : "local");
    }
  bool known = false;
  for (size_t i = 0; i < ARRAY_SIZE (output_types); i++)
    known |= strcmp (o->type, output_types[i]) == 0;
  if (!known)
    return ps_error_set (err, 0,
                         "type \"%s\" is not supported (supported: image, oci, docker, tar, local, "
                         "cacheonly, store, s3)",
                         o->type);
  if (cli_output_downloads (o))
    {
      if (o->dest == NULL || *o->dest == '\0')
        return ps_error_set (err, 0, "type=%s needs dest=%s", o->type,
                             type_is (o, "local") ? "DIRECTORY" : "FILE (or - for stdout)");
      if (type_is (o, "local") && strcmp (o->dest, "-") == 0)
        return ps_error_set (err, 0, "type=local writes a directory; use type=tar,dest=- for stdout");
    }
  else if (o->dest)
    return ps_error_set (err, 0, "type=%s takes no dest", o->type);
  if (type_is (o, "store") && (o->endpoint == NULL || o->name == NULL))
    return ps_error_set (err, 0, "type=store needs endpoint=unix:///PATH|https://HOST and name=NAME[:TAG]");
  if (type_is (o, "s3") && (ps_pairs_get (&o->s3, "bucket") == NULL || o->name == NULL))
    return ps_error_set (err, 0, "type=s3 needs bucket=BUCKET and name=NAME[:TAG] (and region=, endpoint_url=, ...)");
  if (o->s3.n && !type_is (o, "s3"))
    return ps_error_set (err, 0, "%s is only for type=s3", o->s3.v[0]);
  if ((o->endpoint || o->token) && !type_is (o, "store"))
    return ps_error_set (err, 0, "endpoint and token are only for type=store");
  if (o->name && !(type_is (o, "image") || type_is (o, "oci") || type_is (o, "docker") || type_is (o, "store")
                  || type_is (o, "s3")))
    return ps_error_set (err, 0, "type=%s takes no name", o->type);
  if (o->push && !type_is (o, "image"))
    return ps_error_set (err, 0, "push is only for type=image");
  if (o->push && strcmp (o->push, "true") != 0 && strcmp (o->push, "false") != 0)
    return ps_error_set (err, 0, "push=%s: expected true or false", o->push);
  return 0;
}

int
cli_output_parse (const char *spec, struct cli_output *o, ps_error **err)
{
  memset (o, 0, sizeof *o);
  o->spec = xstrdup (spec);
  int ret;
  if (strchr (spec, '=') == NULL && strchr (spec, ',') == NULL && *spec)
    {
      o->dest = xstrdup (spec); /* "-o DIR", "-o -", as buildx */
      ret = validate (o, err);
    }
  else
    ret = parse_pairs (spec, o, err) < 0 ? -1 : validate (o, err);
  if (ret < 0)
    {
      ps_error_wrap (err, "--output %s", spec);
      cli_output_free (o);
      return -1;
    }
  return 0;
}

cJSON *
cli_output_exporter (const struct cli_output *o)
{
  cJSON *e = cJSON_CreateObject ();
  cJSON_AddStringToObject (e, "type", o->type);
  cJSON *attrs = cJSON_AddObjectToObject (e, "attrs");
  if (o->name)
    cJSON_AddStringToObject (attrs, "name", o->name);
  if (o->push)
    cJSON_AddStringToObject (attrs, "push", o->push);
  if (o->endpoint)
    cJSON_AddStringToObject (attrs, "endpoint", o->endpoint);
  if (o->token)
    cJSON_AddStringToObject (attrs, "token", o->token);
  for (size_t i = 0; i + 1 < o->s3.n; i += 2)
    cJSON_AddStringToObject (attrs, o->s3.v[i], o->s3.v[i + 1]);
  return e;
}

/* ---- downloads ------------------------------------------------------------------ */

/* Write the download to `dest` atomically: a temporary file beside it,
   renamed over it when complete, so a failed download leaves no half file. */
static int
download_file (cli_http *h, const char *path, const char *dest, ps_error **err)
{
  if (strcmp (dest, "-") == 0)
    return cli_http_download (h, path, STDOUT_FILENO, err);
  cleanup_free char *copy = xstrdup (dest);
  cleanup_free char *tmpl = xasprintf ("%s/.podsolve-XXXXXX", dirname (copy));
  cleanup_close int fd = mkostemp (tmpl, O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, 0, errno, "create a file beside %s", dest);
  mode_t mask = umask (0);
  umask (mask);
  if (fchmod (fd, 0666 & ~mask) < 0 || cli_http_download (h, path, fd, err) < 0 || rename (tmpl, dest) < 0)
    {
      if (err && *err == NULL)
        ps_error_set_errno (err, 0, errno, "write %s", dest);
      unlink (tmpl);
      return -1;
    }
  return 0;
}

static int
download_dir (cli_http *h, const char *path, const char *dest, ps_error **err)
{
  cleanup_close int fd = cli_tmpfile (err);
  if (fd < 0)
    return -1;
  if (cli_http_download (h, path, fd, err) < 0)
    return -1;
  if (lseek (fd, 0, SEEK_SET) < 0)
    return ps_error_set_errno (err, 0, errno, "rewind the downloaded tar");
  return cli_extract_tar (fd, dest, err);
}

/* The index of the kept output of exporter `exporter` in `outputs`. */
static int
find_kept (const cJSON *outputs, size_t exporter, long *index)
{
  const cJSON *it;
  cJSON_ArrayForEach (it, outputs)
    {
      const cJSON *e = cJSON_GetObjectItemCaseSensitive (it, "exporter");
      const cJSON *i = cJSON_GetObjectItemCaseSensitive (it, "index");
      if (cJSON_IsNumber (e) && cJSON_IsNumber (i) && (size_t) e->valuedouble == exporter)
        {
          *index = (long) i->valuedouble;
          return 0;
        }
    }
  return -1;
}

int
cli_outputs_fetch (cli_http *h, const char *ref, const struct cli_output *outs, size_t n, ps_error **err)
{
  bool any = false;
  for (size_t i = 0; i < n; i++)
    any |= cli_output_downloads (&outs[i]);
  if (!any)
    return 0;
  cleanup_free char *eref = cli_http_escape (ref);
  cleanup_free char *info_path = xasprintf ("/solve/%s", eref);
  ps_buf body = { 0 };
  if (cli_http_call (h, "GET", info_path, &body, err) < 0)
    return -1;
  cJSON *info = cJSON_ParseWithLength (body.data, body.len);
  ps_buf_free (&body);
  const cJSON *outputs = cJSON_GetObjectItemCaseSensitive (info, "outputs");
  int ret = 0;
  if (!cJSON_IsArray (outputs))
    ret = ps_error_set (err, 0, "GET %s: the answer has no \"outputs\" list", info_path);
  for (size_t i = 0; i < n && ret == 0; i++)
    {
      const struct cli_output *o = &outs[i];
      if (!cli_output_downloads (o))
        continue;
      long index = -1;
      if (find_kept (outputs, o->exporter, &index) < 0)
        {
          ret = ps_error_set (err, 0, "solve %s kept no output for --output %s", ref, o->spec);
          break;
        }
      cleanup_free char *path = xasprintf ("/solve/%s/outputs/%ld", eref, index);
      ret = type_is (o, "local") ? download_dir (h, path, o->dest, err) : download_file (h, path, o->dest, err);
      if (ret < 0)
        ps_error_wrap (err, "--output %s", o->spec);
    }
  cJSON_Delete (info);
  return ret;
}
