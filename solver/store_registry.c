/* store_registry.c — a store served to buildah as a registry (store_registry.h). */
#define _GNU_SOURCE
#include "solver/store_registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

/* Largest manifest buildah may PUT. */
#define STORE_REGISTRY_MAX_MANIFEST (4 * 1024 * 1024)

struct store_registry
{
  store_client *client;
  struct MHD_Daemon *mhd;
  char *work_dir;
  atomic_size_t failures;
  atomic_uint serial;
};

/* One request's state across the access handler's calls. */
struct request
{
  bool started;
  int upload_fd;   /* PATCH/PUT/POST of a blob upload: the staging file, else -1 */
  bool upload_err;
  ps_buf body;     /* a manifest PUT */
  bool too_big;
};

static enum MHD_Result
answer (struct MHD_Connection *conn, unsigned status, const char *body, const char *const *headers)
{
  struct MHD_Response *r
      = MHD_create_response_from_buffer (strlen (body ? body : ""), (void *) (body ? body : ""), MHD_RESPMEM_MUST_COPY);
  MHD_add_response_header (r, "Docker-Distribution-API-Version", "registry/2.0");
  if (body && *body)
    MHD_add_response_header (r, "Content-Type", "application/json");
  for (const char *const *h = headers; h && h[0]; h += 2)
    MHD_add_response_header (r, h[0], h[1]);
  enum MHD_Result ret = MHD_queue_response (conn, status, r);
  MHD_destroy_response (r);
  return ret;
}

static enum MHD_Result
registry_error (struct MHD_Connection *conn, unsigned status, const char *code, const char *msg)
{
  cleanup_free char *escaped = xstrdup (msg);
  for (char *p = escaped; *p; p++)
    if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
      *p = ' ';
  cleanup_free char *body = xasprintf ("{\"errors\":[{\"code\":\"%s\",\"message\":\"%s\"}]}", code, escaped);
  return answer (conn, status, body, NULL);
}

static bool
is_digest (const char *d)
{
  return d && ps_str_has_prefix (d, "sha256:") && strlen (d) == 71 && strspn (d + 7, "0123456789abcdef") == 64;
}

/* The staging file of upload `id` (hex only: it is a path component). */
static char *
upload_path (store_registry *r, const char *id)
{
  if (id == NULL || *id == '\0' || strspn (id, "0123456789abcdef") != strlen (id) || strlen (id) > 32)
    return NULL;
  return xasprintf ("%s/uploads/%s", r->work_dir, id);
}

static char *
new_upload (store_registry *r)
{
  char rnd[17];
  ps_random_hex (rnd, 8);
  char *id = xasprintf ("%s%08x", rnd, atomic_fetch_add (&r->serial, 1));
  cleanup_free char *path = upload_path (r, id);
  int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    {
      free (id);
      return NULL;
    }
  close (fd);
  return id;
}

/* sha256 of a file, "sha256:<hex>" (malloc'd), or NULL.  Uploads are
   staged whole and a layer may be large: hashed in pieces. */
static char *
file_digest (const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  EVP_MD_CTX *md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (md, EVP_sha256 (), NULL);
  char buf[65536];
  ssize_t n;
  while ((n = read (fd, buf, sizeof buf)) > 0)
    EVP_DigestUpdate (md, buf, (size_t) n);
  close (fd);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int outlen = 0;
  EVP_DigestFinal_ex (md, out, &outlen);
  EVP_MD_CTX_free (md);
  if (n < 0 || outlen != 32)
    return NULL;
  char hex[65];
  for (unsigned i = 0; i < 32; i++)
    sprintf (hex + 2 * i, "%02x", out[i]);
  return xasprintf ("sha256:%s", hex);
}

/* PUT/POST ...?digest=: the staged upload is complete; check it and send
   it to the store. */
static enum MHD_Result
finish_upload (store_registry *r, struct MHD_Connection *conn, const char *repo, const char *path,
               const char *digest)
{
  if (!is_digest (digest))
    {
      unlink (path);
      return registry_error (conn, 400, "DIGEST_INVALID", "the upload needs ?digest=sha256:...");
    }
  cleanup_free char *got = file_digest (path);
  if (got == NULL || strcmp (got, digest) != 0)
    {
      unlink (path);
      return registry_error (conn, 400, "DIGEST_INVALID", "the uploaded bytes do not match the digest");
    }
  ps_error *err = NULL;
  int ret = store_blob_put_file (r->client, digest, path, NULL, &err);
  unlink (path);
  if (ret < 0)
    {
      atomic_fetch_add (&r->failures, 1);
      ps_warn ("store cache: %s", err->msg);
      enum MHD_Result m = registry_error (conn, 502, "UNKNOWN", err->msg);
      ps_error_free (err);
      return m;
    }
  cleanup_free char *loc = xasprintf ("/v2/%s/blobs/%s", repo, digest);
  const char *hdrs[] = { "Location", loc, "Docker-Content-Digest", digest, NULL };
  return answer (conn, 201, "", hdrs);
}

static enum MHD_Result
get_blob (store_registry *r, struct MHD_Connection *conn, const char *digest, bool head)
{
  if (!is_digest (digest))
    return registry_error (conn, 404, "BLOB_UNKNOWN", "not a sha256 digest");
  ps_error *err = NULL;
  if (head)
    {
      uint64_t size = 0;
      int have = store_blob_stat (r->client, digest, &size, &err);
      if (have <= 0)
        {
          if (have < 0)
            {
              atomic_fetch_add (&r->failures, 1);
              ps_debug ("store cache: %s", err->msg);
              ps_error_free (err);
            }
          return registry_error (conn, 404, "BLOB_UNKNOWN", "blob unknown to the store");
        }
      /* An empty response whose Content-Length is the blob's size. */
      struct MHD_Response *resp = MHD_create_response_from_buffer (0, (void *) "", MHD_RESPMEM_PERSISTENT);
      cleanup_free char *len = xasprintf ("%" PRIu64, size);
      MHD_add_response_header (resp, "Docker-Content-Digest", digest);
      MHD_add_response_header (resp, "Docker-Distribution-API-Version", "registry/2.0");
      MHD_add_response_header (resp, "Content-Type", "application/octet-stream");
      MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_LENGTH, len);
      enum MHD_Result m = MHD_queue_response (conn, 200, resp);
      MHD_destroy_response (resp);
      return m;
    }
  cleanup_free char *path
      = xasprintf ("%s/blobs-%s-%08x", r->work_dir, digest + 7, atomic_fetch_add (&r->serial, 1));
  int have = store_blob_get_file (r->client, digest, path, &err);
  if (have <= 0)
    {
      if (have < 0)
        {
          atomic_fetch_add (&r->failures, 1);
          ps_warn ("store cache: %s", err->msg);
          ps_error_free (err);
        }
      return registry_error (conn, 404, "BLOB_UNKNOWN", "blob unknown to the store");
    }
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  unlink (path);
  struct stat st;
  if (fd < 0 || fstat (fd, &st) < 0)
    {
      if (fd >= 0)
        close (fd);
      return registry_error (conn, 500, "UNKNOWN", "cannot read the staged blob");
    }
  struct MHD_Response *resp = MHD_create_response_from_fd ((uint64_t) st.st_size, fd);
  MHD_add_response_header (resp, "Docker-Content-Digest", digest);
  MHD_add_response_header (resp, "Docker-Distribution-API-Version", "registry/2.0");
  MHD_add_response_header (resp, "Content-Type", "application/octet-stream");
  enum MHD_Result m = MHD_queue_response (conn, 200, resp);
  MHD_destroy_response (resp);
  return m;
}

static enum MHD_Result
get_manifest (store_registry *r, struct MHD_Connection *conn, const char *repo, const char *ref, bool head)
{
  ps_error *err = NULL;
  cleanup_free char *body = NULL;
  cleanup_free char *mtype = NULL;
  size_t len = 0;
  int have = store_manifest_get (r->client, repo, ref, &body, &len, &mtype, &err);
  if (have <= 0)
    {
      /* A store that fails is a cache miss for buildah, and a warning for
         the user (store_registry_failures), never a failed build. */
      if (have < 0)
        {
          atomic_fetch_add (&r->failures, 1);
          ps_warn ("store cache: %s", err->msg);
          ps_error_free (err);
        }
      return registry_error (conn, 404, "MANIFEST_UNKNOWN", "manifest unknown to the store");
    }
  char hex[65];
  ps_sha256_hex (body, len, hex);
  cleanup_free char *digest = xasprintf ("sha256:%s", hex);
  struct MHD_Response *resp
      = head ? MHD_create_response_from_buffer (0, (void *) "", MHD_RESPMEM_PERSISTENT)
             : MHD_create_response_from_buffer (len, body, MHD_RESPMEM_MUST_COPY);
  cleanup_free char *clen = xasprintf ("%zu", len);
  if (head)
    MHD_add_response_header (resp, MHD_HTTP_HEADER_CONTENT_LENGTH, clen);
  MHD_add_response_header (resp, "Content-Type", mtype ? mtype : "application/vnd.oci.image.manifest.v1+json");
  MHD_add_response_header (resp, "Docker-Content-Digest", digest);
  MHD_add_response_header (resp, "Docker-Distribution-API-Version", "registry/2.0");
  enum MHD_Result m = MHD_queue_response (conn, 200, resp);
  MHD_destroy_response (resp);
  return m;
}

static enum MHD_Result
put_manifest (store_registry *r, struct MHD_Connection *conn, const char *repo, const char *ref,
              const struct request *rq)
{
  if (rq->too_big)
    return registry_error (conn, 413, "MANIFEST_INVALID", "manifest too large");
  const char *ct = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Type");
  cleanup_free char *mtype = xstrndup (ct ? ct : "", ct ? strcspn (ct, ";") : 0);
  ps_error *err = NULL;
  cleanup_free char *digest = NULL;
  if (store_manifest_put (r->client, repo, ref, mtype, rq->body.data ? rq->body.data : "", rq->body.len, &digest,
                          &err)
      < 0)
    {
      atomic_fetch_add (&r->failures, 1);
      ps_warn ("store cache: %s", err->msg);
      enum MHD_Result m = registry_error (conn, 502, "UNKNOWN", err->msg);
      ps_error_free (err);
      return m;
    }
  if (digest == NULL)
    {
      char hex[65];
      ps_sha256_hex (rq->body.data ? rq->body.data : "", rq->body.len, hex);
      digest = xasprintf ("sha256:%s", hex);
    }
  cleanup_free char *loc = xasprintf ("/v2/%s/manifests/%s", repo, digest);
  const char *hdrs[] = { "Location", loc, "Docker-Content-Digest", digest, NULL };
  return answer (conn, 201, "", hdrs);
}

/* Split "/v2/<repo>/<kind>/<rest>" at the last "/<kind>/". */
static bool
route (const char *url, const char *kind, char **repo, const char **rest)
{
  if (!ps_str_has_prefix (url, "/v2/"))
    return false;
  cleanup_free char *marker = xasprintf ("/%s/", kind);
  const char *at = NULL;
  for (const char *p = strstr (url + 4, marker); p; p = strstr (p + 1, marker))
    at = p;
  if (at == NULL || at == url + 3)
    return false;
  *repo = xstrndup (url + 4, (size_t) (at - (url + 4)));
  *rest = at + strlen (marker);
  return true;
}

static enum MHD_Result
handle (void *cls, struct MHD_Connection *conn, const char *url, const char *method, const char *version,
        const char *upload_data, size_t *upload_data_size, void **con_cls)
{
  (void) version;
  store_registry *r = cls;
  struct request *rq = *con_cls;
  if (rq == NULL)
    {
      rq = xcalloc (1, sizeof *rq);
      rq->upload_fd = -1;
      *con_cls = rq;
      /* Stage an upload's body as it arrives. */
      char *repo = NULL;
      const char *rest = NULL;
      if ((strcmp (method, "PATCH") == 0 || strcmp (method, "PUT") == 0)
          && route (url, "uploads", &repo, &rest))
        {
          cleanup_free char *path = upload_path (r, rest);
          rq->upload_fd = path ? open (path, O_WRONLY | O_APPEND | O_CLOEXEC) : -1;
        }
      free (repo);
      return MHD_YES;
    }
  if (*upload_data_size > 0)
    {
      if (rq->upload_fd >= 0)
        {
          if (ps_write_all (rq->upload_fd, upload_data, *upload_data_size) < 0)
            rq->upload_err = true;
        }
      else if (rq->body.len + *upload_data_size > STORE_REGISTRY_MAX_MANIFEST)
        rq->too_big = true;
      else
        ps_buf_append (&rq->body, upload_data, *upload_data_size);
      *upload_data_size = 0;
      return MHD_YES;
    }

  bool head = strcmp (method, "HEAD") == 0;
  bool get = head || strcmp (method, "GET") == 0;
  if (strcmp (url, "/v2/") == 0 || strcmp (url, "/v2") == 0)
    return answer (conn, 200, "{}", NULL);

  cleanup_free char *repo = NULL;
  const char *rest = NULL;
  if (route (url, "uploads", &repo, &rest) && ps_str_has_suffix (repo, "/blobs"))
    {
      repo[strlen (repo) - 6] = '\0';
      const char *digest = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "digest");
      if (strcmp (method, "POST") == 0 && *rest == '\0')
        {
          cleanup_free char *id = new_upload (r);
          if (id == NULL)
            return registry_error (conn, 500, "UNKNOWN", "cannot stage an upload");
          cleanup_free char *path = upload_path (r, id);
          if (digest && rq->body.len)
            {
              /* a monolithic upload: POST with the bytes and ?digest= */
              int fd = open (path, O_WRONLY | O_APPEND | O_CLOEXEC);
              bool ok = fd >= 0 && ps_write_all (fd, rq->body.data, rq->body.len) == 0;
              if (fd >= 0)
                close (fd);
              if (!ok)
                return registry_error (conn, 500, "UNKNOWN", "cannot stage an upload");
              return finish_upload (r, conn, repo, path, digest);
            }
          cleanup_free char *loc = xasprintf ("/v2/%s/blobs/uploads/%s", repo, id);
          const char *hdrs[] = { "Location", loc, "Docker-Upload-UUID", id, "Range", "0-0", NULL };
          return answer (conn, 202, "", hdrs);
        }
      cleanup_free char *path = upload_path (r, rest);
      struct stat st;
      if (path == NULL || stat (path, &st) < 0)
        return registry_error (conn, 404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
      if (rq->upload_err)
        return registry_error (conn, 500, "UNKNOWN", "cannot stage the upload");
      if (strcmp (method, "PATCH") == 0 || (get && !head))
        {
          cleanup_free char *loc = xasprintf ("/v2/%s/blobs/uploads/%s", repo, rest);
          cleanup_free char *range = xasprintf ("0-%lld", st.st_size > 0 ? (long long) st.st_size - 1 : 0LL);
          const char *hdrs[] = { "Location", loc, "Docker-Upload-UUID", rest, "Range", range, NULL };
          return answer (conn, strcmp (method, "PATCH") == 0 ? 202 : 204, "", hdrs);
        }
      if (strcmp (method, "PUT") == 0)
        return finish_upload (r, conn, repo, path, digest);
      if (strcmp (method, "DELETE") == 0)
        {
          unlink (path);
          return answer (conn, 204, "", NULL);
        }
      return registry_error (conn, 405, "UNSUPPORTED", "method not allowed");
    }
  free (repo);
  repo = NULL;
  if (route (url, "blobs", &repo, &rest))
    {
      if (get)
        return get_blob (r, conn, rest, head);
      return registry_error (conn, 405, "UNSUPPORTED", "blobs are written through uploads");
    }
  free (repo);
  repo = NULL;
  if (route (url, "manifests", &repo, &rest))
    {
      if (get)
        return get_manifest (r, conn, repo, rest, head);
      if (strcmp (method, "PUT") == 0)
        return put_manifest (r, conn, repo, rest, rq);
      return registry_error (conn, 405, "UNSUPPORTED", "method not allowed");
    }
  free (repo);
  repo = NULL;
  if (get && ps_str_has_suffix (url, "/tags/list") && strlen (url) > 14)
    {
      /* The store's {"name","tags"} is the registry's answer too. */
      cleanup_free char *name = xstrndup (url + 4, strlen (url) - 4 - strlen ("/tags/list"));
      cleanup_free char *json = NULL;
      ps_error *err = NULL;
      int have = store_tags (r->client, name, &json, &err);
      if (have < 0)
        {
          atomic_fetch_add (&r->failures, 1);
          ps_warn ("store cache: %s", err->msg);
          ps_error_free (err);
        }
      if (have <= 0)
        return registry_error (conn, 404, "NAME_UNKNOWN", "no such name in the store");
      return answer (conn, 200, json, NULL);
    }
  return registry_error (conn, 404, "NAME_UNKNOWN", "not a route of this registry");
}

static void
completed (void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
  (void) cls, (void) conn, (void) toe;
  struct request *rq = *con_cls;
  if (rq == NULL)
    return;
  if (rq->upload_fd >= 0)
    close (rq->upload_fd);
  ps_buf_free (&rq->body);
  free (rq);
  *con_cls = NULL;
}

store_registry *
store_registry_start (const struct store_config *cfg, const char *name, const char *work_dir, char **repo,
                      ps_error **err)
{
  store_registry *r = xcalloc (1, sizeof *r);
  r->work_dir = xasprintf ("%s/store-registry-%s", work_dir, name);
  for (char *p = r->work_dir + strlen (work_dir) + 1; *p; p++)
    if (*p == '/')
      *p = '_';
  cleanup_free char *uploads = xasprintf ("%s/uploads", r->work_dir);
  if (ps_mkdir_p (uploads, 0700, err) < 0)
    {
      store_registry_stop (r);
      return NULL;
    }
  r->client = store_client_new (cfg, err);
  if (r->client == NULL)
    {
      store_registry_stop (r);
      return NULL;
    }
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = 0 };
  sa.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  r->mhd = MHD_start_daemon (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
                             NULL, NULL, handle, r, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_NOTIFY_COMPLETED, completed,
                             r, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 300, MHD_OPTION_END);
  const union MHD_DaemonInfo *info = r->mhd ? MHD_get_daemon_info (r->mhd, MHD_DAEMON_INFO_BIND_PORT) : NULL;
  if (info == NULL || info->port == 0)
    {
      ps_error_set (err, 500, "cannot serve the store %s to buildah on 127.0.0.1",
                    cfg->s3 ? cfg->s3->bucket : cfg->endpoint);
      store_registry_stop (r);
      return NULL;
    }
  *repo = xasprintf ("127.0.0.1:%u/%s", (unsigned) info->port, name);
  return r;
}

void
store_registry_stop (store_registry *r)
{
  if (r == NULL)
    return;
  if (r->mhd)
    MHD_stop_daemon (r->mhd);
  store_client_free (r->client);
  if (r->work_dir)
    ps_rm_rf (r->work_dir, NULL);
  free (r->work_dir);
  free (r);
}

size_t
store_registry_failures (store_registry *r)
{
  return r ? atomic_load (&r->failures) : 0;
}
