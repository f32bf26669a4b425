/* store_s3.c — an S3 bucket as a store backend (store_s3.h, api-docs/s3.md). */
#define _GNU_SOURCE
#include "solver/store_s3.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "solver/store_http.h"

#define OCI_REF_NAME "org.opencontainers.image.ref.name"
#define OCI_INDEX_MTYPE "application/vnd.oci.image.index.v1+json"

/* ---- configuration: pure, unit-tested -------------------------------------- */

static int
parse_bool (const char *v, bool *out)
{
  if (strcmp (v, "true") == 0 || strcmp (v, "1") == 0)
    *out = true;
  else if (strcmp (v, "false") == 0 || strcmp (v, "0") == 0)
    *out = false;
  else
    return -1;
  return 0;
}

int
s3_parse_duration (const char *s, int64_t *secs)
{
  if (s == NULL || *s == '\0')
    return -1;
  if (strcmp (s, "0") == 0)
    return *secs = 0, 0;
  int64_t total = 0;
  const char *p = s;
  while (*p)
    {
      char *end;
      errno = 0;
      long long n = strtoll (p, &end, 10);
      if (end == p || errno || n < 0 || n > 1000000000LL)
        return -1;
      int64_t unit = *end == 'h' ? 3600 : *end == 'm' && end[1] != 's' ? 60 : *end == 's' ? 1 : 0;
      if (unit == 0)
        return -1;
      total += n * unit;
      p = end + 1;
    }
  *secs = total;
  return 0;
}

/* Any http(s) URL: SigV4 never sends the secret (api-docs/s3.md says what
   plain http still exposes). */
static bool
http_url (const char *url)
{
  return ps_str_has_prefix (url, "https://") || ps_str_has_prefix (url, "http://");
}

int
s3_config_parse (struct s3_config *c, const struct solve_attrs *attrs, enum s3_layout layout, const char *field,
                 ps_error **err)
{
  memset (c, 0, sizeof *c);
  c->layout = layout;
  const char *v;
#define GET(k) ((v = solve_attrs_get (attrs, k)) && *v ? v : NULL)
  if (!GET ("bucket"))
    return ps_error_set (err, 400, "%s.attrs.bucket: missing (the S3 bucket)", field);
  c->bucket = xstrdup (v);
  c->region = xstrdup (GET ("region")                  ? v
                       : getenv ("AWS_REGION") && *getenv ("AWS_REGION") ? getenv ("AWS_REGION")
                       : getenv ("AWS_DEFAULT_REGION") && *getenv ("AWS_DEFAULT_REGION")
                           ? getenv ("AWS_DEFAULT_REGION")
                           : S3_DEFAULT_REGION);
  if (strspn (c->region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen (c->region))
    return ps_error_set (err, 400, "%s.attrs.region: \"%s\" is not a region name", field, c->region);
  if (GET ("endpoint_url"))
    {
      if (!http_url (v) || strlen (v) < 9)
        return ps_error_set (err, 400, "%s.attrs.endpoint_url: \"%s\": expected http(s)://HOST[:PORT]", field, v);
      c->endpoint_url = xstrdup (v);
      size_t n = strlen (c->endpoint_url);
      while (n > 0 && c->endpoint_url[n - 1] == '/')
        c->endpoint_url[--n] = '\0';
    }
  c->prefix = xstrdup (GET ("prefix") ? v : "");
  if (layout == S3_LAYOUT_OCI && (GET ("blobs_prefix") || GET ("manifests_prefix")))
    return ps_error_set (err, 400,
                         "%s.attrs: blobs_prefix and manifests_prefix are for caches; an image export writes an "
                         "OCI image layout under prefix",
                         field);
  c->blobs_prefix = xstrdup (GET ("blobs_prefix") ? v : S3_DEFAULT_BLOBS_PREFIX);
  c->manifests_prefix = xstrdup (GET ("manifests_prefix") ? v : S3_DEFAULT_MANIFESTS_PREFIX);
  c->use_path_style = c->endpoint_url != NULL;
  if (GET ("use_path_style") && parse_bool (v, &c->use_path_style) < 0)
    return ps_error_set (err, 400, "%s.attrs.use_path_style: \"%s\" is not a boolean (true or false)", field, v);
  const char *akid = GET ("access_key_id");
  const char *secret = GET ("secret_access_key");
  if ((akid == NULL) != (secret == NULL))
    return ps_error_set (err, 400, "%s.attrs: access_key_id and secret_access_key go together", field);
  c->access_key_id = akid ? xstrdup (akid) : NULL;
  c->secret_access_key = secret ? xstrdup (secret) : NULL;
  c->session_token = GET ("session_token") ? xstrdup (v) : NULL;
  if (c->access_key_id && strchr (c->access_key_id, ':'))
    return ps_error_set (err, 400, "%s.attrs.access_key_id: must not contain ':'", field);
  c->upload_parallelism = S3_DEFAULT_UPLOAD_PARALLELISM;
  if (GET ("upload_parallelism"))
    {
      char *end;
      long n = strtol (v, &end, 10);
      if (*end || n < 1 || n > S3_MAX_UPLOAD_PARALLELISM)
        return ps_error_set (err, 400, "%s.attrs.upload_parallelism: \"%s\": expected 1 to %d", field, v,
                             S3_MAX_UPLOAD_PARALLELISM);
      c->upload_parallelism = (unsigned) n;
    }
  c->touch_refresh = S3_DEFAULT_TOUCH_REFRESH;
  if (GET ("touch_refresh") && s3_parse_duration (v, &c->touch_refresh) < 0)
    return ps_error_set (err, 400, "%s.attrs.touch_refresh: \"%s\" is not a duration (24h, 30m, 90s)", field, v);
#undef GET
  return 0;
}

static void
free_secret (char **s)
{
  if (*s)
    explicit_bzero (*s, strlen (*s));
  free (*s);
  *s = NULL;
}

void
s3_config_free (struct s3_config *c)
{
  free (c->bucket);
  free (c->region);
  free (c->endpoint_url);
  free (c->prefix);
  free (c->blobs_prefix);
  free (c->manifests_prefix);
  free (c->access_key_id);
  free_secret (&c->secret_access_key);
  free_secret (&c->session_token);
  memset (c, 0, sizeof *c);
}

char *
s3_config_label (const struct s3_config *c)
{
  return xasprintf ("s3://%s/%s", c->bucket, c->prefix ? c->prefix : "");
}

char *
s3_uri_escape (const char *s, bool keep_slash)
{
  ps_buf b = { 0 };
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    {
      if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr ("-_.~", *p)
          || (keep_slash && *p == '/'))
        ps_buf_append (&b, (const char *) p, 1);
      else
        {
          char hex[4];
          snprintf (hex, sizeof hex, "%%%02X", *p);
          ps_buf_append (&b, hex, 3);
        }
    }
  return b.len ? ps_buf_steal (&b) : xstrdup ("");
}

char *
s3_blob_key (const struct s3_config *c, const char *digest)
{
  if (c->layout == S3_LAYOUT_OCI)
    {
      const char *colon = strchr (digest, ':');
      return xasprintf ("%sblobs/%.*s/%s", c->prefix, (int) (colon ? colon - digest : 0), digest,
                        colon ? colon + 1 : digest);
    }
  return xasprintf ("%s%s%s", c->prefix, c->blobs_prefix, digest);
}

char *
s3_manifest_key (const struct s3_config *c, const char *name, const char *ref)
{
  return xasprintf ("%s%s%s/%s", c->prefix, c->manifests_prefix, name, ref);
}

char *
s3_object_url (const struct s3_config *c, const char *key)
{
  cleanup_free char *enc = s3_uri_escape (key ? key : "", true);
  cleanup_free char *aws = c->endpoint_url ? NULL : xasprintf ("https://s3.%s.amazonaws.com", c->region);
  const char *base = c->endpoint_url ? c->endpoint_url : aws;
  if (c->use_path_style)
    return xasprintf ("%s/%s/%s", base, c->bucket, enc);
  const char *host = strstr (base, "://") + 3;
  return xasprintf ("%.*s%s.%s/%s", (int) (host - base), base, c->bucket, host, enc);
}

bool
s3_multipart_plan (uint64_t size, struct s3_part_plan *plan)
{
  if (size <= S3_MULTIPART_THRESHOLD)
    return false;
  uint64_t part = S3_PART_SIZE;
  const uint64_t mib = 1024 * 1024;
  if ((size + part - 1) / part > S3_MAX_PARTS)
    part = ((size + S3_MAX_PARTS - 1) / S3_MAX_PARTS + mib - 1) / mib * mib;
  plan->part_size = part;
  plan->parts = (uint32_t) ((size + part - 1) / part);
  return true;
}

/* ---- the client --------------------------------------------------------------- */

struct s3_client
{
  struct s3_config cfg; /* a copy owning its strings, without the credentials */
  char *label;          /* "s3 bucket B" */
  char *userpwd;
  char *sigv4;
  char *token_header;
  struct store_http_target target;
};

static char *
dup_or_null (const char *s)
{
  return s ? xstrdup (s) : NULL;
}

/* S3's <Code> and <Message> from an error body, else the status alone:
   never the rest (an S3 error may echo the string it signed). */
static char *
s3_message (const struct store_http_response *r)
{
  cleanup_free char *body = r->body.len ? xstrndup (r->body.data, r->body.len) : xstrdup ("");
  char *code = NULL, *msg = NULL;
  const char *a, *b;
  if ((a = strstr (body, "<Code>")) && (b = strstr (a, "</Code>")))
    code = xstrndup (a + 6, (size_t) (b - a - 6));
  if ((a = strstr (body, "<Message>")) && (b = strstr (a, "</Message>")))
    msg = xstrndup (a + 9, (size_t) (b - a - 9));
  const char *hint = r->status == 403 ? " (check the credentials and the bucket's policy)"
                     : r->status == 404 && code && strcmp (code, "NoSuchBucket") == 0 ? " (create the bucket first)"
                                                                                      : "";
  char *out = code ? xasprintf ("%ld %s: %s%s", r->status, code, msg ? msg : "", hint)
                   : xasprintf ("%ld%s", r->status, hint);
  free (code);
  free (msg);
  return out;
}

/* One request on `key` (NULL: the bucket) with the query `query` (sorted
   and escaped, as SigV4 signs it; NULL for none): anything but one of
   `ok` is an error naming the bucket, the key and S3's error code. */
static int
s3_call (s3_client *c, const char *method, const char *key, const char *query, const char *const *headers,
         const void *body, size_t body_len, FILE *file, uint64_t file_len, const long *ok,
         struct store_http_response *resp, ps_error **err)
{
  cleanup_free char *obj = s3_object_url (&c->cfg, key);
  cleanup_free char *url = query ? xasprintf ("%s?%s", obj, query) : xstrdup (obj);
  cleanup_free char *what = xasprintf ("%s%s%s", key ? key : "/", query ? "?" : "", query ? query : "");
  struct store_http_request req = { method, url, what, headers, body, body_len, file, file_len };
  if (store_http_perform (&c->target, &req, resp, err) < 0)
    return -1;
  for (const long *s = ok; *s; s++)
    if (resp->status == *s)
      return 0;
  cleanup_free char *msg = s3_message (resp);
  ps_error_set (err, 502, "%s: %s %s: %s", c->label, method, what, msg);
  store_http_response_free (resp);
  return -1;
}

void
s3_client_free (s3_client *c)
{
  if (c == NULL)
    return;
  s3_config_free (&c->cfg);
  free (c->label);
  free_secret (&c->userpwd);
  free (c->sigv4);
  free_secret (&c->token_header);
  free (c);
}

s3_client *
s3_client_new (const struct s3_config *cfg, ps_error **err)
{
  s3_client *c = xcalloc (1, sizeof *c);
  struct s3_config *k = &c->cfg;
  *k = *cfg;
  k->bucket = dup_or_null (cfg->bucket);
  k->region = dup_or_null (cfg->region);
  k->endpoint_url = dup_or_null (cfg->endpoint_url);
  k->prefix = xstrdup (cfg->prefix ? cfg->prefix : "");
  k->blobs_prefix = xstrdup (cfg->blobs_prefix ? cfg->blobs_prefix : S3_DEFAULT_BLOBS_PREFIX);
  k->manifests_prefix = xstrdup (cfg->manifests_prefix ? cfg->manifests_prefix : S3_DEFAULT_MANIFESTS_PREFIX);
  k->access_key_id = NULL;
  k->secret_access_key = NULL;
  k->session_token = NULL;
  c->label = xasprintf ("s3 bucket %s", k->bucket);
  const char *akid = cfg->access_key_id, *secret = cfg->secret_access_key, *token = cfg->session_token;
  if (akid == NULL)
    {
      akid = getenv ("AWS_ACCESS_KEY_ID");
      secret = getenv ("AWS_SECRET_ACCESS_KEY");
      if (token == NULL)
        token = getenv ("AWS_SESSION_TOKEN");
    }
  if (akid == NULL || *akid == '\0' || secret == NULL || *secret == '\0')
    {
      ps_error_set (err, 400,
                    "%s: no credentials: give access_key_id and secret_access_key, or set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY in the daemon's environment",
                    c->label);
      s3_client_free (c);
      return NULL;
    }
  c->userpwd = xasprintf ("%s:%s", akid, secret);
  c->sigv4 = xasprintf ("aws:amz:%s:s3", k->region);
  if (token && *token)
    c->token_header = xasprintf ("x-amz-security-token: %s", token);
  c->target = (struct store_http_target) { .label = c->label, .auth = c->token_header, .userpwd = c->userpwd,
                                           .aws_sigv4 = c->sigv4 };

  /* Does the bucket answer, and take these credentials?  One key of a
     listing under the prefix says both, with S3's own error code. */
  cleanup_free char *pfx = s3_uri_escape (k->prefix, false);
  cleanup_free char *query = xasprintf ("list-type=2&max-keys=1&prefix=%s", pfx);
  struct store_http_response resp;
  static const long ok[] = { 200, 0 };
  if (s3_call (c, "GET", NULL, query, NULL, NULL, 0, NULL, 0, ok, &resp, err) < 0)
    {
      s3_client_free (c);
      return NULL;
    }
  store_http_response_free (&resp);
  return c;
}

/* ---- blobs -------------------------------------------------------------------- */

static int
head_key (s3_client *c, const char *key, struct store_http_response *resp, ps_error **err)
{
  static const long ok[] = { 200, 404, 0 };
  return s3_call (c, "HEAD", key, NULL, NULL, NULL, 0, NULL, 0, ok, resp, err);
}

int
s3_blob_stat (s3_client *c, const char *digest, uint64_t *size, ps_error **err)
{
  if (!store_is_digest (digest))
    return ps_error_set (err, 400, "not a sha256 digest: %s", digest);
  cleanup_free char *key = s3_blob_key (&c->cfg, digest);
  struct store_http_response resp;
  if (head_key (c, key, &resp, err) < 0)
    return -1;
  int r = resp.status == 200;
  *size = resp.length;
  store_http_response_free (&resp);
  return r;
}

/* As BuildKit's touch_refresh: a blob that is already there is copied onto
   itself when older than touch_refresh, so a bucket lifecycle rule that
   expires objects by age keeps what builds still use. */
static int
maybe_touch (s3_client *c, const char *key, const char *last_modified, ps_error **err)
{
  if (c->cfg.touch_refresh <= 0 || last_modified == NULL)
    return 0;
  time_t t = curl_getdate (last_modified, NULL);
  if (t < 0 || time (NULL) - t < c->cfg.touch_refresh)
    return 0;
  cleanup_free char *src_key = s3_uri_escape (key, true);
  cleanup_free char *src = xasprintf ("x-amz-copy-source: /%s/%s", c->cfg.bucket, src_key);
  const char *hdrs[] = { src, "x-amz-metadata-directive: REPLACE", NULL };
  struct store_http_response resp;
  static const long ok[] = { 200, 0 };
  if (s3_call (c, "PUT", key, NULL, hdrs, "", 0, NULL, 0, ok, &resp, err) < 0)
    return -1;
  ps_debug ("%s: touched %s (last modified %s)", c->label, key, last_modified);
  store_http_response_free (&resp);
  return 0;
}

struct multipart
{
  s3_client *c;
  const char *key;
  const char *upload_id; /* escaped for the query */
  int fd;
  uint64_t size;
  struct s3_part_plan plan;
  char **etags; /* per part */
  pthread_mutex_t lock;
  uint32_t next;
  ps_error *err; /* the first failure */
};

static void *
upload_parts (void *ud)
{
  struct multipart *m = ud;
  char *buf = xmalloc (m->plan.part_size);
  for (;;)
    {
      pthread_mutex_lock (&m->lock);
      uint32_t i = m->err ? m->plan.parts : m->next++;
      pthread_mutex_unlock (&m->lock);
      if (i >= m->plan.parts)
        break;
      uint64_t off = (uint64_t) i * m->plan.part_size;
      size_t n = (size_t) (m->size - off < m->plan.part_size ? m->size - off : m->plan.part_size);
      ps_error *perr = NULL;
      size_t got = 0;
      while (got < n)
        {
          ssize_t r = pread (m->fd, buf + got, n - got, (off_t) (off + got));
          if (r <= 0)
            break;
          got += (size_t) r;
        }
      struct store_http_response resp;
      static const long ok[] = { 200, 0 };
      cleanup_free char *query = xasprintf ("partNumber=%u&uploadId=%s", i + 1, m->upload_id);
      if (got < n)
        ps_error_set_errno (&perr, 500, errno, "read part %u of %s", i + 1, m->key);
      else if (s3_call (m->c, "PUT", m->key, query, NULL, buf, n, NULL, 0, ok, &resp, &perr) == 0)
        {
          m->etags[i] = resp.etag ? xstrdup (resp.etag) : NULL;
          store_http_response_free (&resp);
          if (m->etags[i] == NULL)
            ps_error_set (&perr, 502, "%s: PUT %s part %u: no ETag in the answer", m->c->label, m->key, i + 1);
        }
      if (perr)
        {
          pthread_mutex_lock (&m->lock);
          if (m->err == NULL)
            m->err = perr, perr = NULL;
          pthread_mutex_unlock (&m->lock);
          ps_error_free (perr);
        }
    }
  free (buf);
  return NULL;
}

static char *
xml_text (const char *body, const char *tag)
{
  cleanup_free char *open = xasprintf ("<%s>", tag);
  cleanup_free char *close = xasprintf ("</%s>", tag);
  const char *a = strstr (body, open), *b;
  if (a == NULL || (b = strstr (a, close)) == NULL)
    return NULL;
  a += strlen (open);
  return xstrndup (a, (size_t) (b - a));
}

/* CreateMultipartUpload, UploadPart × n (upload_parallelism at a time),
   CompleteMultipartUpload; AbortMultipartUpload after any failure, so no
   parts are left to pay for. */
static int
put_multipart (s3_client *c, const char *key, int fd, uint64_t size, const struct s3_part_plan *plan, ps_error **err)
{
  struct store_http_response resp;
  static const long ok[] = { 200, 0 };
  static const char *const ct[] = { "Content-Type: application/octet-stream", NULL };
  if (s3_call (c, "POST", key, "uploads=", ct, NULL, 0, NULL, 0, ok, &resp, err) < 0)
    return ps_error_wrap (err, "start a multipart upload");
  cleanup_free char *body = resp.body.len ? xstrndup (resp.body.data, resp.body.len) : xstrdup ("");
  store_http_response_free (&resp);
  cleanup_free char *id = xml_text (body, "UploadId");
  if (id == NULL)
    return ps_error_set (err, 502, "%s: POST %s?uploads: no UploadId in the answer", c->label, key);
  cleanup_free char *eid = s3_uri_escape (id, false);
  ps_debug ("%s: multipart upload of %s: %" PRIu64 " bytes in %u parts of %" PRIu64 ", %u at a time", c->label,
            key, size, plan->parts, plan->part_size, c->cfg.upload_parallelism);
  struct multipart m = { .c = c, .key = key, .upload_id = eid, .fd = fd, .size = size, .plan = *plan };
  m.etags = xcalloc (plan->parts, sizeof *m.etags);
  pthread_mutex_init (&m.lock, NULL);
  unsigned nthreads = c->cfg.upload_parallelism < plan->parts ? c->cfg.upload_parallelism : plan->parts;
  pthread_t *threads = xcalloc (nthreads, sizeof *threads);
  unsigned started = 0;
  for (; started < nthreads; started++)
    if (pthread_create (&threads[started], NULL, upload_parts, &m) != 0)
      break;
  if (started == 0)
    upload_parts (&m);
  for (unsigned i = 0; i < started; i++)
    pthread_join (threads[i], NULL);
  free (threads);
  pthread_mutex_destroy (&m.lock);
  cleanup_free char *query = xasprintf ("uploadId=%s", eid);
  int ret = 0;
  if (m.err)
    {
      *err = m.err;
      ret = -1;
    }
  else
    {
      ps_buf xml = { 0 };
      ps_buf_puts (&xml, "<CompleteMultipartUpload>");
      for (uint32_t i = 0; i < plan->parts; i++)
        {
          cleanup_free char *part = xasprintf ("<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1,
                                               m.etags[i]);
          ps_buf_puts (&xml, part);
        }
      ps_buf_puts (&xml, "</CompleteMultipartUpload>");
      static const char *const xct[] = { "Content-Type: application/xml", NULL };
      ret = s3_call (c, "POST", key, query, xct, xml.data, xml.len, NULL, 0, ok, &resp, err);
      ps_buf_free (&xml);
      /* S3 may answer 200 and put the error in the body. */
      if (ret == 0 && resp.body.len && memmem (resp.body.data, resp.body.len, "<Error>", 7))
        {
          cleanup_free char *msg = s3_message (&resp);
          ret = ps_error_set (err, 502, "%s: complete the multipart upload of %s: %s", c->label, key, msg);
        }
      if (resp.status)
        store_http_response_free (&resp);
    }
  for (uint32_t i = 0; i < plan->parts; i++)
    free (m.etags[i]);
  free (m.etags);
  if (ret < 0)
    {
      static const long aborted[] = { 204, 200, 404, 0 };
      ps_error *aerr = NULL;
      if (s3_call (c, "DELETE", key, query, NULL, NULL, 0, NULL, 0, aborted, &resp, &aerr) == 0)
        store_http_response_free (&resp);
      else
        {
          ps_warn ("%s: abort the multipart upload of %s: %s", c->label, key, aerr->msg);
          ps_error_free (aerr);
        }
      return ps_error_wrap (err, "multipart upload of %s", key);
    }
  return 0;
}

int
s3_blob_put_file (s3_client *c, const char *digest, const char *path, uint64_t *uploaded, ps_error **err)
{
  if (uploaded)
    *uploaded = 0;
  if (!store_is_digest (digest))
    return ps_error_set (err, 400, "not a sha256 digest: %s", digest);
  cleanup_free char *key = s3_blob_key (&c->cfg, digest);
  struct store_http_response resp;
  if (head_key (c, key, &resp, err) < 0)
    return -1;
  if (resp.status == 200)
    {
      int r = maybe_touch (c, key, resp.last_modified, err);
      store_http_response_free (&resp);
      return r;
    }
  store_http_response_free (&resp);
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", path);
  struct stat st;
  if (fstat (fd, &st) < 0)
    return ps_error_set_errno (err, 500, errno, "stat %s", path);
  uint64_t size = (uint64_t) st.st_size;
  struct s3_part_plan plan;
  int ret;
  if (s3_multipart_plan (size, &plan))
    ret = put_multipart (c, key, fd, size, &plan, err);
  else
    {
      FILE *f = fdopen (fd, "rb");
      fd = -1;
      static const char *const ct[] = { "Content-Type: application/octet-stream", NULL };
      static const long ok[] = { 200, 0 };
      ret = s3_call (c, "PUT", key, NULL, ct, NULL, 0, f, size, ok, &resp, err);
      if (ret == 0)
        store_http_response_free (&resp);
      fclose (f);
    }
  if (ret == 0 && uploaded)
    *uploaded = size;
  return ret;
}

unsigned
s3_upload_parallelism (const s3_client *c)
{
  return c->cfg.upload_parallelism > 0 ? (unsigned) c->cfg.upload_parallelism : 1;
}

int
s3_blob_get_file (s3_client *c, const char *digest, const char *path, ps_error **err)
{
  if (!store_is_digest (digest))
    return ps_error_set (err, 400, "not a sha256 digest: %s", digest);
  cleanup_free char *key = s3_blob_key (&c->cfg, digest);
  cleanup_free char *url = s3_object_url (&c->cfg, key);
  return store_http_get_file (&c->target, url, key, digest, path, err);
}

/* ---- manifests ---------------------------------------------------------------- */

static int
put_object (s3_client *c, const char *key, const char *mtype, const void *body, size_t len, ps_error **err)
{
  cleanup_free char *ct = xasprintf ("Content-Type: %s", mtype);
  const char *hdrs[] = { ct, NULL };
  struct store_http_response resp;
  static const long ok[] = { 200, 0 };
  if (s3_call (c, "PUT", key, NULL, hdrs, len ? body : "", len, NULL, 0, ok, &resp, err) < 0)
    return -1;
  store_http_response_free (&resp);
  return 0;
}

/* 1 with the object's bytes and Content-Type, 0 when there is none. */
static int
get_object (s3_client *c, const char *key, char **body, size_t *len, char **ctype, ps_error **err)
{
  struct store_http_response resp;
  static const long ok[] = { 200, 404, 0 };
  if (s3_call (c, "GET", key, NULL, NULL, NULL, 0, NULL, 0, ok, &resp, err) < 0)
    return -1;
  if (resp.status == 404)
    {
      store_http_response_free (&resp);
      return 0;
    }
  *len = resp.body.len;
  *body = resp.body.len ? ps_buf_steal (&resp.body) : xstrdup ("");
  if (ctype)
    *ctype = resp.ctype ? xstrdup (resp.ctype) : NULL;
  store_http_response_free (&resp);
  return 1;
}

/* An image export's tag: the entry NAME:TAG of <prefix>index.json, put
   after everything it names is there.  Read, changed and written back: two
   exports to one prefix at the same moment may lose one's entry (the
   objects stay; the next export writes it again). */
static int
oci_tag (s3_client *c, const char *name, const char *tag, const char *mtype, const char *digest, size_t len,
         ps_error **err)
{
  cleanup_free char *index_key = xasprintf ("%sindex.json", c->cfg.prefix);
  cleanup_free char *layout_key = xasprintf ("%soci-layout", c->cfg.prefix);
  cleanup_free char *text = NULL;
  size_t tlen = 0;
  int have = get_object (c, index_key, &text, &tlen, NULL, err);
  if (have < 0)
    return -1;
  cJSON *index = have ? cJSON_ParseWithLength (text, tlen) : NULL;
  if (index == NULL || !cJSON_IsArray (cJSON_GetObjectItemCaseSensitive (index, "manifests")))
    {
      cJSON_Delete (index);
      index = cJSON_CreateObject ();
      cJSON_AddNumberToObject (index, "schemaVersion", 2);
      cJSON_AddStringToObject (index, "mediaType", OCI_INDEX_MTYPE);
      cJSON_AddArrayToObject (index, "manifests");
    }
  cleanup_free char *ref = xasprintf ("%s:%s", name, tag);
  cJSON *list = cJSON_GetObjectItemCaseSensitive (index, "manifests");
  for (int i = cJSON_GetArraySize (list) - 1; i >= 0; i--)
    {
      const cJSON *ann = cJSON_GetObjectItemCaseSensitive (cJSON_GetArrayItem (list, i), "annotations");
      const cJSON *rn = cJSON_GetObjectItemCaseSensitive (ann, OCI_REF_NAME);
      if (cJSON_IsString (rn) && strcmp (rn->valuestring, ref) == 0)
        cJSON_DeleteItemFromArray (list, i);
    }
  cJSON *d = cJSON_CreateObject ();
  cJSON_AddStringToObject (d, "mediaType", mtype);
  cJSON_AddStringToObject (d, "digest", digest);
  cJSON_AddNumberToObject (d, "size", (double) len);
  cJSON_AddStringToObject (cJSON_AddObjectToObject (d, "annotations"), OCI_REF_NAME, ref);
  cJSON_AddItemToArray (list, d);
  char *out = cJSON_PrintUnformatted (index);
  cJSON_Delete (index);
  static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
  int ret = put_object (c, layout_key, "application/json", layout, sizeof layout - 1, err);
  if (ret == 0)
    ret = put_object (c, index_key, OCI_INDEX_MTYPE, out, strlen (out), err);
  free (out);
  return ret;
}

int
s3_manifest_put (s3_client *c, const char *name, const char *ref, const char *mtype, const void *body, size_t len,
                 char **digest, ps_error **err)
{
  char hex[65];
  ps_sha256_hex (body, len, hex);
  cleanup_free char *dg = xasprintf ("sha256:%s", hex);
  int ret;
  if (c->cfg.layout == S3_LAYOUT_OCI && store_is_digest (ref))
    {
      /* In an OCI layout a manifest is a blob like any other. */
      if (strcmp (ref, dg) != 0)
        return ps_error_set (err, 400, "manifest %s: the bytes hash to %s", ref, dg);
      cleanup_free char *key = s3_blob_key (&c->cfg, dg);
      ret = put_object (c, key, mtype, body, len, err);
    }
  else if (c->cfg.layout == S3_LAYOUT_OCI)
    ret = oci_tag (c, name, ref, mtype, dg, len, err);
  else
    {
      cleanup_free char *key = s3_manifest_key (&c->cfg, name, ref);
      ret = put_object (c, key, mtype, body, len, err);
    }
  if (ret == 0 && digest)
    *digest = xstrdup (dg);
  return ret;
}

/* The digest NAME:TAG has in <prefix>index.json, or NULL. */
static int
oci_lookup (s3_client *c, const char *name, const char *tag, char **digest, ps_error **err)
{
  cleanup_free char *index_key = xasprintf ("%sindex.json", c->cfg.prefix);
  cleanup_free char *text = NULL;
  size_t tlen = 0;
  int have = get_object (c, index_key, &text, &tlen, NULL, err);
  if (have <= 0)
    return have;
  cleanup_free char *ref = xasprintf ("%s:%s", name, tag);
  cJSON *index = cJSON_ParseWithLength (text, tlen);
  const cJSON *m;
  int found = 0;
  cJSON_ArrayForEach (m, cJSON_GetObjectItemCaseSensitive (index, "manifests"))
    {
      const cJSON *rn = cJSON_GetObjectItemCaseSensitive (cJSON_GetObjectItemCaseSensitive (m, "annotations"),
                                                          OCI_REF_NAME);
      const cJSON *d = cJSON_GetObjectItemCaseSensitive (m, "digest");
      if (!found && cJSON_IsString (rn) && strcmp (rn->valuestring, ref) == 0 && cJSON_IsString (d)
          && store_is_digest (d->valuestring))
        {
          *digest = xstrdup (d->valuestring);
          found = 1;
        }
    }
  cJSON_Delete (index);
  return found;
}

int
s3_manifest_get (s3_client *c, const char *name, const char *ref, char **body, size_t *len, char **mtype,
                 ps_error **err)
{
  cleanup_free char *key = NULL;
  cleanup_free char *want = store_is_digest (ref) ? xstrdup (ref) : NULL;
  if (c->cfg.layout == S3_LAYOUT_OCI)
    {
      if (want == NULL)
        {
          int found = oci_lookup (c, name, ref, &want, err);
          if (found <= 0)
            return found;
        }
      key = s3_blob_key (&c->cfg, want);
    }
  else
    key = s3_manifest_key (&c->cfg, name, ref);
  int have = get_object (c, key, body, len, mtype, err);
  if (have <= 0)
    return have;
  char hex[65];
  ps_sha256_hex (*body, *len, hex);
  if (want && strcmp (want + 7, hex) != 0)
    {
      free (*body);
      *body = NULL;
      if (mtype)
        free (*mtype), *mtype = NULL;
      return ps_error_set (err, 502, "%s: %s: the manifest hashes to sha256:%s, not %s", c->label, key, hex, want);
    }
  return 1;
}

/* ListObjectsV2 under <prefix><manifests_prefix><name>/: the tags are the
   keys that are not digests. */
int
s3_tags (s3_client *c, const char *name, char **json, ps_error **err)
{
  if (c->cfg.layout == S3_LAYOUT_OCI)
    return ps_error_set (err, 501, "%s: an image export's tags are the entries of index.json", c->label);
  cleanup_free char *dir = s3_manifest_key (&c->cfg, name, "");
  cleanup_free char *edir = s3_uri_escape (dir, false);
  cJSON *out = cJSON_CreateObject ();
  cJSON_AddStringToObject (out, "name", name);
  cJSON *tags = cJSON_AddArrayToObject (out, "tags");
  char *token = NULL;
  int ret = 0;
  do
    {
      cleanup_free char *etok = token ? s3_uri_escape (token, false) : NULL;
      cleanup_free char *query = etok ? xasprintf ("continuation-token=%s&list-type=2&prefix=%s", etok, edir)
                                      : xasprintf ("list-type=2&prefix=%s", edir);
      free (token);
      token = NULL;
      struct store_http_response resp;
      static const long ok[] = { 200, 0 };
      if (s3_call (c, "GET", NULL, query, NULL, NULL, 0, NULL, 0, ok, &resp, err) < 0)
        {
          ret = -1;
          break;
        }
      cleanup_free char *body = resp.body.len ? xstrndup (resp.body.data, resp.body.len) : xstrdup ("");
      store_http_response_free (&resp);
      for (const char *p = strstr (body, "<Key>"); p; p = strstr (p + 5, "<Key>"))
        {
          const char *e = strstr (p, "</Key>");
          if (e == NULL)
            break;
          const char *k = p + 5 + strlen (dir);
          if (k < e)
            {
              char *t = xstrndup (k, (size_t) (e - k));
              if (!store_is_digest (t) && strchr (t, '/') == NULL)
                cJSON_AddItemToArray (tags, cJSON_CreateString (t));
              free (t);
            }
        }
      cleanup_free char *trunc = xml_text (body, "IsTruncated");
      if (trunc && strcmp (trunc, "true") == 0)
        token = xml_text (body, "NextContinuationToken");
    }
  while (token);
  if (ret == 0)
    {
      if (cJSON_GetArraySize (tags) == 0)
        ret = 0;
      else
        {
          *json = cJSON_PrintUnformatted (out);
          ret = 1;
        }
    }
  cJSON_Delete (out);
  return ret;
}
