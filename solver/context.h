/* context.h — build context intake: a tar stream from an untrusted client
 * unpacked into a directory podsolved owns, and the ignore file applied. */
#ifndef SOLVER_CONTEXT_H
#define SOLVER_CONTEXT_H

#include "common/ps.h"
#include "common/dockerignore.h"
#include "solver/solve_source.h"

#include <archive.h>
#include <archive_entry.h>

struct ps_context_limits
{
  uint64_t max_bytes;  /* sum of regular-file sizes; over it: status 413 */
  size_t max_entries;  /* number of tar entries; over it: status 413 */
};

struct ps_context_stats
{
  uint64_t bytes;   /* regular-file bytes written */
  size_t entries;   /* entries created */
};

/* Unpack the tar stream read from `fd` into `dest`, an existing empty
 * directory.  Compression (none, gzip, bzip2, xz, zstd) is detected from
 * the bytes.  Every entry is checked before anything is written:
 *   - absolute names, names with a ".." element, and names longer than
 *     PS_MAX_CONTEXT_PATH are rejected (400);
 *   - no entry may be written through a symlink, so a symlink inside the
 *     context pointing outside it cannot be used to escape (400);
 *   - hard links must name an earlier entry of the same archive (400);
 *   - device nodes, fifos and sockets are rejected (400);
 *   - sizes and entry counts are bounded by `lim` (413).
 * Symlinks themselves are kept as they are (a COPY of a dangling link is
 * the builder's business), but never followed while extracting.
 * Owners are not restored (files belong to podsolved); modes and mtimes are.
 * A body that is not a tar gives 400 "build context is not a tar archive".
 * An empty body is an empty context.  On failure `dest` may hold a partial
 * tree; the caller removes the whole build directory. */
int context_extract_fd (int fd, const char *dest, const struct ps_context_limits *lim,
                           struct ps_context_stats *stats, ps_error **err);

/* context_extract_fd of the file `tar` into `dest` (made when missing). */
int context_extract_file (const char *tar, const char *dest, const struct ps_context_limits *lim,
                          struct ps_context_stats *stats, ps_error **err);

/* Unpack the sources whose tar is still stored (all but `except`, which
   may be NULL) into their dirs, the tars removed (their `tar` is left
   set: these are the caller's).  0, or -1 with the extraction's error,
   naming the part. */
int context_unpack_sources (const struct solve_source *src, size_t n, const struct solve_source *except,
                          uint64_t max_context_bytes, ps_error **err);

/* Called by context_tar_walk for each entry with its clean relative name;
   `in` is on the entry, its data unread.  A negative return stops the walk. */
typedef int (*context_tar_entry_fn) (void *ud, const char *name, struct archive *in, struct archive_entry *e);

/* Read the tar on `fd` as context_extract_fd would, writing nothing, and
   call `fn` for each entry it would create (the root entry is skipped).
   0 when the whole tar was read and every entry is one the extraction
   takes as it is; -1 (no message) for anything else: a read error, a name
   it refuses, a hard link, a device, an entry below a symlink or a file,
   a name given twice, a limit passed.  Such a tar is left to
   context_extract_fd, which says what is wrong with it. */
int context_tar_walk (int fd, const struct ps_context_limits *lim, context_tar_entry_fn fn, void *ud);

/* Remove from `dir` every path `ig` excludes, except the paths in `keep`
 * (the Dockerfile and the ignore file itself, which the builder needs).
 * Does not follow symlinks. Returns the number of entries removed, or -1. */
long context_prune (const char *dir, const ps_ignore *ig, const char *const *keep, size_t nkeep,
                       ps_error **err);

/* Resolve `rel` inside `dir` without leaving it, even through symlinks:
   1 when it names a regular file, 0 when absent, -1 (400) when the path
   leads outside `dir`. */
int context_file (const char *dir, const char *rel, ps_error **err);

/* Apply the build's ignore rules to the unpacked context `dir`: the
   `excludes` list when given, else the first of <dockerfile>.dockerignore,
   .containerignore and .dockerignore that exists.  The Dockerfile and the
   ignore file itself are kept.  `dockerfile` is relative to `dir` or NULL. */
int context_apply_ignore (const char *dir, const char *dockerfile, const ps_strv *excludes, ps_error **err);

#endif
