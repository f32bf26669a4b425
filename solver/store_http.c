/* store_http.c — the libcurl exchange of the store backends (store_http.h). */
#define _GNU_SOURCE
#include "solver/store_http.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

void
store_http_response_free (struct store_http_response *r)
{
  ps_buf_free (&r->body);
  free (r->digest);
  free (r->location);
  free (r->ctype);
  free (r->etag);
  free (r->last_modified);
  memset (r, 0, sizeof *r);
}

bool
store_is_digest (const char *d)
{
  return d && ps_str_has_prefix (d, "sha256:") && strlen (d) == 71 && strspn (d + 7, "0123456789abcdef") == 64;
}

struct body_source
{
  const struct store_http_request *req;
  size_t off;
};

static size_t
read_body (char *buf, size_t size, size_t nmemb, void *ud)
{
  struct body_source *s = ud;
  size_t want = size * nmemb;
  if (s->req->file)
    {
      uint64_t left = s->req->file_len - s->off;
      if (want > left)
        want = (size_t) left;
      size_t n = fread (buf, 1, want, s->req->file);
      if (n == 0 && want > 0)
        return CURL_READFUNC_ABORT;
      s->off += n;
      return n;
    }
  size_t left = s->req->body_len - s->off;
  if (want > left)
    want = left;
  memcpy (buf, (const char *) s->req->body + s->off, want);
  s->off += want;
  return want;
}

static size_t
write_body (char *data, size_t size, size_t nmemb, void *ud)
{
  struct store_http_response *r = ud;
  size_t n = size * nmemb;
  if (r->body.len + n > STORE_MAX_DOCUMENT)
    {
      r->too_big = true;
      return 0;
    }
  ps_buf_append (&r->body, data, n);
  return n;
}

static char *
header_value (const char *line, size_t n, const char *name)
{
  size_t nl = strlen (name);
  if (n <= nl + 1 || strncasecmp (line, name, nl) != 0 || line[nl] != ':')
    return NULL;
  const char *v = line + nl + 1;
  const char *end = line + n;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  return xstrndup (v, (size_t) (end - v));
}

static size_t
on_header (char *data, size_t size, size_t nmemb, void *ud)
{
  struct store_http_response *r = ud;
  size_t n = size * nmemb;
  char *v;
  if ((v = header_value (data, n, "Store-Content-Digest")))
    free (r->digest), r->digest = v;
  else if ((v = header_value (data, n, "Location")))
    free (r->location), r->location = v;
  else if ((v = header_value (data, n, "Content-Type")))
    free (r->ctype), r->ctype = v;
  else if ((v = header_value (data, n, "ETag")))
    free (r->etag), r->etag = v;
  else if ((v = header_value (data, n, "Last-Modified")))
    free (r->last_modified), r->last_modified = v;
  else if ((v = header_value (data, n, "Content-Length")))
    {
      r->length = strtoull (v, NULL, 10);
      free (v);
    }
  else if ((v = header_value (data, n, "Upload-Offset")))
    {
      r->offset = strtoull (v, NULL, 10);
      free (v);
    }
  return n;
}

void
store_http_setup (const struct store_http_target *t, void *curl_easy, const char *url)
{
  CURL *h = curl_easy;
  curl_easy_setopt (h, CURLOPT_URL, url);
  curl_easy_setopt (h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt (h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (h, CURLOPT_LOW_SPEED_TIME, 120L);
  if (t->unix_path)
    curl_easy_setopt (h, CURLOPT_UNIX_SOCKET_PATH, t->unix_path);
  if (t->tls_ca)
    curl_easy_setopt (h, CURLOPT_CAINFO, t->tls_ca);
  if (t->tls_cert)
    curl_easy_setopt (h, CURLOPT_SSLCERT, t->tls_cert);
  if (t->tls_key)
    curl_easy_setopt (h, CURLOPT_SSLKEY, t->tls_key);
  if (t->aws_sigv4)
    {
      /* libcurl signs every request (CURLOPT_AWS_SIGV4, curl >= 7.75);
         the secret itself never leaves the process. */
      curl_easy_setopt (h, CURLOPT_AWS_SIGV4, t->aws_sigv4);
      curl_easy_setopt (h, CURLOPT_USERPWD, t->userpwd);
    }
}

static struct curl_slist *
request_headers (const struct store_http_target *t, const char *const *extra)
{
  struct curl_slist *hdrs = NULL;
  if (t->auth)
    hdrs = curl_slist_append (hdrs, t->auth);
  for (const char *const *hv = extra; hv && *hv; hv++)
    hdrs = curl_slist_append (hdrs, *hv);
  /* No "Expect: 100-continue" round trip for the store.  Not with SigV4:
     libcurl 7.88 signs the headers given here, an empty one included, and
     the server then computes another signature (S3 handles 100-continue). */
  return t->aws_sigv4 ? hdrs : curl_slist_append (hdrs, "Expect:");
}

int
store_http_perform (const struct store_http_target *t, const struct store_http_request *req,
                    struct store_http_response *resp, ps_error **err)
{
  memset (resp, 0, sizeof *resp);
  CURL *h = curl_easy_init ();
  if (h == NULL)
    return ps_error_set (err, 500, "%s: cannot start libcurl", t->label);
  struct curl_slist *hdrs = request_headers (t, req->headers);
  struct body_source src = { req, 0 };
  store_http_setup (t, h, req->url);
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, resp);
  curl_easy_setopt (h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt (h, CURLOPT_HEADERDATA, resp);
  if (strcmp (req->method, "HEAD") == 0)
    curl_easy_setopt (h, CURLOPT_NOBODY, 1L);
  else if (req->body || req->file)
    {
      curl_easy_setopt (h, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt (h, CURLOPT_READFUNCTION, read_body);
      curl_easy_setopt (h, CURLOPT_READDATA, &src);
      curl_easy_setopt (h, CURLOPT_INFILESIZE_LARGE,
                        (curl_off_t) (req->file ? req->file_len : (uint64_t) req->body_len));
      curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, req->method);
    }
  else if (strcmp (req->method, "GET") != 0)
    curl_easy_setopt (h, CURLOPT_CUSTOMREQUEST, req->method);
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt (h, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform (h);
  curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &resp->status);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (h);
  if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && resp->too_big))
    {
      store_http_response_free (resp);
      return ps_error_set (err, 502, "%s: %s %s: %s", t->label, req->method, req->what,
                           *errbuf ? errbuf : curl_easy_strerror (rc));
    }
  if (resp->too_big)
    {
      store_http_response_free (resp);
      return ps_error_set (err, 502, "%s: %s %s: the answer is larger than %d bytes", t->label, req->method,
                           req->what, STORE_MAX_DOCUMENT);
    }
  return 0;
}

struct file_sink
{
  FILE *f;
  EVP_MD_CTX *md;
  bool failed;
};

static size_t
write_file (char *data, size_t size, size_t nmemb, void *ud)
{
  struct file_sink *s = ud;
  size_t n = size * nmemb;
  if (fwrite (data, 1, n, s->f) != n)
    {
      s->failed = true;
      return 0;
    }
  EVP_DigestUpdate (s->md, data, n);
  return n;
}

int
store_http_get_file (const struct store_http_target *t, const char *url, const char *what, const char *digest,
                     const char *path, ps_error **err)
{
  int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", path);
  struct file_sink sink = { fdopen (fd, "wb"), EVP_MD_CTX_new (), false };
  EVP_DigestInit_ex (sink.md, EVP_sha256 (), NULL);
  CURL *h = curl_easy_init ();
  struct curl_slist *hdrs = request_headers (t, NULL);
  char errbuf[CURL_ERROR_SIZE] = "";
  store_http_setup (t, h, url);
  curl_easy_setopt (h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt (h, CURLOPT_WRITEFUNCTION, write_file);
  curl_easy_setopt (h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt (h, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform (h);
  long status = 0;
  curl_easy_getinfo (h, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all (hdrs);
  curl_easy_cleanup (h);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_DigestFinal_ex (sink.md, md, &mdlen);
  EVP_MD_CTX_free (sink.md);
  bool closed = fclose (sink.f) == 0;
  int ret = 1;
  if (rc != CURLE_OK && status == 404)
    ret = 0;
  else if (rc != CURLE_OK || sink.failed || !closed)
    ret = ps_error_set (err, 502, "%s: GET %s: %s", t->label, what,
                        sink.failed || !closed ? "cannot write the local copy" : *errbuf ? errbuf
                                                                                       : curl_easy_strerror (rc));
  else
    {
      char hex[65];
      for (unsigned i = 0; i < mdlen && i < 32; i++)
        sprintf (hex + 2 * i, "%02x", md[i]);
      if (strcmp (hex, digest + 7) != 0)
        ret = ps_error_set (err, 502, "%s: blob %s: the bytes received hash to sha256:%s", t->label, digest, hex);
    }
  if (ret != 1)
    unlink (path);
  return ret;
}
