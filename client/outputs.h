/* outputs.h — `--output` specs: the exporters they become in the
 * SolveRequest, and the download of the outputs the daemon kept for them.
 *
 * The CLI never sends a server-side "dest": a tar, local, oci or docker
 * output is kept by the daemon and fetched after the result line from
 * GET /solve/{ref}/outputs/{n}, found in GET /solve/{ref} by the index of
 * its exporter in the request. */
#ifndef CLIENT_OUTPUTS_H
#define CLIENT_OUTPUTS_H

#include <cjson/cJSON.h>

#include "client/http.h"
#include "common/ps.h"

struct cli_output
{
  char *spec;      /* as typed, for messages */
  char *type;      /* image, oci, docker, tar, local, cacheonly, store, s3 */
  char *dest;      /* client-side file or directory; "-" = stdout */
  char *name;      /* image name(s), comma-separated */
  char *push;      /* image: push after the build ("true"/"false") */
  char *endpoint;  /* store: unix:///PATH or https://HOST (api-docs/store-protocol.md) */
  char *token;     /* store: bearer token (else the daemon's $PODSOLVE_STORE_TOKEN) */
  ps_strv s3;      /* s3: BuildKit's attrs (bucket, region, ...) as key, value, key, value */
  size_t exporter; /* index of its exporter in the request */
};

/* "type=local,dest=out", "type=tar,dest=-", "type=oci,dest=img.tar,name=x",
   "type=image,name=a,b,push=true", "type=store,endpoint=unix:///s.sock,name=app:1",
   "type=s3,bucket=b,region=r,endpoint_url=http://h:9000,name=app:1"
   (a bare word after name= continues the
   name list), or a bare path: "DIR" (local) or "-" (a tar on stdout). */
int cli_output_parse (const char *spec, struct cli_output *o, ps_error **err);
void cli_output_free (struct cli_output *o);

/* True for the outputs the CLI downloads (tar, local, oci, docker). */
bool cli_output_downloads (const struct cli_output *o);

/* The exporter object {"type":..., "attrs":{...}} for the request. */
cJSON *cli_output_exporter (const struct cli_output *o);

/* After a successful solve `ref`: fetch and write every downloaded output. */
int cli_outputs_fetch (cli_http *h, const char *ref, const struct cli_output *outs, size_t n, ps_error **err);

/* Unpack the tar read from `fd` into the directory `dest` (created when
   missing), refusing entries that would land outside it: absolute names,
   ".." elements, links or writes through symlinks.  Owners are restored
   only when running as root; device nodes, fifos and sockets are skipped. */
int cli_extract_tar (int fd, const char *dest, ps_error **err);

#endif
