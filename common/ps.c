/* ps.c — implementation of the shared helpers declared in ps.h. */
#define _GNU_SOURCE
#include "ps.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

/* ---- errors ---------------------------------------------------------- */

static int
error_setv (ps_error **err, int status, const char *suffix, const char *fmt, va_list ap)
{
  char *msg = NULL;
  if (vasprintf (&msg, fmt, ap) < 0)
    abort ();
  if (suffix != NULL)
    {
      char *full = xasprintf ("%s: %s", msg, suffix);
      free (msg);
      msg = full;
    }
  if (err == NULL)
    {
      free (msg);
      return -1;
    }
  if (*err != NULL)
    ps_error_free (*err);
  *err = xmalloc (sizeof (**err));
  (*err)->status = status;
  (*err)->msg = msg;
  return -1;
}

int
ps_error_set (ps_error **err, int status, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  error_setv (err, status, NULL, fmt, ap);
  va_end (ap);
  return -1;
}

int
ps_error_set_errno (ps_error **err, int status, int errno_value, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  error_setv (err, status, strerror (errno_value), fmt, ap);
  va_end (ap);
  return -1;
}

int
ps_write_errno_status (int errno_value)
{
  return errno_value == ENOSPC || errno_value == EDQUOT ? 507 : 500;
}

int
ps_error_wrap (ps_error **err, const char *fmt, ...)
{
  if (err == NULL || *err == NULL)
    return -1;
  char *ctx = NULL;
  va_list ap;
  va_start (ap, fmt);
  if (vasprintf (&ctx, fmt, ap) < 0)
    abort ();
  va_end (ap);
  char *msg = xasprintf ("%s: %s", ctx, (*err)->msg);
  free (ctx);
  free ((*err)->msg);
  (*err)->msg = msg;
  return -1;
}

void
ps_error_free (ps_error *err)
{
  if (err == NULL)
    return;
  free (err->msg);
  free (err);
}

/* ---- allocation ------------------------------------------------------- */

static void
oom (void)
{
  fputs ("podsolved: out of memory\n", stderr);
  abort ();
}

void *
xmalloc (size_t size)
{
  void *p = malloc (size ? size : 1);
  if (UNLIKELY (p == NULL))
    oom ();
  return p;
}

void *
xcalloc (size_t n, size_t size)
{
  void *p = calloc (n ? n : 1, size ? size : 1);
  if (UNLIKELY (p == NULL))
    oom ();
  return p;
}

void *
xrealloc (void *p, size_t size)
{
  p = realloc (p, size ? size : 1);
  if (UNLIKELY (p == NULL))
    oom ();
  return p;
}

char *
xstrdup (const char *s)
{
  char *p = strdup (s ? s : "");
  if (UNLIKELY (p == NULL))
    oom ();
  return p;
}

char *
xstrndup (const char *s, size_t n)
{
  /* NULL is "" as in xstrdup: an empty protobuf-c bytes field has no data
     (strndup's argument is declared nonnull, even for n == 0). */
  char *p = s ? strndup (s, n) : strdup ("");
  if (UNLIKELY (p == NULL))
    oom ();
  return p;
}

char *
xasprintf (const char *fmt, ...)
{
  char *p = NULL;
  va_list ap;
  va_start (ap, fmt);
  if (UNLIKELY (vasprintf (&p, fmt, ap) < 0))
    oom ();
  va_end (ap);
  return p;
}

/* ---- cleanup helpers -------------------------------------------------- */

void
ps_freep (void *p)
{
  free (*(void **) p);
}

void
ps_closep (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

void
ps_fclosep (void *fp)
{
  FILE **f = fp;
  if (*f != NULL)
    fclose (*f);
}

void
ps_error_freep (ps_error **err)
{
  ps_error_free (*err);
  *err = NULL;
}

void
ps_strvfreep (char ***v)
{
  ps_strv_free_raw (*v);
  *v = NULL;
}

/* ---- buffers ---------------------------------------------------------- */

static void
buf_reserve (ps_buf *b, size_t extra)
{
  if (b->len + extra + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1)
    cap *= 2;
  b->data = xrealloc (b->data, cap);
  b->cap = cap;
}

void
ps_buf_append (ps_buf *b, const void *data, size_t len)
{
  buf_reserve (b, len);
  if (len)
    memcpy (b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void
ps_buf_puts (ps_buf *b, const char *s)
{
  ps_buf_append (b, s, strlen (s));
}

void
ps_buf_printf (ps_buf *b, const char *fmt, ...)
{
  char *p = NULL;
  va_list ap;
  va_start (ap, fmt);
  int n = vasprintf (&p, fmt, ap);
  va_end (ap);
  if (n < 0)
    abort ();
  ps_buf_append (b, p, (size_t) n);
  free (p);
}

void
ps_buf_reset (ps_buf *b)
{
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void
ps_buf_free (ps_buf *b)
{
  free (b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

char *
ps_buf_steal (ps_buf *b)
{
  if (b->data == NULL)
    return xstrdup ("");
  char *p = b->data;
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}

/* ---- string vectors ---------------------------------------------------- */

void
ps_strv_push (ps_strv *s, const char *str)
{
  if (s->n + 2 > s->cap)
    {
      s->cap = s->cap ? s->cap * 2 : 16;
      s->v = xrealloc (s->v, s->cap * sizeof (char *));
    }
  s->v[s->n++] = xstrdup (str);
  s->v[s->n] = NULL;
}

void
ps_strv_pushf (ps_strv *s, const char *fmt, ...)
{
  char *p = NULL;
  va_list ap;
  va_start (ap, fmt);
  if (vasprintf (&p, fmt, ap) < 0)
    abort ();
  va_end (ap);
  ps_strv_push (s, p);
  free (p);
}

void
ps_strv_free (ps_strv *s)
{
  for (size_t i = 0; i < s->n; i++)
    free (s->v[i]);
  free (s->v);
  s->v = NULL;
  s->n = s->cap = 0;
}

void
ps_strv_free_raw (char **v)
{
  if (v == NULL)
    return;
  for (char **p = v; *p; p++)
    free (*p);
  free (v);
}

void
ps_kv_list_free (struct ps_kv_list *l)
{
  free (l->items);
  l->items = NULL;
  l->n = 0;
}

/* ---- time -------------------------------------------------------------- */

int64_t
ps_now_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_REALTIME, &ts);
  return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t
ps_monotonic_ns (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void
ps_timespec_add_ms (struct timespec *ts, int64_t ms)
{
  ts->tv_sec += (time_t) (ms / 1000);
  ts->tv_nsec += (long) (ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L)
    {
      ts->tv_sec++;
      ts->tv_nsec -= 1000000000L;
    }
}

struct timespec
ps_deadline_after_ms (clockid_t clock, int64_t ms)
{
  struct timespec ts;
  clock_gettime (clock, &ts);
  ps_timespec_add_ms (&ts, ms);
  return ts;
}

int64_t
ps_deadline_ns_after_ms (int64_t ms)
{
  return ps_monotonic_ns () + ms * 1000000LL;
}

bool
ps_deadline_passed (int64_t deadline_ns)
{
  return ps_monotonic_ns () > deadline_ns;
}

void
ps_format_rfc3339 (int64_t ns, char *out, size_t outlen)
{
  time_t secs = (time_t) (ns / 1000000000LL);
  long frac = (long) (ns % 1000000000LL);
  struct tm tm;
  gmtime_r (&secs, &tm);
  char base[32];
  strftime (base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf (out, outlen, "%s.%09ldZ", base, frac);
}

/* ---- digests and encodings --------------------------------------------- */

void
ps_sha256_hex (const void *data, size_t len, char out[65])
{
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest (data, len, md, &mdlen, EVP_sha256 (), NULL);
  for (unsigned i = 0; i < 32; i++)
    sprintf (out + 2 * i, "%02x", md[i]);
  out[64] = '\0';
}

char *
ps_base64_encode (const void *data, size_t len)
{
  char *out = xmalloc (4 * ((len + 2) / 3) + 1);
  EVP_EncodeBlock ((unsigned char *) out, data, (int) len);
  return out;
}

int
ps_base64_decode (const char *in, unsigned char **out, size_t *outlen)
{
  size_t n = strlen (in);
  while (n > 0 && (in[n - 1] == '\n' || in[n - 1] == '\r' || in[n - 1] == ' '))
    n--;
  /* The client's own padding: at most two '=' at the end, nowhere else. */
  size_t given_pad = 0;
  while (given_pad < n && in[n - 1 - given_pad] == '=')
    given_pad++;
  if (given_pad > 2 || (given_pad > 0 && given_pad == n))
    return -1;
  size_t body = n - given_pad;
  if (body % 4 == 1)
    return -1; /* no base64 encoding ends with a lone sextet */
  /* Normalise the URL-safe alphabet and restore padding. */
  cleanup_free char *norm = xmalloc (body + 4);
  size_t m = 0;
  for (size_t i = 0; i < body; i++)
    {
      char c = in[i];
      if (c == '-')
        c = '+';
      else if (c == '_')
        c = '/';
      else if (c == '=')
        return -1;
      norm[m++] = c;
    }
  size_t pad = 0;
  while (m % 4 != 0)
    {
      norm[m++] = '=';
      pad++;
    }
  norm[m] = '\0';
  unsigned char *buf = xmalloc (m / 4 * 3 + 1);
  int r = m ? EVP_DecodeBlock (buf, (unsigned char *) norm, (int) m) : 0;
  /* EVP_DecodeBlock counts the bytes the padding stands for; drop them. */
  if (r < 0 || (size_t) r < pad)
    {
      free (buf);
      return -1;
    }
  *outlen = (size_t) r - pad;
  buf[*outlen] = '\0';
  *out = buf;
  return 0;
}

void
ps_random_hex (char *out, size_t nbytes)
{
  unsigned char raw[64];
  if (nbytes > sizeof raw)
    nbytes = sizeof raw;
  if (RAND_bytes (raw, (int) nbytes) != 1)
    abort ();
  for (size_t i = 0; i < nbytes; i++)
    sprintf (out + 2 * i, "%02x", raw[i]);
  out[2 * nbytes] = '\0';
}

/* ---- files ------------------------------------------------------------- */

int
ps_mkdir_p (const char *path, mode_t mode, ps_error **err)
{
  cleanup_free char *p = xstrdup (path);
  for (char *s = p + 1; *s; s++)
    {
      if (*s != '/')
        continue;
      *s = '\0';
      if (mkdir (p, mode) < 0 && errno != EEXIST)
        return ps_error_set_errno (err, 500, errno, "mkdir %s", p);
      *s = '/';
    }
  if (mkdir (p, mode) < 0 && errno != EEXIST)
    return ps_error_set_errno (err, 500, errno, "mkdir %s", p);
  return 0;
}

int
ps_rm_rf_at (int parent_fd, const char *name, ps_error **err)
{
  struct stat st;
  if (fstatat (parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
    return errno == ENOENT ? 0 : ps_error_set_errno (err, 500, errno, "stat %s", name);
  if (S_ISDIR (st.st_mode))
    {
      int fd = openat (parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0)
        return ps_error_set_errno (err, 500, errno, "open %s", name);
      /* A read-only directory (chmod 0555 in an image) must still go. */
      fchmod (fd, 0700);
      DIR *d = fdopendir (fd);
      if (d == NULL)
        {
          close (fd);
          return ps_error_set_errno (err, 500, errno, "opendir %s", name);
        }
      struct dirent *de;
      int ret = 0;
      while ((de = readdir (d)) != NULL)
        {
          if (strcmp (de->d_name, ".") == 0 || strcmp (de->d_name, "..") == 0)
            continue;
          if (ps_rm_rf_at (dirfd (d), de->d_name, err) < 0)
            {
              ret = -1;
              break;
            }
        }
      closedir (d);
      if (ret < 0)
        return ps_error_wrap (err, "remove %s", name);
      if (unlinkat (parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        return ps_error_set_errno (err, 500, errno, "rmdir %s", name);
      return 0;
    }
  if (unlinkat (parent_fd, name, 0) < 0 && errno != ENOENT)
    return ps_error_set_errno (err, 500, errno, "unlink %s", name);
  return 0;
}

static int
compare_names (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

int
ps_list_dir_at (int dirfd, bool sorted, ps_strv *names, const char **failed_step)
{
  int fd = openat (dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    {
      *failed_step = "open";
      return -1;
    }
  DIR *d = fdopendir (fd);
  if (d == NULL)
    {
      int e = errno;
      close (fd);
      errno = e;
      *failed_step = "opendir";
      return -1;
    }
  struct dirent *de;
  errno = 0;
  while ((de = readdir (d)) != NULL)
    {
      if (strcmp (de->d_name, ".") != 0 && strcmp (de->d_name, "..") != 0)
        ps_strv_push (names, de->d_name);
      errno = 0;
    }
  int e = errno;
  closedir (d);
  if (e != 0)
    {
      errno = e;
      *failed_step = "readdir";
      return -1;
    }
  if (sorted && names->n > 1)
    qsort (names->v, names->n, sizeof (char *), compare_names);
  return 0;
}

int
ps_rm_rf (const char *path, ps_error **err)
{
  return ps_rm_rf_at (AT_FDCWD, path, err);
}

int
ps_write_all (int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t w = write (fd, p, len);
      if (w < 0)
        {
          if (errno == EINTR)
            continue;
          return -1;
        }
      p += w;
      len -= (size_t) w;
    }
  return 0;
}

int
ps_send_all (int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return -1;
      p += n;
      len -= (size_t) n;
    }
  return 0;
}

ssize_t
ps_read_full (int fd, void *buf, size_t n)
{
  size_t got = 0;
  while (got < n)
    {
      ssize_t r = read (fd, (char *) buf + got, n - got);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        return -1;
      if (r == 0)
        break;
      got += (size_t) r;
    }
  return (ssize_t) got;
}

int
ps_write_file (const char *path, const void *data, size_t len, mode_t mode, ps_error **err)
{
  cleanup_close int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", path);
  if (ps_write_all (fd, data, len) < 0)
    return ps_error_set_errno (err, 500, errno, "write %s", path);
  return 0;
}

int
ps_read_file (const char *path, size_t max, char **out, size_t *outlen, ps_error **err)
{
  cleanup_close int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ps_error_set_errno (err, errno == ENOENT ? 404 : 500, errno, "open %s", path);
  ps_buf b = { 0 };
  char chunk[16384];
  for (;;)
    {
      ssize_t r = read (fd, chunk, sizeof chunk);
      if (r < 0)
        {
          if (errno == EINTR)
            continue;
          ps_buf_free (&b);
          return ps_error_set_errno (err, 500, errno, "read %s", path);
        }
      if (r == 0)
        break;
      if (b.len + (size_t) r > max)
        {
          ps_buf_free (&b);
          return ps_error_set (err, 413, "%s is larger than %zu bytes", path, max);
        }
      ps_buf_append (&b, chunk, (size_t) r);
    }
  if (outlen)
    *outlen = b.len;
  *out = ps_buf_steal (&b);
  return 0;
}

int
ps_read_regular_fd (int fd, const char *what, size_t max, char **text, size_t *len, ps_error **err)
{
  *text = NULL;
  *len = 0;
  struct stat st;
  if (fstat (fd, &st) < 0)
    return ps_error_set_errno (err, 500, errno, "stat %s", what);
  if (!S_ISREG (st.st_mode))
    return ps_error_set (err, 400, "%s is not a regular file", what);
  if ((uintmax_t) st.st_size > max)
    return ps_error_set (err, 400, "%s is larger than %zu bytes", what, max);
  ps_buf b = { 0 };
  char buf[16384];
  for (;;)
    {
      ssize_t r = read (fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        {
          ps_buf_free (&b);
          return ps_error_set_errno (err, 500, errno, "read %s", what);
        }
      if (r == 0)
        break;
      if (b.len + (size_t) r > max)
        {
          ps_buf_free (&b);
          return ps_error_set (err, 400, "%s is larger than %zu bytes", what, max);
        }
      ps_buf_append (&b, buf, (size_t) r);
    }
  *len = b.len;
  *text = b.data ? ps_buf_steal (&b) : xstrdup ("");
  return 0;
}

bool
ps_path_is_contained (const char *rel)
{
  if (rel == NULL || rel[0] == '/' || rel[0] == '\0')
    return false;
  const char *p = rel;
  while (*p)
    {
      const char *slash = strchr (p, '/');
      size_t n = slash ? (size_t) (slash - p) : strlen (p);
      if (n == 2 && p[0] == '.' && p[1] == '.')
        return false;
      if (slash == NULL)
        break;
      p = slash + 1;
    }
  return true;
}

bool
ps_str_has_prefix (const char *s, const char *prefix)
{
  return strncmp (s, prefix, strlen (prefix)) == 0;
}

bool
ps_str_has_suffix (const char *s, const char *suffix)
{
  size_t a = strlen (s), b = strlen (suffix);
  return a >= b && memcmp (s + a - b, suffix, b) == 0;
}

void
ps_csv_pairs (const char *csv, ps_strv *out)
{
  cleanup_free char *copy = xstrdup (csv);
  char *save = NULL;
  for (char *kv = strtok_r (copy, ",", &save); kv; kv = strtok_r (NULL, ",", &save))
    {
      char *eq = strchr (kv, '=');
      if (eq == NULL)
        continue;
      *eq = '\0';
      ps_strv_push (out, kv);
      ps_strv_push (out, eq + 1);
    }
}

const char *
ps_pairs_get (const ps_strv *pairs, const char *key)
{
  const char *found = NULL;
  for (size_t i = 0; i + 1 < pairs->n; i += 2)
    if (strcmp (pairs->v[i], key) == 0)
      found = pairs->v[i + 1]; /* the last one wins */
  return found;
}
