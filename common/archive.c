/* archive.c — libarchive helpers shared by the daemon and the CLI. */
#define _GNU_SOURCE
#include "common/archive.h"

void
ps_archive_freep (struct archive **a)
{
  if (*a != NULL)
    archive_free (*a);
}

int
ps_archive_copy_data (struct archive *in, struct archive *out, bool to_disk, ps_archive_block_fn on_block,
                      void *ud)
{
  for (;;)
    {
      const void *buf;
      size_t size;
      la_int64_t offset;
      int r = archive_read_data_block (in, &buf, &size, &offset);
      if (r == ARCHIVE_EOF)
        return PS_ARCHIVE_COPY_DONE;
      if (r < ARCHIVE_WARN)
        return PS_ARCHIVE_COPY_READ_ERROR;
      if (on_block != NULL && on_block (ud, size) < 0)
        return PS_ARCHIVE_COPY_REFUSED;
      if (size == 0)
        continue;
      la_ssize_t w = to_disk ? archive_write_data_block (out, buf, size, offset) : archive_write_data (out, buf, size);
      if (w < ARCHIVE_WARN)
        return PS_ARCHIVE_COPY_WRITE_ERROR;
    }
}
