/* context_tar.h — the build context as the tar the daemon unpacks: the
 * context directory walked in name order, minus what the ignore file
 * excludes (the daemon's own matcher, common/dockerignore.h), written to a
 * descriptor so a large context is never held in memory. */
#ifndef CLIENT_CONTEXT_TAR_H
#define CLIENT_CONTEXT_TAR_H

#include <stdint.h>

#include "common/ps.h"
#include "common/dockerignore.h"

struct cli_context_stats
{
  uint64_t bytes; /* regular-file bytes archived */
  size_t entries; /* entries archived */
  size_t skipped; /* sockets, fifos, devices: the daemon refuses them */
};

/* The ignore rules for a build, chosen as the daemon chooses them: the
   first of `<dockerfile>.dockerignore`, CONTEXT/.containerignore and
   CONTEXT/.dockerignore that exists.  `dockerfile` is the Dockerfile's
   path on this machine (NULL when read from stdin); `dockerfile_rel` its
   name inside the context, NULL when it is outside.  *used_rel gets the
   name of the ignore file inside the context, to be kept in the tar (NULL
   when the file is outside the context or there is none).  Returns NULL
   with no error set when there is no ignore file. */
ps_ignore *cli_context_load_ignore (const char *context_dir, const char *dockerfile, const char *dockerfile_rel,
                                    char **used_rel, ps_error **err);

/* Write `context_dir` as an uncompressed tar to `fd`.  Paths excluded by
   `ig` (may be NULL) are left out, except the relative paths in `keep`
   (the Dockerfile and the ignore file, which the daemon needs: Docker's
   CLI sends them even when the ignore file names them).  Symlinks are
   archived as links, never followed; owners are written as 0:0 as Docker's
   CLI does; sockets, fifos and devices are skipped and counted. */
int cli_context_tar (const char *context_dir, const ps_ignore *ig, const char *const *keep, size_t n_keep, int fd,
                     struct cli_context_stats *stats, ps_error **err);

/* A tar holding one regular file, read from `src_fd`, named `name`. */
int cli_context_tar_file (int src_fd, const char *name, int fd, ps_error **err);

/* A read-write temporary file under $TMPDIR (or /tmp), already unlinked so
   nothing is left behind whatever happens to this process. */
int cli_tmpfile (ps_error **err);

#endif
