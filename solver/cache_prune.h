/* cache_prune.h — podsolve's build cache, and removing it
 * (POST /build/prune, POST /solve/prune).
 *
 * What the build cache is, with the type each entry has in a prune report:
 *
 *   llb.result          <state>/llb-results/<key>: the image an LLB vertex
 *                       produced (solver/llb/exec.c), or an LLB result with
 *                       an image config applied (solver/image_config.c)
 *   build.result        <state>/results/<key>.json: a whole session build
 *                       that can be reused (solver/dockerfile/result_cache.c)
 *   exec.cachemount     <state>/llb-cache-mounts/<hash>: an LLB cache mount
 *   exec.snapshot       <state>/llb-snapshots/<id>: an LLB exec's changes as
 *                       an overlay upper directory, an image only once one
 *                       is needed (solver/llb/snapshot.h)
 *   source.local        <state>/contexts/<hash>: a client's context as last
 *                       synced over its session (only pruned with `all`:
 *                       it is what makes the next transfer incremental)
 *   source.http         <state>/http-sources/<hash>.json: how an LLB http
 *                       source without checksum was last downloaded (ETag,
 *                       Last-Modified, digest), so the next solve asks the
 *                       server whether it changed (only pruned with `all`)
 *   export.layout       <state>/export-layouts/<image id>: the OCI layout an
 *                       image was exported as to a store or S3, for its next
 *                       export (solver/export_layout.h)
 *   image.intermediate  an untagged image whose layers are the start of
 *                       another image's: buildah's layer cache (--layers)
 *   image.dangling      any other untagged image (only pruned with `all`)
 *
 * Last use: a record's mtime, touched on every cache hit
 * (cache_record_touch); a directory's mtime, touched when a build uses
 * it; an image's creation time.  Size: a directory's allocated bytes; an
 * image's, the bytes of its layers that no other image uses (layers are
 * told apart by their chain of diff IDs, sizes taken from the stored
 * manifest).  An image that is tagged, or still named by a record that
 * is kept, is never removed: only its record goes.  What the LLB executor
 * keeps beside an image (<state>/llb-whiteouts/<id>) goes with the image.
 *
 * Builds and prune exclude each other through cache_lock.h: prune holds
 * the cache lock exclusively while it runs. */
#ifndef SOLVER_CACHE_PRUNE_H
#define SOLVER_CACHE_PRUNE_H

#include "common/ps.h"
#include "solver/cache_lock.h"

/* Under the state directory: one record per revalidatable http URL of an
   LLB http source (llb/remote.h). */
#define CACHE_HTTP_RECORDS "http-sources"
/* Under the state directory: the OCI layouts of exported images
   (solver/export_layout.h). */
#define CACHE_EXPORT_LAYOUTS "export-layouts"
/* Under the state directory: LLB execs' snapshots (solver/llb/snapshot.h). */
#define CACHE_LLB_SNAPSHOTS "llb-snapshots"

struct cache_prune_entry;

struct cache_prune_opts
{
  bool all;                /* also source.local, source.http and image.dangling */
  int64_t keep_duration_ns; /* filter until=: keep what was used this recently; 0 = no age limit */
  uint64_t max_used_bytes; /* keep-storage / max-used-space: remove oldest first until the cache is
                              at most this big; 0 = no size budget (remove every candidate) */
  uint64_t reserved_bytes; /* reserved-space: never prune the cache below this size */
  ps_strv ids;             /* filter id=: only entries whose id starts with one of these */
  ps_strv types;           /* filter type=: only entries of these types */
  /* Any other selection (gRPC's containerd-style filters): an entry is a
     candidate only when this says yes.  May be NULL. */
  bool (*select) (const struct cache_prune_entry *e, void *data);
  void *select_data;

  /* Polled while waiting for running builds; returning true abandons the
     prune (the client went away).  May be NULL. */
  bool (*give_up) (void *data);
  void *give_up_data;
  int64_t wait_ms;         /* longest wait for running builds before a 409 */
};

void cache_prune_opts_free (struct cache_prune_opts *o);

/* Docker's `filters` parameter (JSON: {"until":["24h"]} or the older
   {"until":{"24h":true}}) into `o`: until / unused-for (a Go duration),
   id, type.  Any other key is a 400 naming it. */
int cache_prune_parse_filters (const char *json, struct cache_prune_opts *o, ps_error **err);

/* A Go duration ("24h", "1h30m", "90s", "1.5h", "500ms") in nanoseconds. */
int cache_prune_parse_duration (const char *s, int64_t *ns, ps_error **err);

struct cache_prune_entry
{
  char *id;
  const char *type;       /* one of the type names above (static) */
  uint64_t size;          /* bytes freed by removing it (cache_usage: bytes it holds) */
  int64_t last_used_ns;
  int64_t created_ns;
};

/* What BuildKit calls a mutable record: one builds write into
   (exec.cachemount, source.local), as opposed to a finished result. */
bool cache_type_mutable (const char *type);
/* One line saying what an entry of `type` is, for listings. */
const char *cache_type_description (const char *type);

struct cache_prune_report
{
  struct cache_prune_entry *deleted; /* cache_usage: every entry listed (none deleted) */
  size_t n_deleted;
  uint64_t reclaimed;     /* sum of the sizes (cache_usage: of what is listed) */
};

void cache_prune_report_free (struct cache_prune_report *r);

/* Remove what `o` selects from the cache under `state_dir` and from
   storage, waiting (up to o->wait_ms) for running builds to end first. */
int cache_prune (const char *state_dir, const struct cache_prune_opts *o, struct cache_prune_report *report,
                 ps_error **err);

/* Every entry of the cache that a prune with `o` would consider (`all`
   taken as set, no size budget), sized as the budget counts it, oldest
   first; nothing is removed and no lock is taken (a listing while a build
   runs shows what is there now).  Free with cache_prune_report_free. */
int cache_usage (const char *state_dir, const struct cache_prune_opts *o, struct cache_prune_report *report,
                 ps_error **err);

/* ---- records: one file per cache key holding an image id ------------------ */

/* Mark a record (or a cache directory) as used now. */
void cache_record_touch (const char *path);

/* The image id recorded in `path` when that image is still in storage
   (the record is touched), else NULL. */
char *cache_record_read (const char *path);

/* Write `image_id` to `path` atomically; a failure only costs a re-run
   next time, so it is logged, not returned. */
void cache_record_write (const char *path, const char *image_id);

#endif
