/* store_client.c — the store protocol v1, client side (store_client.h). */
#define _GNU_SOURCE
#include "solver/store_client.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/log.h"
#include "solver/store_http.h"
#include "solver/store_s3.h"

/* Chunk size when the store does not say. */
#define STORE_DEFAULT_CHUNK (8 * 1024 * 1024)
/* A failed chunk of a resumable upload is tried again this many times. */
#define STORE_CHUNK_RETRIES 3

struct store_client
{
  char *endpoint;  /* as given, for messages */
  char *label;     /* "store <endpoint>" */
  char *unix_path; /* unix:// */
  char *base;      /* "http://store" or the https URL without a trailing '/' */
  char *auth;      /* "Authorization: Bearer ..." or NULL */
  char *tls_ca, *tls_cert, *tls_key;
  bool resumable;
  uint64_t chunk;
  struct store_http_target target;
  s3_client *s3; /* the S3 backend (store_s3.h) instead of the store protocol */
};

/* A request below the endpoint ("/v1/..."). */
struct request
{
  const char *method;
  const char *path;
  const char *const *headers;
  const void *body;
  size_t body_len;
  FILE *file;
  uint64_t file_len;
};

#define response store_http_response
#define response_free store_http_response_free
#define is_digest store_is_digest

/* The store's own words for a failed request: its JSON "message", else
   the start of the body. */
static char *
store_message (const struct response *r)
{
  if (r->body.len == 0)
    return xstrdup ("(no message)");
  cJSON *doc = cJSON_ParseWithLength (r->body.data, r->body.len);
  const cJSON *msg = cJSON_GetObjectItemCaseSensitive (doc, "message");
  const cJSON *code = cJSON_GetObjectItemCaseSensitive (doc, "error");
  char *out;
  if (cJSON_IsString (msg))
    out = cJSON_IsString (code) ? xasprintf ("%s: %s", code->valuestring, msg->valuestring)
                                : xstrdup (msg->valuestring);
  else
    out = xasprintf ("%.*s", (int) (r->body.len < 200 ? r->body.len : 200), r->body.data);
  cJSON_Delete (doc);
  return out;
}

/* One request.  0 with the response (any status), -1 with *err when the
   store could not be reached or the exchange broke. */
static int
perform (store_client *c, const struct request *req, struct response *resp, ps_error **err)
{
  cleanup_free char *url = xasprintf ("%s%s", c->base, req->path);
  struct store_http_request hr = { req->method, url, req->path, req->headers, req->body, req->body_len,
                                   req->file, req->file_len };
  return store_http_perform (&c->target, &hr, resp, err);
}

/* perform, then anything but one of `ok` (a 0-terminated list) is an
   error carrying the store's message. */
static int
call (store_client *c, const struct request *req, const long *ok, struct response *resp, ps_error **err)
{
  if (perform (c, req, resp, err) < 0)
    return -1;
  for (const long *s = ok; *s; s++)
    if (resp->status == *s)
      return 0;
  cleanup_free char *msg = store_message (resp);
  /* Whatever the store answered, it is a failure upstream of the client. */
  ps_error_set (err, 502, "%s: %s %s: %ld %s", c->label, req->method, req->path, resp->status, msg);
  response_free (resp);
  return -1;
}

static bool
loopback_host (const char *hostport)
{
  return ps_str_has_prefix (hostport, "127.") || ps_str_has_prefix (hostport, "[::1]")
         || ps_str_has_prefix (hostport, "localhost:") || strcmp (hostport, "localhost") == 0;
}

store_client *
store_client_new (const struct store_config *cfg, ps_error **err)
{
  if (cfg->s3)
    {
      s3_client *s3 = s3_client_new (cfg->s3, err);
      if (s3 == NULL)
        return NULL;
      store_client *c = xcalloc (1, sizeof *c);
      c->s3 = s3;
      return c;
    }
  const char *ep = cfg->endpoint;
  if (ep == NULL || *ep == '\0')
    return ps_error_set (err, 400, "the store needs attrs.endpoint (unix:///PATH or https://HOST)"), NULL;
  store_client *c = xcalloc (1, sizeof *c);
  c->endpoint = xstrdup (ep);
  if (ps_str_has_prefix (ep, "unix://"))
    {
      if (ep[7] != '/')
        {
          store_client_free (c);
          return ps_error_set (err, 400, "store endpoint %s: unix:// needs an absolute path", ep), NULL;
        }
      c->unix_path = xstrdup (ep + 7);
      c->base = xstrdup ("http://store");
    }
  else if (ps_str_has_prefix (ep, "https://") || (ps_str_has_prefix (ep, "http://") && loopback_host (ep + 7)))
    {
      c->base = xstrdup (ep);
      size_t n = strlen (c->base);
      while (n > 0 && c->base[n - 1] == '/')
        c->base[--n] = '\0';
    }
  else
    {
      store_client_free (c);
      return ps_error_set (err, 400,
                           "store endpoint %s: use unix:///PATH, https://HOST[:PORT][/PREFIX], or plain http:// "
                           "on a loopback address only",
                           ep),
             NULL;
    }
  const char *token = cfg->token && *cfg->token ? cfg->token : getenv ("PODSOLVE_STORE_TOKEN");
  if (token && *token)
    c->auth = xasprintf ("Authorization: Bearer %s", token);
  c->tls_ca = cfg->tls_ca ? xstrdup (cfg->tls_ca) : NULL;
  c->tls_cert = cfg->tls_cert ? xstrdup (cfg->tls_cert) : NULL;
  c->tls_key = cfg->tls_key ? xstrdup (cfg->tls_key) : NULL;
  c->label = xasprintf ("store %s", ep);
  c->target = (struct store_http_target) { .label = c->label, .unix_path = c->unix_path, .tls_ca = c->tls_ca,
                                           .tls_cert = c->tls_cert, .tls_key = c->tls_key, .auth = c->auth };

  struct request req = { .method = "GET", .path = "/v1/" };
  struct response resp;
  static const long ok[] = { 200, 0 };
  if (call (c, &req, ok, &resp, err) < 0)
    {
      store_client_free (c);
      return NULL;
    }
  cJSON *doc = cJSON_ParseWithLength (resp.body.data ? resp.body.data : "", resp.body.len);
  const cJSON *proto = cJSON_GetObjectItemCaseSensitive (doc, "protocol");
  const cJSON *ver = cJSON_GetObjectItemCaseSensitive (doc, "version");
  const cJSON *chunk = cJSON_GetObjectItemCaseSensitive (doc, "upload_chunk_bytes");
  const cJSON *features = cJSON_GetObjectItemCaseSensitive (doc, "features");
  bool ok_proto = cJSON_IsString (proto) && strcmp (proto->valuestring, "podsolve-store") == 0
                  && cJSON_IsNumber (ver) && ver->valuedouble == 1;
  const cJSON *f;
  cJSON_ArrayForEach (f, features)
    if (cJSON_IsString (f) && strcmp (f->valuestring, "resumable-uploads") == 0)
      c->resumable = true;
  c->chunk = cJSON_IsNumber (chunk) && chunk->valuedouble >= 65536 ? (uint64_t) chunk->valuedouble
                                                                     : STORE_DEFAULT_CHUNK;
  cJSON_Delete (doc);
  response_free (&resp);
  if (!ok_proto)
    {
      ps_error_set (err, 502, "store %s: GET /v1/ did not answer podsolve-store protocol version 1", ep);
      store_client_free (c);
      return NULL;
    }
  return c;
}

void
store_client_free (store_client *c)
{
  if (c == NULL)
    return;
  s3_client_free (c->s3);
  free (c->endpoint);
  free (c->label);
  free (c->unix_path);
  free (c->base);
  if (c->auth)
    explicit_bzero (c->auth, strlen (c->auth));
  free (c->auth);
  free (c->tls_ca);
  free (c->tls_cert);
  free (c->tls_key);
  free (c);
}

int
store_blob_exists (store_client *c, const char *digest, ps_error **err)
{
  uint64_t size;
  return store_blob_stat (c, digest, &size, err);
}

int
store_blob_stat (store_client *c, const char *digest, uint64_t *size, ps_error **err)
{
  if (c->s3)
    return s3_blob_stat (c->s3, digest, size, err);
  if (!is_digest (digest))
    return ps_error_set (err, 400, "not a sha256 digest: %s", digest);
  cleanup_free char *path = xasprintf ("/v1/blobs/%s", digest);
  struct request req = { .method = "HEAD", .path = path };
  struct response resp;
  static const long ok[] = { 200, 404, 0 };
  if (call (c, &req, ok, &resp, err) < 0)
    return -1;
  int r = resp.status == 200;
  *size = resp.length;
  response_free (&resp);
  return r;
}

/* The whole file in one PUT. */
static int
put_whole (store_client *c, const char *digest, FILE *f, uint64_t size, ps_error **err)
{
  cleanup_free char *path = xasprintf ("/v1/blobs/%s", digest);
  static const char *const hdrs[] = { "Content-Type: application/octet-stream", NULL };
  struct request req = { .method = "PUT", .path = path, .headers = hdrs, .file = f, .file_len = size };
  struct response resp;
  static const long ok[] = { 200, 201, 0 };
  if (call (c, &req, ok, &resp, err) < 0)
    return -1;
  response_free (&resp);
  return 0;
}

/* A resumable upload: POST, PATCH chunks (after a failed one, HEAD tells
   where the store is and the upload goes on from there), PUT ?digest=. */
static int
put_chunked (store_client *c, const char *digest, FILE *f, uint64_t size, ps_error **err)
{
  struct request start = { .method = "POST", .path = "/v1/uploads" };
  struct response resp;
  static const long started[] = { 202, 201, 0 };
  if (call (c, &start, started, &resp, err) < 0)
    return -1;
  cleanup_free char *loc = resp.location ? xstrdup (resp.location) : NULL;
  response_free (&resp);
  if (loc == NULL || loc[0] != '/')
    return ps_error_set (err, 502, "store %s: POST /v1/uploads gave no Location", c->endpoint);
  /* The Location may carry the endpoint's prefix: keep what follows it. */
  const char *rel = strstr (loc, "/v1/uploads/") ? strstr (loc, "/v1/uploads/") : loc;
  uint64_t off = 0;
  int failures = 0;
  while (off < size)
    {
      uint64_t n = size - off < c->chunk ? size - off : c->chunk;
      if (fseeko (f, (off_t) off, SEEK_SET) != 0)
        return ps_error_set_errno (err, 500, errno, "seek");
      cleanup_free char *range = xasprintf ("Content-Range: bytes %" PRIu64 "-%" PRIu64 "/*", off, off + n - 1);
      const char *hdrs[] = { range, "Content-Type: application/octet-stream", NULL };
      struct request patch = { .method = "PATCH", .path = rel, .headers = hdrs, .file = f, .file_len = n };
      ps_error *perr = NULL;
      static const long patched[] = { 202, 204, 0 };
      if (call (c, &patch, patched, &resp, &perr) == 0)
        {
          response_free (&resp);
          off += n;
          continue;
        }
      if (++failures > STORE_CHUNK_RETRIES)
        {
          *err = perr;
          return ps_error_wrap (err, "upload of %s", digest);
        }
      ps_warn ("store %s: chunk at %" PRIu64 " of %s failed (%s); asking where the upload stands", c->endpoint,
               off, digest, perr->msg);
      ps_error_free (perr);
      struct request head = { .method = "HEAD", .path = rel };
      static const long headed[] = { 200, 204, 0 };
      if (call (c, &head, headed, &resp, err) < 0)
        return ps_error_wrap (err, "resume the upload of %s", digest);
      off = resp.offset;
      response_free (&resp);
    }
  cleanup_free char *fin = xasprintf ("%s?digest=%s", rel, digest);
  struct request finish = { .method = "PUT", .path = fin, .body = "", .body_len = 0 };
  static const long finished[] = { 201, 200, 0 };
  if (call (c, &finish, finished, &resp, err) < 0)
    return -1;
  response_free (&resp);
  return 0;
}

int
store_blob_put_file (store_client *c, const char *digest, const char *path, uint64_t *uploaded, ps_error **err)
{
  if (c->s3)
    return s3_blob_put_file (c->s3, digest, path, uploaded, err);
  if (uploaded)
    *uploaded = 0;
  int have = store_blob_exists (c, digest, err);
  if (have != 0)
    return have < 0 ? -1 : 0;
  FILE *f = fopen (path, "rb");
  if (f == NULL)
    return ps_error_set_errno (err, 500, errno, "open %s", path);
  struct stat st;
  fstat (fileno (f), &st);
  uint64_t size = (uint64_t) st.st_size;
  int r = c->resumable && size > c->chunk ? put_chunked (c, digest, f, size, err)
                                          : put_whole (c, digest, f, size, err);
  fclose (f);
  if (r == 0 && uploaded)
    *uploaded = size;
  return r;
}

int
store_blob_get_file (store_client *c, const char *digest, const char *path, ps_error **err)
{
  if (c->s3)
    return s3_blob_get_file (c->s3, digest, path, err);
  if (!is_digest (digest))
    return ps_error_set (err, 400, "not a sha256 digest: %s", digest);
  cleanup_free char *what = xasprintf ("/v1/blobs/%s", digest);
  cleanup_free char *url = xasprintf ("%s%s", c->base, what);
  return store_http_get_file (&c->target, url, what, digest, path, err);
}

int
store_manifest_put (store_client *c, const char *name, const char *ref, const char *mtype, const void *body,
                    size_t len, char **digest, ps_error **err)
{
  if (c->s3)
    return s3_manifest_put (c->s3, name, ref, mtype, body, len, digest, err);
  cleanup_free char *path = xasprintf ("/v1/names/%s/manifests/%s", name, ref);
  cleanup_free char *ct = xasprintf ("Content-Type: %s", mtype);
  const char *hdrs[] = { ct, NULL };
  struct request req = { .method = "PUT", .path = path, .headers = hdrs, .body = body, .body_len = len };
  struct response resp;
  static const long ok[] = { 201, 200, 0 };
  if (call (c, &req, ok, &resp, err) < 0)
    return -1;
  if (digest)
    *digest = resp.digest ? xstrdup (resp.digest) : NULL;
  response_free (&resp);
  return 0;
}

int
store_manifest_get (store_client *c, const char *name, const char *ref, char **body, size_t *len, char **mtype,
                    ps_error **err)
{
  if (c->s3)
    return s3_manifest_get (c->s3, name, ref, body, len, mtype, err);
  cleanup_free char *path = xasprintf ("/v1/names/%s/manifests/%s", name, ref);
  struct request req = { .method = "GET", .path = path };
  struct response resp;
  static const long ok[] = { 200, 404, 0 };
  if (call (c, &req, ok, &resp, err) < 0)
    return -1;
  if (resp.status == 404)
    {
      response_free (&resp);
      return 0;
    }
  char hex[65];
  ps_sha256_hex (resp.body.data ? resp.body.data : "", resp.body.len, hex);
  if (resp.digest == NULL || strcmp (resp.digest + (ps_str_has_prefix (resp.digest, "sha256:") ? 7 : 0), hex) != 0)
    {
      ps_error_set (err, 502, "store %s: %s: the manifest does not match the digest the store gave (%s)",
                    c->endpoint, path, resp.digest ? resp.digest : "none");
      response_free (&resp);
      return -1;
    }
  *len = resp.body.len;
  *body = resp.body.len ? ps_buf_steal (&resp.body) : xstrdup ("");
  if (mtype)
    *mtype = resp.ctype ? xstrdup (resp.ctype) : NULL;
  response_free (&resp);
  return 1;
}

int
store_tags (store_client *c, const char *name, char **json, ps_error **err)
{
  if (c->s3)
    return s3_tags (c->s3, name, json, err);
  cleanup_free char *path = xasprintf ("/v1/names/%s/tags", name);
  struct request req = { .method = "GET", .path = path };
  struct response resp;
  static const long ok[] = { 200, 404, 0 };
  if (call (c, &req, ok, &resp, err) < 0)
    return -1;
  int r = resp.status == 200;
  if (r)
    *json = resp.body.len ? ps_buf_steal (&resp.body) : xstrdup ("{}");
  response_free (&resp);
  return r;
}

/* ---- pushing an OCI layout ---------------------------------------------------- */

static char *
layout_blob (const char *dir, const char *digest)
{
  return xasprintf ("%s/blobs/sha256/%s", dir, digest + 7);
}

static int
push_descriptor (store_client *c, const char *dir, const cJSON *desc, const char *name, const char *ref,
                 char **digest_out, uint64_t *bytes, ps_error **err);

static int
push_blob_desc (store_client *c, const char *dir, const cJSON *desc, uint64_t *bytes, ps_error **err)
{
  const cJSON *d = cJSON_GetObjectItemCaseSensitive (desc, "digest");
  if (!cJSON_IsString (d) || !is_digest (d->valuestring))
    return ps_error_set (err, 500, "OCI layout %s: a descriptor without a sha256 digest", dir);
  cleanup_free char *path = layout_blob (dir, d->valuestring);
  uint64_t sent = 0;
  if (store_blob_put_file (c, d->valuestring, path, &sent, err) < 0)
    return -1;
  *bytes += sent;
  return 0;
}

/* The blobs of one manifest (config and layers), several at a time for S3
   (s3_upload_parallelism: its client makes a curl handle per request; the
   store protocol's client shares one): each blob is compressed already, so
   what bounds an export after buildah wrote the layout is the upload, and
   one blob at a time leaves the link and the server's hashing idle between
   PUTs.  The manifest goes up only once all of them are in. */
struct blob_batch
{
  store_client *c;
  const char *dir;
  const cJSON **descs;
  size_t n, next;
  uint64_t bytes;
  ps_error *err;
  pthread_mutex_t lock;
};

static void *
blob_batch_worker (void *ud)
{
  struct blob_batch *b = ud;
  for (;;)
    {
      pthread_mutex_lock (&b->lock);
      const cJSON *desc = b->err == NULL && b->next < b->n ? b->descs[b->next++] : NULL;
      pthread_mutex_unlock (&b->lock);
      if (desc == NULL)
        return NULL;
      uint64_t sent = 0;
      ps_error *e = NULL;
      int r = push_blob_desc (b->c, b->dir, desc, &sent, &e);
      pthread_mutex_lock (&b->lock);
      b->bytes += sent;
      if (r < 0 && b->err == NULL)
        b->err = e;
      else
        ps_error_free (e);
      pthread_mutex_unlock (&b->lock);
    }
}

static int
push_blobs (store_client *c, const char *dir, const cJSON **descs, size_t n, uint64_t *bytes, ps_error **err)
{
  unsigned width = c->s3 ? s3_upload_parallelism (c->s3) : 1;
  if (width > n)
    width = (unsigned) n;
  if (width <= 1)
    {
      for (size_t i = 0; i < n; i++)
        if (push_blob_desc (c, dir, descs[i], bytes, err) < 0)
          return -1;
      return 0;
    }
  struct blob_batch b = { .c = c, .dir = dir, .descs = descs, .n = n };
  pthread_mutex_init (&b.lock, NULL);
  pthread_t *threads = xcalloc (width, sizeof *threads);
  unsigned started = 0;
  for (; started < width; started++)
    if (pthread_create (&threads[started], NULL, blob_batch_worker, &b) != 0)
      break;
  if (started == 0)
    blob_batch_worker (&b);
  for (unsigned i = 0; i < started; i++)
    pthread_join (threads[i], NULL);
  free (threads);
  pthread_mutex_destroy (&b.lock);
  *bytes += b.bytes;
  if (b.err)
    {
      if (err && *err == NULL)
        *err = b.err;
      else
        ps_error_free (b.err);
      return -1;
    }
  return 0;
}

/* The manifest (or index) `desc` names: its blobs (or its manifests)
   first, then the manifest itself at `ref` (NULL: by its digest). */
static int
push_descriptor (store_client *c, const char *dir, const cJSON *desc, const char *name, const char *ref,
                 char **digest_out, uint64_t *bytes, ps_error **err)
{
  const cJSON *d = cJSON_GetObjectItemCaseSensitive (desc, "digest");
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive (desc, "mediaType");
  if (!cJSON_IsString (d) || !is_digest (d->valuestring) || !cJSON_IsString (mt))
    return ps_error_set (err, 500, "OCI layout %s: a manifest descriptor without digest or media type", dir);
  cleanup_free char *path = layout_blob (dir, d->valuestring);
  cleanup_free char *text = NULL;
  size_t len = 0;
  if (ps_read_file (path, STORE_MAX_DOCUMENT, &text, &len, err) < 0)
    return -1;
  cJSON *doc = cJSON_ParseWithLength (text, len);
  if (doc == NULL)
    return ps_error_set (err, 500, "OCI layout %s: manifest %s is not JSON", dir, d->valuestring);
  int ret = 0;
  const cJSON *m;
  if (strstr (mt->valuestring, "index") || strstr (mt->valuestring, "list"))
    cJSON_ArrayForEach (m, cJSON_GetObjectItemCaseSensitive (doc, "manifests"))
      {
        if (ret == 0)
          ret = push_descriptor (c, dir, m, name, NULL, NULL, bytes, err);
      }
  else
    {
      const cJSON *layers = cJSON_GetObjectItemCaseSensitive (doc, "layers");
      size_t n = 0;
      const cJSON **descs = xcalloc ((size_t) cJSON_GetArraySize (layers) + 1, sizeof *descs);
      descs[n++] = cJSON_GetObjectItemCaseSensitive (doc, "config");
      cJSON_ArrayForEach (m, layers)
        descs[n++] = m;
      ret = push_blobs (c, dir, descs, n, bytes, err);
      free (descs);
    }
  cJSON_Delete (doc);
  if (ret == 0)
    ret = store_manifest_put (c, name, ref ? ref : d->valuestring, mt->valuestring, text, len, NULL, err);
  if (ret == 0 && digest_out)
    *digest_out = xstrdup (d->valuestring);
  return ret;
}

int
store_push_layout (store_client *c, const char *layout_dir, const char *name, const ps_strv *tags, char **digest,
                   uint64_t *bytes, ps_error **err)
{
  uint64_t sent = 0;
  cleanup_free char *index_path = xasprintf ("%s/index.json", layout_dir);
  cleanup_free char *text = NULL;
  size_t len = 0;
  if (ps_read_file (index_path, STORE_MAX_DOCUMENT, &text, &len, err) < 0)
    return -1;
  cJSON *index = cJSON_ParseWithLength (text, len);
  const cJSON *top = cJSON_GetArrayItem (cJSON_GetObjectItemCaseSensitive (index, "manifests"), 0);
  if (top == NULL)
    {
      cJSON_Delete (index);
      return ps_error_set (err, 500, "OCI layout %s: index.json names no manifest", layout_dir);
    }
  /* Everything by digest first; the tags last. */
  cleanup_free char *top_digest = NULL;
  int ret = push_descriptor (c, layout_dir, top, name, NULL, &top_digest, &sent, err);
  if (ret == 0)
    {
      const cJSON *mt = cJSON_GetObjectItemCaseSensitive (top, "mediaType");
      cleanup_free char *path = layout_blob (layout_dir, top_digest);
      cleanup_free char *body = NULL;
      size_t blen = 0;
      ret = ps_read_file (path, STORE_MAX_DOCUMENT, &body, &blen, err);
      for (size_t i = 0; ret == 0 && i < tags->n; i++)
        ret = store_manifest_put (c, name, tags->v[i], mt->valuestring, body, blen, NULL, err);
    }
  cJSON_Delete (index);
  if (ret == 0 && digest)
    *digest = steal_pointer (&top_digest);
  if (bytes)
    *bytes = sent;
  return ret;
}

int
store_split_name (const char *ref, char **name, char **tag, const char *field, ps_error **err)
{
  if (ref == NULL || *ref == '\0')
    return ps_error_set (err, 400, "%s: the store exporter needs attrs.name (NAME[:TAG])", field);
  if (strchr (ref, '@'))
    return ps_error_set (err, 400, "%s: \"%s\": name the image NAME[:TAG]; a digest is what the store gives back",
                         field, ref);
  const char *slash = strrchr (ref, '/');
  const char *colon = strrchr (ref, ':');
  if (colon && slash && colon < slash)
    colon = NULL;
  *name = colon ? xstrndup (ref, (size_t) (colon - ref)) : xstrdup (ref);
  *tag = xstrdup (colon ? colon + 1 : "latest");
  bool ok = **name && **tag && strlen (*name) <= 255;
  for (const char *p = *name; ok && *p; p++)
    ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr ("._-/", *p);
  for (const char *p = *tag; ok && *p; p++)
    ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr ("._-", *p);
  if (!ok)
    {
      free (*name), free (*tag);
      *name = *tag = NULL;
      return ps_error_set (err, 400,
                           "%s: \"%s\" is not a store name: lower-case letters, digits and ._-/, then :TAG", field,
                           ref);
    }
  return 0;
}
