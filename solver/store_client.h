/* store_client.h — podsolve as a client of a store (the store protocol v1,
 * api-docs/store-protocol.md): blobs by digest, manifests by name and
 * reference, over a unix socket or HTTPS, with libcurl.
 *
 * The image exporter `type=store` goes through here: the image (or a
 * multi-platform list) is written by buildah as an OCI layout in the job's
 * directory, then every blob it names is uploaded (skipped when the store
 * has it; resumable in chunks when large), then the manifests by digest,
 * then the tags, last of all, so that a failure leaves no tag pointing at
 * a partial image.
 *
 * Two backends sit behind these calls: the store protocol over HTTP (here)
 * and S3 (store_s3.c), chosen by store_config.s3, so the exporter and the
 * cache registry (store_registry.h) work the same over either.
 *
 * Nothing here logs or reports the token: errors name the endpoint, the
 * request and the store's own message. */
#ifndef SOLVER_STORE_CLIENT_H
#define SOLVER_STORE_CLIENT_H

#include "common/ps.h"
#include "solver/store_s3.h"

struct store_config
{
  const char *endpoint; /* unix:///path.sock, https://host[:port][/prefix], http://127.0.0.1:port */
  const char *token;    /* bearer token, or NULL ($PODSOLVE_STORE_TOKEN is tried then) */
  const char *tls_ca;   /* PEM files for https://: the CA to trust, the client certificate and key */
  const char *tls_cert;
  const char *tls_key;
  /* Or an S3 bucket (`type=s3`, solver/store_s3.h): every call below then
     goes to the bucket, with the object layout of api-docs/s3.md, and the
     fields above are unused. */
  const struct s3_config *s3;
};

typedef struct store_client store_client;

/* Check the endpoint and ask the store what it speaks (GET /v1/): NULL
   with *err (400 for a bad endpoint, 502 for a store that cannot be
   reached or does not speak v1). */
store_client *store_client_new (const struct store_config *cfg, ps_error **err);
void store_client_free (store_client *c);

/* HEAD /v1/blobs/{digest}: 1 present, 0 absent, -1 with *err. */
int store_blob_exists (store_client *c, const char *digest, ps_error **err);
/* The same, with its size in *size when present. */
int store_blob_stat (store_client *c, const char *digest, uint64_t *size, ps_error **err);

/* Upload the file at `path`, which must hash to `digest` (the store checks
   it), unless the store has it already; in chunks of the store's
   upload_chunk_bytes through a resumable upload when it is larger and the
   store offers them, resuming after a failed chunk.  *uploaded (may be
   NULL) gets the bytes sent. */
int store_blob_put_file (store_client *c, const char *digest, const char *path, uint64_t *uploaded, ps_error **err);

/* GET /v1/blobs/{digest} into a new file at `path` (0600), checked
   against the digest: 1 written, 0 the store has no such blob (no file
   left), -1 with *err (no file left either). */
int store_blob_get_file (store_client *c, const char *digest, const char *path, ps_error **err);

/* PUT /v1/names/{name}/manifests/{ref} with media type `mtype`; *digest
   (may be NULL) gets the store's Store-Content-Digest. */
int store_manifest_put (store_client *c, const char *name, const char *ref, const char *mtype, const void *body,
                        size_t len, char **digest, ps_error **err);

/* GET a manifest: 1 with *body, *len, *mtype (malloc'd; mtype may be
   NULL), 0 when there is none, -1 with *err.  The bytes are checked
   against the digest the store names. */
int store_manifest_get (store_client *c, const char *name, const char *ref, char **body, size_t *len, char **mtype,
                        ps_error **err);

/* Upload the OCI image layout at `layout_dir` (index.json's first
   manifest: an image manifest or an index of several) and tag it `tags`
   under `name`.  *digest (may be NULL) gets the top manifest's digest;
   *bytes (may be NULL) the blob bytes sent. */
int store_push_layout (store_client *c, const char *layout_dir, const char *name, const ps_strv *tags, char **digest,
                       uint64_t *bytes, ps_error **err);

/* GET /v1/names/{name}/tags: 1 with *json (malloc'd, {"name","tags"}),
   0 when the store has no such name, -1 with *err. */
int store_tags (store_client *c, const char *name, char **json, ps_error **err);

/* "app:1" -> name "app", tag "1"; "app" -> "latest"; a digest reference
   ("app@sha256:...") is refused.  400 naming `field` for a bad name. */
int store_split_name (const char *ref, char **name, char **tag, const char *field, ps_error **err);

#endif
