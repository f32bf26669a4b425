/* extract.c — unpacking a local output (a tar of the image filesystem)
 * into a directory on this machine, without letting any entry land
 * outside it (see cli_extract_tar in outputs.h): the library's safe
 * extractor, ps_archive_extract_fd in common/archive.c, does the work. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "client/cli.h"
#include "client/outputs.h"
#include "common/archive.h"

int
cli_extract_tar (int fd, const char *dest, ps_error **err)
{
  if (ps_mkdir_p (dest, 0755, err) < 0)
    return -1;
  cleanup_close int dfd = open (dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return ps_error_set_errno (err, 0, errno, "enter %s", dest);
  const struct ps_extract_opts o = {
    .label = "the output tar",
    .status = 0,
    .owner = geteuid () == 0,
    .interrupted = &cli_interrupted,
  };
  if (ps_archive_extract_fd (fd, dest, &o, err) < 0)
    return ps_error_wrap (err, "extract into %s", dest);
  return 0;
}
