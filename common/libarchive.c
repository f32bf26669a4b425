/* libarchive.c — libarchive, loaded on first use (common/dynlib.h).
 *
 * podsolved links no libarchive: it would map libarchive and what it
 * brings (libxml2, ICU, libstdc++, lzma, lz4, bzip2, acl; about 2 MB of
 * resident pages) into a daemon that only needs them once a build context
 * or a tar arrives.  Instead this file defines each libarchive function
 * the project calls, with libarchive's own prototype (<archive.h> checks
 * every one), as a call through a pointer dlsym gave.  The first call
 * loads the library; callers with an error path call ps_libarchive_load
 * first, so a missing library fails that request, not the process.
 *
 * A function of libarchive used anywhere in the project (tests included)
 * must be listed here: the link fails otherwise. */
#define _GNU_SOURCE
#include "common/archive.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/dynlib.h"

/* F (return type, name, parameters, arguments); V for void functions; X
   for archive_set_error, the one variadic function, written out below. */
#define PS_LIBARCHIVE_FUNCTIONS(F, V, X) \
  V (archive_entry_copy_hardlink, (struct archive_entry *a, const char *b), (a, b)) \
  V (archive_entry_copy_pathname, (struct archive_entry *a, const char *b), (a, b)) \
  V (archive_entry_copy_symlink, (struct archive_entry *a, const char *b), (a, b)) \
  F (mode_t, archive_entry_filetype, (struct archive_entry *a), (a)) \
  V (archive_entry_free, (struct archive_entry *a), (a)) \
  F (const char *, archive_entry_hardlink, (struct archive_entry *a), (a)) \
  F (const char *, archive_entry_hardlink_utf8, (struct archive_entry *a), (a)) \
  F (struct archive_entry *, archive_entry_new, (void), ()) \
  F (const char *, archive_entry_pathname, (struct archive_entry *a), (a)) \
  F (const char *, archive_entry_pathname_utf8, (struct archive_entry *a), (a)) \
  F (dev_t, archive_entry_rdev, (struct archive_entry *a), (a)) \
  F (time_t, archive_entry_mtime, (struct archive_entry *a), (a)) \
  F (long, archive_entry_mtime_nsec, (struct archive_entry *a), (a)) \
  V (archive_entry_xattr_clear, (struct archive_entry *a), (a)) \
  V (archive_entry_xattr_add_entry, (struct archive_entry *a, const char *b, const void *c, size_t d), (a, b, c, d)) \
  F (int, archive_entry_xattr_reset, (struct archive_entry *a), (a)) \
  F (int, archive_entry_xattr_next, (struct archive_entry *a, const char **b, const void **c, size_t *d), (a, b, c, d)) \
  F (mode_t, archive_entry_perm, (struct archive_entry *a), (a)) \
  V (archive_entry_set_filetype, (struct archive_entry *a, unsigned int b), (a, b)) \
  V (archive_entry_set_gid, (struct archive_entry *a, la_int64_t b), (a, b)) \
  V (archive_entry_set_hardlink, (struct archive_entry *a, const char *b), (a, b)) \
  V (archive_entry_set_mtime, (struct archive_entry *a, time_t b, long c), (a, b, c)) \
  V (archive_entry_set_pathname, (struct archive_entry *a, const char *b), (a, b)) \
  V (archive_entry_set_perm, (struct archive_entry *a, mode_t b), (a, b)) \
  V (archive_entry_set_rdev, (struct archive_entry *a, dev_t b), (a, b)) \
  V (archive_entry_set_size, (struct archive_entry *a, la_int64_t b), (a, b)) \
  V (archive_entry_set_symlink, (struct archive_entry *a, const char *b), (a, b)) \
  V (archive_entry_set_uid, (struct archive_entry *a, la_int64_t b), (a, b)) \
  F (la_int64_t, archive_entry_size, (struct archive_entry *a), (a)) \
  F (int, archive_entry_size_is_set, (struct archive_entry *a), (a)) \
  F (const char *, archive_entry_symlink, (struct archive_entry *a), (a)) \
  F (const char *, archive_entry_symlink_utf8, (struct archive_entry *a), (a)) \
  F (int, archive_errno, (struct archive *a), (a)) \
  F (const char *, archive_error_string, (struct archive *a), (a)) \
  F (la_int64_t, archive_filter_bytes, (struct archive *a, int b), (a, b)) \
  F (int, archive_free, (struct archive *a), (a)) \
  F (int, archive_read_close, (struct archive *a), (a)) \
  F (la_ssize_t, archive_read_data, (struct archive *a, void *b, size_t c), (a, b, c)) \
  F (int, archive_read_data_block, (struct archive *a, const void **b, size_t *c, la_int64_t *d), (a, b, c, d)) \
  F (int, archive_read_disk_descend, (struct archive *a), (a)) \
  F (struct archive *, archive_read_disk_new, (void), ()) \
  F (int, archive_read_disk_open, (struct archive *a, const char *b), (a, b)) \
  F (int, archive_read_disk_set_standard_lookup, (struct archive *a), (a)) \
  F (int, archive_read_disk_set_symlink_physical, (struct archive *a), (a)) \
  F (int, archive_read_free, (struct archive *a), (a)) \
  F (struct archive *, archive_read_new, (void), ()) \
  F (int, archive_read_next_header, (struct archive *a, struct archive_entry **b), (a, b)) \
  F (int, archive_read_next_header2, (struct archive *a, struct archive_entry *b), (a, b)) \
  F (int, archive_read_open, (struct archive *a, void *b, archive_open_callback *c, archive_read_callback *d, archive_close_callback *e), (a, b, c, d, e)) \
  F (int, archive_read_open_fd, (struct archive *a, int b, size_t c), (a, b, c)) \
  F (int, archive_read_open_filename, (struct archive *a, const char *b, size_t c), (a, b, c)) \
  F (int, archive_read_open_memory, (struct archive *a, const void *b, size_t c), (a, b, c)) \
  F (int, archive_read_support_filter_all, (struct archive *a), (a)) \
  F (int, archive_read_support_filter_bzip2, (struct archive *a), (a)) \
  F (int, archive_read_support_filter_gzip, (struct archive *a), (a)) \
  F (int, archive_read_support_filter_xz, (struct archive *a), (a)) \
  F (int, archive_read_support_filter_zstd, (struct archive *a), (a)) \
  F (int, archive_read_support_format_empty, (struct archive *a), (a)) \
  F (int, archive_read_support_format_gnutar, (struct archive *a), (a)) \
  F (int, archive_read_support_format_tar, (struct archive *a), (a)) \
  F (int, archive_write_add_filter, (struct archive *a, int b), (a, b)) \
  F (int, archive_write_add_filter_gzip, (struct archive *a), (a)) \
  F (int, archive_write_add_filter_none, (struct archive *a), (a)) \
  F (int, archive_write_close, (struct archive *a), (a)) \
  F (la_ssize_t, archive_write_data, (struct archive *a, const void *b, size_t c), (a, b, c)) \
  F (la_ssize_t, archive_write_data_block, (struct archive *a, const void *b, size_t c, la_int64_t d), (a, b, c, d)) \
  F (struct archive *, archive_write_disk_new, (void), ()) \
  F (int, archive_write_disk_set_options, (struct archive *a, int b), (a, b)) \
  F (int, archive_write_disk_set_standard_lookup, (struct archive *a), (a)) \
  F (int, archive_write_finish_entry, (struct archive *a), (a)) \
  F (int, archive_write_free, (struct archive *a), (a)) \
  F (int, archive_write_header, (struct archive *a, struct archive_entry *b), (a, b)) \
  F (struct archive *, archive_write_new, (void), ()) \
  F (int, archive_write_open, (struct archive *a, void *b, archive_open_callback *c, archive_write_callback *d, archive_close_callback *e), (a, b, c, d, e)) \
  F (int, archive_write_open_fd, (struct archive *a, int b), (a, b)) \
  F (int, archive_write_open_filename, (struct archive *a, const char *b), (a, b)) \
  F (int, archive_write_open_memory, (struct archive *a, void *b, size_t c, size_t *d), (a, b, c, d)) \
  F (int, archive_write_set_bytes_in_last_block, (struct archive *a, int b), (a, b)) \
  F (int, archive_write_set_format_pax_restricted, (struct archive *a), (a)) \
  F (int, archive_write_set_format_raw, (struct archive *a), (a)) \
  X (archive_set_error)

enum
{
#define ENUM_F(ret, name, params, args) LA_##name,
#define ENUM_V(name, params, args) LA_##name,
#define ENUM_X(name) LA_##name,
  PS_LIBARCHIVE_FUNCTIONS (ENUM_F, ENUM_V, ENUM_X) LA_COUNT
};

static const char *const la_names[LA_COUNT] = {
#define NAME_F(ret, name, params, args) [LA_##name] = #name,
#define NAME_V(name, params, args) [LA_##name] = #name,
#define NAME_X(name) [LA_##name] = #name,
  PS_LIBARCHIVE_FUNCTIONS (NAME_F, NAME_V, NAME_X)
};

static void *la_slots[LA_COUNT];

static struct ps_dynlib libarchive = {
  .soname = "libarchive.so.13",
  .package = "libarchive13",
  .names = la_names,
  .slots = la_slots,
  .n = LA_COUNT,
  .lock = PTHREAD_MUTEX_INITIALIZER,
};

int
ps_libarchive_load (ps_error **err)
{
  return ps_dynlib_load (&libarchive, err);
}

/* For a call with nowhere to report the error: callers that have one
   called ps_libarchive_load before, so this is reached only by code that
   forgot to, and stops the process with the reason. */
static void
require (void)
{
  if (ps_dynlib_loaded (&libarchive))
    return;
  cleanup_error ps_error *err = NULL;
  if (ps_libarchive_load (&err) < 0)
    {
      fprintf (stderr, "%s\n", err->msg);
      abort ();
    }
}

#define LA(name) (require (), (__typeof__ (&name)) la_slots[LA_##name])

#define FORWARD_F(ret, name, params, args) \
  ret name params { return LA (name) args; }
#define FORWARD_V(name, params, args) \
  void name params { LA (name) args; }
#define FORWARD_X(name)
PS_LIBARCHIVE_FUNCTIONS (FORWARD_F, FORWARD_V, FORWARD_X)

void
archive_set_error (struct archive *a, int code, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  LA (archive_set_error) (a, code, "%s", msg);
}
