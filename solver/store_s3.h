/* store_s3.h — an S3 bucket as a store backend: `type=s3` exporters and
 * caches, with BuildKit's attribute names (cache/remotecache/s3 in
 * moby/buildkit).  store_client.h dispatches here when store_config.s3 is
 * set, so the exporter and the cache registry (store_registry.h) run
 * unchanged over a bucket.
 *
 * Object layout (api-docs/s3.md):
 *   caches (S3_LAYOUT_CACHE), as BuildKit's s3 cache:
 *     <prefix><blobs_prefix><digest>             blobs/sha256:<hex>
 *     <prefix><manifests_prefix><name>/<ref>     manifests/<name>/<key or digest>
 *   image exports (S3_LAYOUT_OCI): an OCI image layout under <prefix>, so
 *   a download of the prefix is read by `skopeo copy oci:DIR:NAME:TAG`:
 *     <prefix>blobs/sha256/<hex>                 blobs, configs and manifests
 *     <prefix>index.json                         one entry per NAME:TAG
 *     <prefix>oci-layout
 *
 * Requests are signed by libcurl (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3").
 * Credentials come from the attrs, else from the daemon's AWS_ACCESS_KEY_ID,
 * AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; no message, log line or
 * answer carries the secret or the session token. */
#ifndef SOLVER_STORE_S3_H
#define SOLVER_STORE_S3_H

#include "common/ps.h"
#include "schema/solve_request.h"

/* BuildKit's defaults. */
#define S3_DEFAULT_BLOBS_PREFIX "blobs/"
#define S3_DEFAULT_MANIFESTS_PREFIX "manifests/"
#define S3_DEFAULT_CACHE_NAME "buildkit"
#define S3_DEFAULT_UPLOAD_PARALLELISM 4
#define S3_DEFAULT_TOUCH_REFRESH (24 * 3600)
/* When neither the attrs nor $AWS_REGION/$AWS_DEFAULT_REGION name one
   (MinIO and most S3-compatible servers accept any). */
#define S3_DEFAULT_REGION "us-east-1"
/* Blobs larger than this go up as a multipart upload: one PUT of a large
   layer that fails at 90 % starts again from 0. */
#define S3_MULTIPART_THRESHOLD ((uint64_t) 64 * 1024 * 1024)
/* The size of a part (S3 wants >= 5 MiB but the last), grown when a blob
   would need more than S3_MAX_PARTS; each part in flight is held in memory. */
#define S3_PART_SIZE ((uint64_t) 16 * 1024 * 1024)
#define S3_MAX_PARTS 10000
/* More parts in flight than this are not useful on one connection's worth
   of bandwidth, and each holds S3_PART_SIZE of memory. */
#define S3_MAX_UPLOAD_PARALLELISM 32

enum s3_layout
{
  S3_LAYOUT_CACHE, /* blobs and manifests as BuildKit's s3 cache */
  S3_LAYOUT_OCI,   /* an OCI image layout (image exports) */
};

struct s3_config
{
  enum s3_layout layout;
  char *bucket;
  char *region;
  char *endpoint_url; /* NULL: AWS (https://s3.REGION.amazonaws.com) */
  char *prefix;       /* "" or e.g. "ci/" */
  char *blobs_prefix;
  char *manifests_prefix;
  bool use_path_style; /* default: true with endpoint_url (MinIO), false on AWS */
  char *access_key_id; /* NULL: $AWS_ACCESS_KEY_ID... at s3_client_new */
  char *secret_access_key;
  char *session_token;
  unsigned upload_parallelism;
  int64_t touch_refresh; /* seconds: blobs already there and older than this are touched */
};

/* The attrs of a `type=s3` exporter or cache (BuildKit's names; `name`
   and `mode` are the caller's).  400 naming `field`.attrs.<key>. */
int s3_config_parse (struct s3_config *c, const struct solve_attrs *attrs, enum s3_layout layout, const char *field,
                     ps_error **err);
void s3_config_free (struct s3_config *c);
/* "s3://bucket/prefix", for titles and messages. */
char *s3_config_label (const struct s3_config *c);

/* Go's durations as BuildKit takes them: "24h", "1h30m", "90s", "0". */
int s3_parse_duration (const char *s, int64_t *secs);

/* S3's URI encoding of an object key (RFC 3986 unreserved characters kept,
   '/' kept when `keep_slash`, the rest %XX), as SigV4 signs it. */
char *s3_uri_escape (const char *s, bool keep_slash);
char *s3_blob_key (const struct s3_config *c, const char *digest);
char *s3_manifest_key (const struct s3_config *c, const char *name, const char *ref);
/* The URL of `key` (NULL: the bucket), path-style or virtual-hosted. */
char *s3_object_url (const struct s3_config *c, const char *key);

/* How a blob of `size` bytes goes up: false for one PUT, else true with
   the part size and count (every part but the last of part_size). */
struct s3_part_plan
{
  uint64_t part_size;
  uint32_t parts;
};
bool s3_multipart_plan (uint64_t size, struct s3_part_plan *plan);

typedef struct s3_client s3_client;

/* Resolve the credentials and check the bucket answers (a one-key
   ListObjectsV2 under the prefix): NULL with *err (400 without
   credentials, 502 naming the bucket and S3's error code otherwise). */
s3_client *s3_client_new (const struct s3_config *cfg, ps_error **err);
void s3_client_free (s3_client *c);

/* The store operations of store_client.h, with the same returns. */
int s3_blob_stat (s3_client *c, const char *digest, uint64_t *size, ps_error **err);
int s3_blob_put_file (s3_client *c, const char *digest, const char *path, uint64_t *uploaded, ps_error **err);
/* The upload_parallelism attr: also how many blobs of one image go up at
   once (s3_blob_put_file may be called from that many threads). */
unsigned s3_upload_parallelism (const s3_client *c);
int s3_blob_get_file (s3_client *c, const char *digest, const char *path, ps_error **err);
int s3_manifest_put (s3_client *c, const char *name, const char *ref, const char *mtype, const void *body, size_t len,
                     char **digest, ps_error **err);
int s3_manifest_get (s3_client *c, const char *name, const char *ref, char **body, size_t *len, char **mtype,
                     ps_error **err);
int s3_tags (s3_client *c, const char *name, char **json, ps_error **err);

#endif
