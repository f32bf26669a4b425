/* store_http.h — the libcurl exchange shared by the store backends:
 * store_client.c (the store protocol, api-docs/store-protocol.md) and
 * store_s3.c (S3, api-docs/s3.md).
 *
 * A backend names its target once (how to reach it and how to
 * authenticate) and then makes requests against full URLs.  Nothing here
 * logs, and no message carries a credential: errors name the target's
 * label, the method and the request's `what` (a path or an object key). */
#ifndef SOLVER_STORE_HTTP_H
#define SOLVER_STORE_HTTP_H

#include <stdio.h>

#include "common/ps.h"

/* Largest manifest, listing or error body read into memory. */
#define STORE_MAX_DOCUMENT (4 * 1024 * 1024)

struct store_http_target
{
  const char *label;     /* "store unix:///s.sock", "s3 bucket b": the start of every message */
  const char *unix_path; /* HTTP over this unix socket, or NULL */
  const char *tls_ca, *tls_cert, *tls_key;
  const char *auth;      /* a header line sent with every request ("Authorization: Bearer …",
                            "x-amz-security-token: …"), or NULL */
  const char *userpwd;   /* AWS SigV4: "ACCESS_KEY:SECRET", signed by libcurl, never sent */
  const char *aws_sigv4; /* "aws:amz:REGION:s3", or NULL */
};

struct store_http_request
{
  const char *method;
  const char *url;  /* the full URL */
  const char *what; /* for messages: the path or the object key */
  const char *const *headers;
  const void *body; /* a body from memory */
  size_t body_len;
  FILE *file; /* or a body read from here */
  uint64_t file_len;
};

struct store_http_response
{
  long status;
  ps_buf body;
  char *digest;        /* Store-Content-Digest */
  char *location;      /* Location */
  char *ctype;         /* Content-Type */
  char *etag;          /* ETag (S3 multipart parts) */
  char *last_modified; /* Last-Modified */
  uint64_t offset;     /* Upload-Offset */
  uint64_t length;     /* Content-Length */
  bool too_big;
};

void store_http_response_free (struct store_http_response *r);

/* The options every request sets: the URL, the socket or TLS files, the
   credentials, timeouts that notice a server gone silent. */
void store_http_setup (const struct store_http_target *t, void *curl_easy, const char *url);

/* One request.  0 with the response (any status), -1 with *err (502)
   when the server could not be reached or the exchange broke. */
int store_http_perform (const struct store_http_target *t, const struct store_http_request *req,
                        struct store_http_response *resp, ps_error **err);

/* GET `url` into a new file at `path` (0600), checked against `digest`:
   1 written, 0 the server answered 404 (no file left), -1 with *err (no
   file left either). */
int store_http_get_file (const struct store_http_target *t, const char *url, const char *what, const char *digest,
                         const char *path, ps_error **err);

/* "sha256:" and 64 lower-case hex digits. */
bool store_is_digest (const char *d);

#endif
