/* archive.h — libarchive helpers shared by the daemon and the CLI: a
 * cleanup attribute for archive handles, the SECURE_* extraction flags
 * every disk writer sets, the loop that copies one entry's data, and a
 * safe extractor of a tar into a directory. */
#ifndef COMMON_ARCHIVE_H
#define COMMON_ARCHIVE_H

#include <archive.h>
#include <archive_entry.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/ps.h"

/* Loads libarchive, which the programs do not link but open on first use
   (common/libarchive.c): 0, or -1 with *err naming the library and the
   package to install.  Call it before the first archive_* call of any
   function that can report an error; a call without it loads the library
   too, but stops the process if it cannot. */
int ps_libarchive_load (ps_error **err);

/* archive_free () on scope exit (a read, write or disk handle; NULL is
   fine).  Does not close it first: call archive_*_close () where its
   result matters. */
void ps_archive_freep (struct archive **a);
#define cleanup_archive __attribute__ ((cleanup (ps_archive_freep)))

/* The checks every archive_write_disk of untrusted entries sets: no ".."
   element, and nothing written through a symlink (one the archive made
   earlier, or one already on disk). */
#define PS_ARCHIVE_EXTRACT_SECURE (ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS)

/* What ps_archive_copy_data stopped on. */
enum ps_archive_copy
{
  PS_ARCHIVE_COPY_DONE = 0,         /* all of the entry's data is written */
  PS_ARCHIVE_COPY_READ_ERROR = -1,  /* reading failed: archive_error_string (in) */
  PS_ARCHIVE_COPY_WRITE_ERROR = -2, /* writing failed: archive_error_string (out) */
  PS_ARCHIVE_COPY_REFUSED = -3,     /* on_block said no (and said why itself) */
};

/* Called with the size of each block read, before it is written; a
   negative return stops the copy with PS_ARCHIVE_COPY_REFUSED. */
typedef int (*ps_archive_block_fn) (void *ud, size_t size);

/* Copy the data of the entry `in` is on to `out`, block by block:
   archive_write_data_block (at the block's offset, keeping holes) when
   `out` is an archive_write_disk, archive_write_data otherwise.  Empty
   blocks are not written.  on_block may be NULL.  Returns an enum
   ps_archive_copy; the caller words the error. */
int ps_archive_copy_data (struct archive *in, struct archive *out, bool to_disk, ps_archive_block_fn on_block,
                          void *ud);

/* How ps_archive_extract_fd reports and what it restores. */
struct ps_extract_opts
{
  const char *label;                  /* names the tar in messages ("the output tar") */
  int status;                         /* the ps_error status of every failure */
  bool owner;                         /* restore owners (only root can) */
  volatile sig_atomic_t *interrupted; /* when set between entries: stop, "interrupted" */
};

/* Unpack the tar (any compression libarchive reads) on `fd` into the
   directory `dest`, which must exist, without letting any entry land
   outside it.  Every name is checked first (no absolute names, no ".."
   elements, hard link targets too: refused with "refusing tar entry ...");
   the root entry itself and devices, FIFOs and sockets are skipped.
   libarchive then checks again, plus what only the disk knows
   (PS_ARCHIVE_EXTRACT_SECURE on the resolved path of dest): nothing is
   written through a symlink, whether the tar made it earlier or it was
   already there.  Modes and times are restored, owners when o->owner.
   Never changes the working directory, so threads may use it; names past
   PATH_MAX make libarchive itself chdir, though. */
int ps_archive_extract_fd (int fd, const char *dest, const struct ps_extract_opts *o, ps_error **err);

#endif
