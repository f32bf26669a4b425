/* ps.h — podsolve's small shared helpers: the error convention, cleanup
 * attributes, allocation that aborts on OOM, and a growable buffer.
 *
 * Error convention (as crun's): a function that can fail takes
 * `ps_error **err`, returns < 0 (or NULL) on failure and then sets *err to
 * an allocated error; on success it leaves *err alone.  Callers add context
 * with ps_error_wrap() so the message reads like a path through the code:
 * "build: extract context: entry ../x escapes the context".
 */
#ifndef PS_H
#define PS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define UNLIKELY(x) __builtin_expect (!!(x), 0)
#define LIKELY(x) __builtin_expect (!!(x), 1)
#define ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))
#define PS_PRINTF(a, b) __attribute__ ((format (printf, a, b)))

typedef struct ps_error
{
  int status; /* HTTP status the error maps to (400, 404, 413, 500, ...) */
  char *msg;
} ps_error;

/* Set *err to a new error; returns -1 so callers can `return ps_error_set (...)`. */
int ps_error_set (ps_error **err, int status, const char *fmt, ...) PS_PRINTF (3, 4);
/* Like ps_error_set, appending ": strerror(errno_value)". */
int ps_error_set_errno (ps_error **err, int status, int errno_value, const char *fmt, ...)
    PS_PRINTF (4, 5);
/* The HTTP status for a failed write of ours: 507 Insufficient Storage
   (RFC 4918) when the disk or a quota is full (ENOSPC, EDQUOT), which the
   client can do nothing about but wait; else 500. */
int ps_write_errno_status (int errno_value);
/* Prefix the message of *err with "<context>: "; returns -1. */
int ps_error_wrap (ps_error **err, const char *fmt, ...) PS_PRINTF (2, 3);
void ps_error_free (ps_error *err);

/* Allocation: abort on OOM, so ordinary code never tests the result. */
void *xmalloc (size_t size);
void *xcalloc (size_t n, size_t size);
void *xrealloc (void *p, size_t size);
char *xstrdup (const char *s);
char *xstrndup (const char *s, size_t n); /* both take NULL as "" */
char *xasprintf (const char *fmt, ...) PS_PRINTF (1, 2);

/* Cleanup attributes. */
void ps_freep (void *p);
void ps_closep (int *fd);
void ps_fclosep (void *fp);
void ps_error_freep (ps_error **err);
void ps_strvfreep (char ***v);
#define cleanup_free __attribute__ ((cleanup (ps_freep)))
#define cleanup_close __attribute__ ((cleanup (ps_closep)))
#define cleanup_file __attribute__ ((cleanup (ps_fclosep)))
#define cleanup_error __attribute__ ((cleanup (ps_error_freep)))
#define cleanup_strv __attribute__ ((cleanup (ps_strvfreep)))

/* Take ownership out of a cleanup variable. */
#define steal_pointer(pp) ps_steal_pointer ((void **) (pp))
static inline void *
ps_steal_pointer (void **pp)
{
  void *p = *pp;
  *pp = NULL;
  return p;
}

/* A growable byte buffer, always NUL-terminated. */
typedef struct ps_buf
{
  char *data;
  size_t len;
  size_t cap;
} ps_buf;

void ps_buf_append (ps_buf *b, const void *data, size_t len);
void ps_buf_puts (ps_buf *b, const char *s);
void ps_buf_printf (ps_buf *b, const char *fmt, ...) PS_PRINTF (2, 3);
void ps_buf_reset (ps_buf *b);
void ps_buf_free (ps_buf *b);
char *ps_buf_steal (ps_buf *b);

/* NULL-terminated string vectors (argv arrays and the like). */
typedef struct ps_strv
{
  char **v;
  size_t n;
  size_t cap;
} ps_strv;

void ps_strv_push (ps_strv *s, const char *str);
void ps_strv_pushf (ps_strv *s, const char *fmt, ...) PS_PRINTF (2, 3);
/* "k=v,k2=v2" (the CSV of docker's --cache-from, --output, --secret...)
   appended to `out` as key, value, key, value...; items without '=' are
   left out. */
void ps_csv_pairs (const char *csv, ps_strv *out);
/* The value of `key` in such a list (borrowed), or NULL. */
const char *ps_pairs_get (const ps_strv *pairs, const char *key);
void ps_strv_free (ps_strv *s);
void ps_strv_free_raw (char **v);

/* Key/value pairs (query parameters, in order, repeats included). */
struct ps_kv
{
  const char *key;
  const char *value;
};

struct ps_kv_list
{
  struct ps_kv *items;
  size_t n;
};
void ps_kv_list_free (struct ps_kv_list *l);

/* Time. */
int64_t ps_now_ns (void);       /* CLOCK_REALTIME, nanoseconds */
int64_t ps_monotonic_ns (void); /* CLOCK_MONOTONIC, nanoseconds */
void ps_format_rfc3339 (int64_t ns, char *out, size_t outlen);

/* Deadlines.  pthread_cond_timedwait and pthread_timedjoin_np want an
   absolute time on the clock the condition waits on (CLOCK_REALTIME unless
   its condattr says CLOCK_MONOTONIC); a plain int64_t deadline is a
   ps_monotonic_ns () value. */
void ps_timespec_add_ms (struct timespec *ts, int64_t ms); /* ms >= 0 */
struct timespec ps_deadline_after_ms (clockid_t clock, int64_t ms);
int64_t ps_deadline_ns_after_ms (int64_t ms);   /* ps_monotonic_ns () + ms */
bool ps_deadline_passed (int64_t deadline_ns);  /* now is past it */

/* Digests and encodings (OpenSSL). */
void ps_sha256_hex (const void *data, size_t len, char out[65]);
char *ps_base64_encode (const void *data, size_t len);
/* Accepts standard and URL-safe alphabets, with or without padding. */
int ps_base64_decode (const char *in, unsigned char **out, size_t *outlen);
void ps_random_hex (char *out, size_t nbytes); /* writes 2*nbytes hex + NUL */

/* Files and paths. */
int ps_mkdir_p (const char *path, mode_t mode, ps_error **err);
int ps_rm_rf (const char *path, ps_error **err);
/* write(2) until done (EINTR retried); -1 with errno on failure. */
int ps_write_all (int fd, const void *data, size_t len);
/* send(2) with MSG_NOSIGNAL until done (EINTR retried): a peer that hung
   up is -1 here, not a SIGPIPE. */
int ps_send_all (int fd, const void *data, size_t len);
/* read(2) until `n` bytes or end of file (EINTR retried): the count, or -1. */
ssize_t ps_read_full (int fd, void *buf, size_t n);
/* Remove `name` of the directory parent_fd and everything below it,
   following no symlink (nothing to do when it is absent). */
int ps_rm_rf_at (int parent_fd, const char *name, ps_error **err);
/* Append to *names the entries of the directory dirfd (all but "." and
   ".."), read through a descriptor of its own (dirfd's offset is left
   alone), sorted byte-wise (strcmp, as Go's sort.Strings) when `sorted`.
   Returns 0, or -1 with errno set and *failed_step naming the call that
   failed ("open", "opendir" or "readdir") so callers keep their wording;
   names read before a failure stay in *names. */
int ps_list_dir_at (int dirfd, bool sorted, ps_strv *names, const char **failed_step);
int ps_write_file (const char *path, const void *data, size_t len, mode_t mode, ps_error **err);
int ps_read_file (const char *path, size_t max, char **out, size_t *outlen, ps_error **err);
/* The whole of the regular file open on fd, at most `max` bytes; errors
   name it `what` (a file that is not regular or is too large: 400).
   *text is NUL-terminated ("" when empty). */
int ps_read_regular_fd (int fd, const char *what, size_t max, char **text, size_t *len, ps_error **err);
/* True when `rel` is a relative path that stays inside its root: no leading
   '/', no ".." component. */
bool ps_path_is_contained (const char *rel);

bool ps_str_has_prefix (const char *s, const char *prefix);
bool ps_str_has_suffix (const char *s, const char *suffix);

#endif
