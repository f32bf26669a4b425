/* llb_remote.c — http(s):// and git:// LLB sources (see llb_remote.h):
 * attr parsing as BuildKit's source/http and source/git identifiers do,
 * downloads with libcurl, git through the git CLI as argv arrays. */
#define _GNU_SOURCE
#include "solver/llb/remote.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "solver/buildah.h"
#include "solver/cache_prune.h"
#include "solver/llb/wc.h"
#include "solver/rootfs_export.h"

/* BuildKit's name for a download nothing else names (pathutil.SafeFileName). */
#define DEFAULT_HTTP_FILENAME "download"

/* BuildKit's mode for a downloaded file without http.perm. */
#define DEFAULT_HTTP_PERM 0600

/* At most this many progress events a second for one download. */
#define PROGRESS_EVENTS_PER_S 10

/* How often a running git is checked for the job's cancellation. */
#define CANCEL_POLL_MS 200

enum remote_kind
{
  REMOTE_HTTP,
  REMOTE_GIT,
};

struct http_spec
{
  const char *url;      /* the identifier itself */
  const char *checksum; /* "sha256:<hex>" or NULL */
  const char *filename; /* http.filename or NULL */
  mode_t perm;
  uid_t uid;
  gid_t gid;
  const char *accept, *user_agent; /* http.header.* BuildKit forwards */
};

struct llb_remote
{
  enum remote_kind kind;
  const struct llb_vertex *v;
  char *tmp_root;
  char *dir; /* private temporary directory, created on first use */
  char *key;

  struct http_spec http;
  char *validators; /* record of the last full download (NULL: none kept) */
  char *expected;   /* sha256 a later download must have (a 304 told it) */
  char *file;      /* the download, once fetched */
  char *filename;  /* name in the rootfs */
  char sha256[72]; /* "sha256:<hex>" of the download (or the pinned checksum) */
  time_t mtime;

  struct llb_git_spec git;
  char *commit;   /* object the ref names (a tag object for an annotated tag) */
  char *peeled;   /* the commit an annotated tag points to, or NULL */
  char *used_ref; /* full ref name it was found under, NULL for a sha ref */
};

static bool
attr_true (const Pb__SourceOp *s, const char *key)
{
  const char *v = llb_source_attr (s, key);
  return v && strcmp (v, "true") == 0;
}

bool
llb_remote_handles (const char *identifier)
{
  return ps_str_has_prefix (identifier, "http://") || ps_str_has_prefix (identifier, "https://")
         || ps_str_has_prefix (identifier, "git://");
}

static bool
is_hex (const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!isdigit ((unsigned char) s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
      return false;
  return true;
}

/* gitutil.IsCommitSHA: a full sha1 or sha256 object name, lower case. */
static bool
is_commit_sha (const char *s)
{
  size_t n = strlen (s);
  return (n == 40 || n == 64) && is_hex (s, n);
}

/* strconv.ParseInt (s, 0, 64) as BuildKit reads http.perm/uid/gid:
   optional sign, then 0x / 0o / 0b / leading-0 octal / decimal (Go's '_'
   digit separators are not accepted). */
static bool
parse_go_int (const char *s, long long *out)
{
  const char *p = s;
  bool neg = false;
  if (*p == '+' || *p == '-')
    neg = *p++ == '-';
  int base = 10;
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
    base = 16, p += 2;
  else if (p[0] == '0' && (p[1] == 'o' || p[1] == 'O'))
    base = 8, p += 2;
  else if (p[0] == '0' && (p[1] == 'b' || p[1] == 'B'))
    base = 2, p += 2;
  else if (p[0] == '0' && p[1])
    base = 8, p += 1;
  if (*p == '\0')
    return false;
  unsigned long long v = 0;
  for (; *p; p++)
    {
      int d = isdigit ((unsigned char) *p) ? *p - '0'
              : isxdigit ((unsigned char) *p) ? tolower ((unsigned char) *p) - 'a' + 10
                                              : 99;
      if (d >= base || v > ((unsigned long long) LLONG_MAX - (unsigned) d) / (unsigned) base)
        return false;
      v = v * (unsigned) base + (unsigned) d;
    }
  *out = neg ? -(long long) v : (long long) v;
  return true;
}

/* ---- http attrs ------------------------------------------------------------- */

static int
parse_id_attr (const struct llb_vertex *v, const char *key, uint32_t *out, ps_error **err)
{
  const char *s = llb_source_attr (v->op->source, key);
  long long n = 0;
  if (s == NULL)
    return 0;
  if (!parse_go_int (s, &n) || n < 0 || n > 0xfffffffeLL)
    return ps_error_set (err, 400, "op %s: %s \"%s\" is not a user or group id (0 to 4294967294)", v->digest, key, s);
  *out = (uint32_t) n;
  return 0;
}

static int
parse_http (const struct llb_vertex *v, struct http_spec *h, ps_error **err)
{
  const Pb__SourceOp *s = v->op->source;
  memset (h, 0, sizeof *h);
  h->url = s->identifier;
  h->perm = DEFAULT_HTTP_PERM;

  /* curl reads "http:///x" as host "x"; Go (and so BuildKit) finds no host */
  const char *auth = strstr (h->url, "://") + 3;
  CURLU *u = curl_url ();
  cleanup_free char *host = NULL;
  bool ok = *auth != '/' && curl_url_set (u, CURLUPART_URL, h->url, 0) == CURLUE_OK
            && curl_url_get (u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
  curl_free (steal_pointer (&host));
  curl_url_cleanup (u);
  if (!ok)
    return ps_error_set (err, 400, "op %s: \"%s\" is not a valid URL", v->digest, h->url);

  for (size_t i = 0; i < s->n_attrs; i++)
    {
      const char *k = s->attrs[i]->key, *val = s->attrs[i]->value;
      if (strcmp (k, "http.checksum") == 0)
        {
          if (!ps_str_has_prefix (val, "sha256:") || strlen (val) != 7 + 64 || !is_hex (val + 7, 64))
            return ps_error_set (err, 400, "op %s: http.checksum \"%s\" is not \"sha256:<64 lower-case hex>\" "
                                           "(downloads are hashed with sha256)", v->digest, val);
          h->checksum = val;
        }
      else if (strcmp (k, "http.filename") == 0)
        h->filename = *val ? val : NULL;
      else if (strcmp (k, "http.perm") == 0)
        {
          long long n = 0;
          if (!parse_go_int (val, &n) || n < 0 || n > 07777)
            return ps_error_set (err, 400, "op %s: http.perm \"%s\" is not a file mode (0 to 07777, e.g. \"0644\")",
                                 v->digest, val);
          /* BuildKit passes it to Go's os.OpenFile, which keeps only the
             permission bits; 0 means the default. */
          if (n != 0)
            h->perm = (mode_t) (n & 0777);
        }
      else if (strcmp (k, "http.authheadersecret") == 0)
        return llb_unsupported (err, v, "http.authheadersecret (session secrets are not available to sources)");
      else if (ps_str_has_prefix (k, "http.sig."))
        return llb_unsupported (err, v, "http source attr %s (signature verification)", k);
      else if (strncasecmp (k, "http.header.", 12) == 0)
        {
          if (strcasecmp (k + 12, "accept") == 0)
            h->accept = val;
          else if (strcasecmp (k + 12, "user-agent") == 0)
            h->user_agent = val;
          /* BuildKit drops every other header silently. */
        }
    }
  uint32_t uid = 0, gid = 0;
  if (parse_id_attr (v, "http.uid", &uid, err) < 0 || parse_id_attr (v, "http.gid", &gid, err) < 0)
    return -1;
  h->uid = uid;
  h->gid = gid;
  return 0;
}

/* pathutil.SafeFileName: the last component of a trimmed name, or the
   default for "", ".", "..", "/" and names with control characters. */
static char *
safe_file_name (const char *s)
{
  while (isspace ((unsigned char) *s))
    s++;
  size_t n = strlen (s);
  while (n > 0 && isspace ((unsigned char) s[n - 1]))
    n--;
  while (n > 1 && s[n - 1] == '/')
    n--;
  const char *base = s;
  for (size_t i = 0; i + 1 < n; i++)
    if (s[i] == '/')
      base = s + i + 1;
  size_t len = n - (size_t) (base - s);
  if (len == 0 || (len == 1 && (base[0] == '.' || base[0] == '/')) || (len == 2 && memcmp (base, "..", 2) == 0))
    return xstrdup (DEFAULT_HTTP_FILENAME);
  for (size_t i = 0; i < len; i++)
    {
      unsigned char c = (unsigned char) base[i];
      /* C0, DEL, and C1 (U+0080..U+009F: 0xc2 0x80..0x9f in UTF-8) */
      if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < len && (unsigned char) base[i + 1] >= 0x80
                                    && (unsigned char) base[i + 1] <= 0x9f))
        return xstrdup (DEFAULT_HTTP_FILENAME);
    }
  return xstrndup (base, len);
}

static int
hexval (int c)
{
  return isdigit (c) ? c - '0' : isxdigit (c) ? tolower (c) - 'a' + 10 : -1;
}

static char *
percent_decode (const char *s)
{
  ps_buf b = { 0 };
  ps_buf_puts (&b, "");
  for (const char *p = s; *p; p++)
    {
      int hi, lo;
      if (*p == '%' && (hi = hexval ((unsigned char) p[1])) >= 0 && (lo = hexval ((unsigned char) p[2])) >= 0)
        {
          char c = (char) (hi * 16 + lo);
          ps_buf_append (&b, &c, 1);
          p += 2;
        }
      else
        ps_buf_append (&b, p, 1);
    }
  return ps_buf_steal (&b);
}

/* The filename parameter of a Content-Disposition value, as Go's
   mime.ParseMediaType gives it: RFC 5987 filename* (UTF-8 or US-ASCII)
   wins over filename; quoted strings unescaped.  NULL when absent or
   when the value does not parse (Go then ignores the header). */
static char *
disposition_filename (const char *cd)
{
  const char *p = cd + strcspn (cd, ";");
  cleanup_free char *plain = NULL, *ext = NULL;
  while (*p == ';')
    {
      p++;
      while (*p == ' ' || *p == '\t')
        p++;
      if (*p == '\0')
        break; /* a trailing ';' */
      size_t kn = strcspn (p, "=; \t");
      if (kn == 0 || p[kn] != '=')
        return NULL;
      cleanup_free char *key = xstrndup (p, kn);
      p += kn + 1;
      ps_buf val = { 0 };
      ps_buf_puts (&val, "");
      if (*p == '"')
        {
          for (p++; *p && *p != '"'; p++)
            {
              if (*p == '\\' && p[1])
                p++;
              ps_buf_append (&val, p, 1);
            }
          if (*p != '"')
            {
              ps_buf_free (&val);
              return NULL;
            }
          p++;
        }
      else
        {
          size_t vn = strcspn (p, "; \t");
          ps_buf_append (&val, p, vn);
          p += vn;
        }
      while (*p == ' ' || *p == '\t')
        p++;
      if (strcasecmp (key, "filename") == 0)
        {
          free (plain);
          plain = ps_buf_steal (&val);
        }
      else if (strcasecmp (key, "filename*") == 0)
        {
          /* charset'language'percent-encoded */
          char *q1 = strchr (val.data, '\''), *q2 = q1 ? strchr (q1 + 1, '\'') : NULL;
          if (q1 && q2
              && ((q1 - val.data == 5 && strncasecmp (val.data, "utf-8", 5) == 0)
                  || (q1 - val.data == 8 && strncasecmp (val.data, "us-ascii", 8) == 0)))
            {
              free (ext);
              ext = percent_decode (q2 + 1);
            }
          ps_buf_free (&val);
        }
      else
        ps_buf_free (&val);
      if (*p && *p != ';')
        return NULL;
    }
  if (ext)
    return steal_pointer (&ext);
  return steal_pointer (&plain);
}

char *
llb_remote_http_filename (const char *url, const char *attr, const char *content_disposition)
{
  if (attr && *attr)
    return safe_file_name (attr);
  if (content_disposition && *content_disposition)
    {
      cleanup_free char *name = disposition_filename (content_disposition);
      if (name && *name && !ps_str_has_suffix (name, "/"))
        return safe_file_name (name);
    }
  CURLU *u = curl_url ();
  char *path = NULL;
  char *out = NULL;
  if (curl_url_set (u, CURLUPART_URL, url, 0) == CURLUE_OK
      && curl_url_get (u, CURLUPART_PATH, &path, CURLU_URLDECODE) == CURLUE_OK && path)
    {
      /* path.Base: the last element, trailing slashes dropped */
      size_t n = strlen (path);
      while (n > 0 && path[n - 1] == '/')
        n--;
      path[n] = '\0';
      const char *base = strrchr (path, '/');
      base = base ? base + 1 : path;
      if (*base && strcmp (base, ".") != 0)
        out = safe_file_name (base);
    }
  curl_free (path);
  curl_url_cleanup (u);
  return out ? out : xstrdup (DEFAULT_HTTP_FILENAME);
}

/* ---- git attrs ---------------------------------------------------------------- */

/* sshutil.IsImplicitSSHTransport: user@host:path */
static bool
is_scp_style (const char *s)
{
  size_t u = strspn (s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_");
  if (u == 0 || s[u] != '@')
    return false;
  const char *h = s + u + 1;
  size_t hn = strspn (h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.");
  return hn > 0 && h[hn] == ':';
}

/* The scheme of "scheme://..." (letters and digits, as gitutil's
   protoRegexp), lower-cased; NULL without one. */
static char *
url_scheme (const char *s)
{
  size_t n = strspn (s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
  if (n == 0 || strncmp (s + n, "://", 3) != 0)
    return NULL;
  char *sc = xstrndup (s, n);
  for (char *c = sc; *c; c++)
    *c = (char) tolower ((unsigned char) *c);
  return sc;
}

void
llb_git_spec_free (struct llb_git_spec *s)
{
  free (s->remote);
  free (s->ref);
  free (s->subdir);
  free (s->checksum);
  memset (s, 0, sizeof *s);
}

/* path.Join ("/", p) without the leading '/': "." and ".." resolved,
   never above the root. */
static char *
clean_subdir (const char *p)
{
  ps_strv parts = { 0 };
  cleanup_free char *copy = xstrdup (p);
  char *save = NULL;
  for (char *c = strtok_r (copy, "/", &save); c; c = strtok_r (NULL, "/", &save))
    {
      if (strcmp (c, ".") == 0)
        continue;
      if (strcmp (c, "..") == 0)
        {
          if (parts.n)
            free (parts.v[--parts.n]), parts.v[parts.n] = NULL;
          continue;
        }
      ps_strv_push (&parts, c);
    }
  ps_buf b = { 0 };
  ps_buf_puts (&b, "");
  for (size_t i = 0; i < parts.n; i++)
    ps_buf_printf (&b, "%s%s", i ? "/" : "", parts.v[i]);
  ps_strv_free (&parts);
  return ps_buf_steal (&b);
}

int
llb_remote_git_spec (const struct llb_vertex *v, struct llb_git_spec *out, ps_error **err)
{
  const Pb__SourceOp *s = v->op->source;
  memset (out, 0, sizeof *out);
  const char *rest = s->identifier + strlen ("git://");
  const char *hash = strchr (rest, '#');
  cleanup_free char *base = hash ? xstrndup (rest, (size_t) (hash - rest)) : xstrdup (rest);
  const char *fragment = hash ? hash + 1 : "";
  const char *colon = strchr (fragment, ':');
  out->ref = colon ? xstrndup (fragment, (size_t) (colon - fragment)) : xstrdup (fragment);
  out->subdir = clean_subdir (colon ? colon + 1 : "");

  /* As BuildKit: https:// is prepended to what is no git transport; a
     URL with another scheme is kept as it is, to be refused below by
     name (BuildKit would fail later on the odd URL it makes). */
  const char *full = llb_source_attr (s, "git.fullurl");
  const char *given = full && *full ? full : base;
  if (given == base && !is_scp_style (base))
    base[strcspn (base, "?")] = '\0'; /* Go's url drops the query from the remote */
  cleanup_free char *given_scheme = url_scheme (given);
  out->remote = given_scheme || is_scp_style (given) ? xstrdup (given) : xasprintf ("https://%s", given);

  cleanup_free char *scheme = url_scheme (out->remote);
  int ret = 0;
  if (scheme == NULL || strcmp (scheme, "ssh") == 0)
    ret = llb_unsupported (err, v, "git remote \"%s\" over ssh (no SSH agent is forwarded to sources)", out->remote);
  else if (strcmp (scheme, "http") && strcmp (scheme, "https") && strcmp (scheme, "git"))
    ret = ps_error_set (err, 400, "op %s: git remote \"%s\": protocol %s is not one of http, https, git, ssh",
                        v->digest, out->remote, scheme);
  else
    {
      CURLU *u = curl_url ();
      char *host = NULL;
      /* curl knows no git:// URLs; their shape is the same as http's */
      cleanup_free char *as_http = xasprintf ("http%s", out->remote + strlen (scheme));
      bool ok = curl_url_set (u, CURLUPART_URL, as_http, 0) == CURLUE_OK
                && curl_url_get (u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
      curl_free (host);
      curl_url_cleanup (u);
      for (const char *c = out->remote; *c; c++)
        ok &= (unsigned char) *c > ' ' && *c != 0x7f;
      if (!ok)
        ret = ps_error_set (err, 400, "op %s: git remote \"%s\" is not a valid URL", v->digest, out->remote);
    }
  if (ret == 0 && (out->ref[0] == '-' || strpbrk (out->ref, " \t\n\r\\") != NULL))
    ret = ps_error_set (err, 400, "op %s: invalid git ref \"%s\"", v->digest, out->ref);

  for (size_t i = 0; ret == 0 && i < s->n_attrs; i++)
    {
      const char *k = s->attrs[i]->key, *val = s->attrs[i]->value;
      if (strcmp (k, "git.keepgitdir") == 0)
        out->keep_git_dir = strcmp (val, "true") == 0;
      else if (strcmp (k, "git.skipsubmodules") == 0)
        out->skip_submodules = strcmp (val, "true") == 0;
      else if (strcmp (k, "git.checksum") == 0 && *val)
        {
          if (!is_hex (val, strlen (val)) || strlen (val) > 64)
            ret = ps_error_set (err, 400, "op %s: git.checksum \"%s\" is not a (prefix of a) lower-case hex commit "
                                          "sha", v->digest, val);
          else
            out->checksum = xstrdup (val);
        }
      else if (strcmp (k, "git.mtime") == 0 && *val && strcmp (val, "checkout") != 0)
        ret = llb_unsupported (err, v, "git.mtime \"%s\"", val);
      else if ((strcmp (k, "git.fetchbycommit") == 0 || strcmp (k, "git.checkoutbundle") == 0) && attr_true (s, k))
        ret = llb_unsupported (err, v, "git source attr %s", k);
      else if (strcmp (k, "git.bundle") == 0 && *val)
        ret = llb_unsupported (err, v, "git source attr %s", k);
      else if (ps_str_has_prefix (k, "git.sig.") && *val && strcmp (val, "false") != 0)
        ret = llb_unsupported (err, v, "git source attr %s (signature verification)", k);
    }
  if (ret < 0)
    llb_git_spec_free (out);
  return ret;
}

int
llb_remote_check (const struct llb_vertex *v, ps_error **err)
{
  if (ps_str_has_prefix (v->op->source->identifier, "git://"))
    {
      struct llb_git_spec g;
      if (llb_remote_git_spec (v, &g, err) < 0)
        return -1;
      llb_git_spec_free (&g);
      return 0;
    }
  struct http_spec h;
  return parse_http (v, &h, err);
}

/* ---- the private directory ------------------------------------------------------ */

static int
ensure_dir (struct llb_remote *r, ps_error **err)
{
  if (r->dir)
    return 0;
  char *tmpl = xasprintf ("%s/remote-XXXXXX", r->tmp_root);
  if (mkdtemp (tmpl) == NULL)
    {
      int e = errno;
      free (tmpl);
      return ps_error_set_errno (err, 500, e, "create a temporary directory in %s", r->tmp_root);
    }
  r->dir = tmpl;
  return 0;
}

void
llb_remote_free (struct llb_remote *r)
{
  if (r == NULL)
    return;
  if (r->dir)
    ps_rm_rf (r->dir, NULL);
  free (r->dir);
  free (r->tmp_root);
  free (r->key);
  free (r->validators);
  free (r->expected);
  free (r->file);
  free (r->filename);
  llb_git_spec_free (&r->git);
  free (r->commit);
  free (r->peeled);
  free (r->used_ref);
  free (r);
}

void
llb_remote_freep (struct llb_remote **r)
{
  llb_remote_free (*r);
}

const char *
llb_remote_key (const struct llb_remote *r)
{
  return r->key;
}

/* ---- http download ------------------------------------------------------------- */

struct download
{
  struct llb_remote *r;
  solver_job *job;
  int fd;
  EVP_MD_CTX *md;
  uint64_t bytes;
  curl_off_t total;
  bool too_big;
  int write_errno;
  char *disposition; /* Content-Disposition of the latest response */
  char *etag, *last_modified; /* the latest response's validators */
  int64_t started, last_emit;
};

static void
emit_progress (struct download *d, bool done)
{
  if (d->job == NULL)
    return;
  struct solver_event ev = { .kind = SOLVER_EV_STATUS };
  ev.vertex = xstrdup (d->r->v->digest);
  ev.status_id = xasprintf ("downloading %s", d->r->http.url);
  ev.current = (int64_t) d->bytes;
  ev.total = d->total > 0 ? (int64_t) d->total : 0;
  ev.started_ns = d->started;
  if (done)
    ev.completed_ns = ps_now_ns ();
  solver_job_emit (d->job, &ev);
}

static size_t
on_body (char *data, size_t size, size_t nmemb, void *ud)
{
  struct download *d = ud;
  size_t n = size * nmemb;
  if (d->bytes + n > LLB_REMOTE_MAX_HTTP_BYTES)
    {
      d->too_big = true;
      return 0;
    }
  for (size_t off = 0; off < n;)
    {
      ssize_t w = write (d->fd, data + off, n - off);
      if (w < 0 && errno == EINTR)
        continue;
      if (w <= 0)
        {
          d->write_errno = w < 0 ? errno : EIO;
          return 0;
        }
      off += (size_t) w;
    }
  EVP_DigestUpdate (d->md, data, n);
  d->bytes += n;
  return n;
}

/* "Name: value" when the header line is `name` (lower-case, with the
   colon), the value trimmed; NULL otherwise. */
static char *
header_value (const char *data, size_t n, const char *name)
{
  size_t nn = strlen (name);
  if (n <= nn || strncasecmp (data, name, nn) != 0)
    return NULL;
  const char *v = data + nn;
  size_t vn = n - nn;
  while (vn && (*v == ' ' || *v == '\t'))
    v++, vn--;
  while (vn && (v[vn - 1] == '\r' || v[vn - 1] == '\n' || v[vn - 1] == ' '))
    vn--;
  return xstrndup (v, vn);
}

static void
replace_str (char **slot, char *value)
{
  free (*slot);
  *slot = value;
}

/* Headers of every response arrive here, redirects included: only the
   final response's Content-Disposition and validators count. */
static size_t
on_header (char *data, size_t size, size_t nmemb, void *ud)
{
  struct download *d = ud;
  size_t n = size * nmemb;
  char *v;
  if (n >= 5 && memcmp (data, "HTTP/", 5) == 0)
    {
      replace_str (&d->disposition, NULL);
      replace_str (&d->etag, NULL);
      replace_str (&d->last_modified, NULL);
    }
  else if ((v = header_value (data, n, "content-disposition:")) != NULL)
    replace_str (&d->disposition, v);
  else if ((v = header_value (data, n, "etag:")) != NULL)
    replace_str (&d->etag, v);
  else if ((v = header_value (data, n, "last-modified:")) != NULL)
    replace_str (&d->last_modified, v);
  return n;
}

static int
on_progress (void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
  struct download *d = ud;
  if (d->job && solver_job_cancelled (d->job))
    return 1;
  d->total = dltotal;
  int64_t now = ps_monotonic_ns ();
  if (d->bytes > 0 && now - d->last_emit >= 1000000000LL / PROGRESS_EVENTS_PER_S)
    {
      d->last_emit = now;
      emit_progress (d, false);
    }
  return 0;
}

/* ---- revalidation: BuildKit asks the server whether a URL changed
   (If-None-Match / If-Modified-Since) instead of fetching it again ---- */

struct http_validators
{
  char *etag, *last_modified; /* as the server sent them */
  char *sha256;               /* what that download was */
  char *disposition;          /* its Content-Disposition, or NULL */
  time_t mtime;
};

static void
http_validators_free (struct http_validators *h)
{
  free (h->etag);
  free (h->last_modified);
  free (h->sha256);
  free (h->disposition);
  memset (h, 0, sizeof *h);
}

static bool
is_sha256_digest (const char *s)
{
  if (s == NULL || strncmp (s, "sha256:", 7) != 0 || strlen (s) != 7 + 64)
    return false;
  return strspn (s + 7, "0123456789abcdef") == 64;
}

/* The record of `r`'s URL, if a usable one is kept. */
static bool
validators_load (const struct llb_remote *r, struct http_validators *h)
{
  memset (h, 0, sizeof *h);
  cleanup_free char *text = NULL;
  if (r->validators == NULL || ps_read_file (r->validators, 64 * 1024, &text, NULL, NULL) < 0)
    return false;
  cJSON *j = cJSON_Parse (text);
  const char *etag = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (j, "etag"));
  const char *lm = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (j, "lastModified"));
  const char *sha = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (j, "sha256"));
  const char *disposition = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (j, "disposition"));
  const char *url = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (j, "url"));
  const cJSON *mtime = cJSON_GetObjectItemCaseSensitive (j, "mtime");
  bool ok = (etag || lm) && is_sha256_digest (sha) && url && strcmp (url, r->http.url) == 0 && cJSON_IsNumber (mtime);
  if (ok)
    {
      h->etag = etag ? xstrdup (etag) : NULL;
      h->last_modified = lm ? xstrdup (lm) : NULL;
      h->sha256 = xstrdup (sha);
      h->disposition = disposition ? xstrdup (disposition) : NULL;
      h->mtime = (time_t) mtime->valuedouble;
    }
  cJSON_Delete (j);
  return ok;
}

/* After a full download: keep what identifies it (temp + rename, so a
   reader never sees half a record). */
static void
validators_store (const struct llb_remote *r, const char *etag, const char *last_modified, const char *disposition)
{
  if (r->validators == NULL)
    return;
  if (etag == NULL && last_modified == NULL)
    {
      unlink (r->validators); /* nothing to ask with next time */
      return;
    }
  cJSON *j = cJSON_CreateObject ();
  cJSON_AddStringToObject (j, "url", r->http.url);
  if (etag)
    cJSON_AddStringToObject (j, "etag", etag);
  if (last_modified)
    cJSON_AddStringToObject (j, "lastModified", last_modified);
  cJSON_AddStringToObject (j, "sha256", r->sha256);
  if (disposition)
    cJSON_AddStringToObject (j, "disposition", disposition);
  cJSON_AddNumberToObject (j, "mtime", (double) r->mtime);
  cleanup_free char *text = cJSON_PrintUnformatted (j);
  cJSON_Delete (j);
  char rnd[17];
  ps_random_hex (rnd, 8);
  cleanup_free char *tmp = xasprintf ("%s.%s.tmp", r->validators, rnd);
  ps_error *err = NULL;
  if (ps_write_file (tmp, text, strlen (text), 0600, &err) < 0 || rename (tmp, r->validators) < 0)
    {
      /* only the next revalidation is lost */
      unlink (tmp);
      ps_error_free (err);
    }
}

/* GET the URL into the remote's directory.  With `cond`, ask whether it
   changed since that download: *not_modified is set on a 304. */
static int
http_download (struct llb_remote *r, solver_job *job, const struct http_validators *cond, bool *not_modified,
               ps_error **err)
{
  if (not_modified)
    *not_modified = false;
  if (ensure_dir (r, err) < 0)
    return -1;
  cleanup_free char *path = xasprintf ("%s/download", r->dir);
  struct download d = { .r = r, .job = job, .started = ps_now_ns () };
  d.fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (d.fd < 0)
    return ps_error_set_errno (err, 500, errno, "create %s", path);
  d.md = EVP_MD_CTX_new ();
  EVP_DigestInit_ex (d.md, EVP_sha256 (), NULL);

  CURL *c = curl_easy_init ();
  char errbuf[CURL_ERROR_SIZE] = "";
  struct curl_slist *headers = NULL;
  cleanup_free char *ua = xasprintf ("User-Agent: %s", r->http.user_agent ? r->http.user_agent
                                                                           : "podsolve/" PODSOLVE_VERSION);
  headers = curl_slist_append (headers, ua);
  if (r->http.accept)
    {
      cleanup_free char *h = xasprintf ("Accept: %s", r->http.accept);
      headers = curl_slist_append (headers, h);
    }
  if (cond && cond->etag)
    {
      cleanup_free char *h = xasprintf ("If-None-Match: %s", cond->etag);
      headers = curl_slist_append (headers, h);
    }
  if (cond && cond->last_modified)
    {
      cleanup_free char *h = xasprintf ("If-Modified-Since: %s", cond->last_modified);
      headers = curl_slist_append (headers, h);
    }
  curl_easy_setopt (c, CURLOPT_URL, r->http.url);
  curl_easy_setopt (c, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt (c, CURLOPT_MAXREDIRS, (long) LLB_REMOTE_MAX_REDIRECTS);
  curl_easy_setopt (c, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L); /* we run on a job thread */
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT, (long) LLB_REMOTE_CONNECT_TIMEOUT_S);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_TIME, (long) LLB_REMOTE_STALL_S);
  curl_easy_setopt (c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) LLB_REMOTE_MAX_HTTP_BYTES);
  curl_easy_setopt (c, CURLOPT_FILETIME, 1L);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, &d);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, &d);
  curl_easy_setopt (c, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt (c, CURLOPT_XFERINFODATA, &d);
  curl_easy_setopt (c, CURLOPT_NOPROGRESS, 0L);

  CURLcode rc = curl_easy_perform (c);
  long status = 0;
  curl_off_t filetime = -1;
  char *effective = NULL;
  curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo (c, CURLINFO_FILETIME_T, &filetime);
  curl_easy_getinfo (c, CURLINFO_EFFECTIVE_URL, &effective);
  cleanup_free char *where = effective && strcmp (effective, r->http.url)
                                 ? xasprintf ("GET %s (redirected to %s)", r->http.url, effective)
                                 : xasprintf ("GET %s", r->http.url);
  int ret = 0;
  bool unchanged = cond && rc == CURLE_OK && status == 304;
  if (unchanged)
    ; /* the record says what the content is */
  else if (rc == CURLE_ABORTED_BY_CALLBACK && job && solver_job_cancelled (job))
    ret = ps_error_set (err, 499, "cancelled");
  else if (d.too_big || rc == CURLE_FILESIZE_EXCEEDED)
    ret = ps_error_set (err, 413, "%s: the file is larger than %llu bytes", where,
                        (unsigned long long) LLB_REMOTE_MAX_HTTP_BYTES);
  else if (d.write_errno)
    ret = ps_error_set_errno (err, 500, d.write_errno, "%s: write %s", where, path);
  else if (rc == CURLE_HTTP_RETURNED_ERROR || (rc == CURLE_OK && (status < 200 || status > 299)))
    ret = ps_error_set (err, 502, "%s: the server answered HTTP status %ld", where, status);
  else if (rc == CURLE_TOO_MANY_REDIRECTS)
    ret = ps_error_set (err, 502, "%s: more than %d redirects", where, LLB_REMOTE_MAX_REDIRECTS);
  else if (rc != CURLE_OK)
    ret = ps_error_set (err, 502, "%s: %s", where, errbuf[0] ? errbuf : curl_easy_strerror (rc));
  curl_easy_cleanup (c);
  curl_slist_free_all (headers);

  unsigned char sum[32];
  unsigned int sumlen = 0;
  EVP_DigestFinal_ex (d.md, sum, &sumlen);
  EVP_MD_CTX_free (d.md);
  if (close (d.fd) < 0 && ret == 0)
    ret = ps_error_set_errno (err, 500, errno, "write %s", path);
  const char *want = r->http.checksum ? r->http.checksum : r->expected;
  if (ret == 0 && unchanged)
    {
      emit_progress (&d, true);
      unlink (path);
      snprintf (r->sha256, sizeof r->sha256, "%s", cond->sha256);
      /* named as this op names it (http.filename may differ) */
      replace_str (&r->filename, llb_remote_http_filename (r->http.url, r->http.filename, cond->disposition));
      r->mtime = cond->mtime;
      replace_str (&r->expected, xstrdup (cond->sha256)); /* fetched only if no result is cached */
      *not_modified = true;
    }
  else if (ret == 0)
    {
      char got[72] = "sha256:";
      for (int i = 0; i < 32; i++)
        sprintf (got + 7 + 2 * i, "%02x", sum[i]);
      if (want && strcmp (got, want) != 0)
        ret = r->http.checksum ? ps_error_set (err, 400, "digest mismatch for %s: %s (expected: %s)", r->http.url,
                                               got, want)
                               : ps_error_set (err, 502, "%s changed while this solve ran: %s (it was %s)",
                                               r->http.url, got, want);
      else
        {
          emit_progress (&d, true);
          memcpy (r->sha256, got, sizeof got);
          free (r->file);
          r->file = steal_pointer (&path);
          free (r->filename);
          r->filename = llb_remote_http_filename (r->http.url, r->http.filename, d.disposition);
          r->mtime = filetime > 0 ? (time_t) filetime : 0;
          if (want == NULL)
            validators_store (r, d.etag, d.last_modified, d.disposition);
        }
    }
  free (d.disposition);
  free (d.etag);
  free (d.last_modified);
  return ret;
}

static void
http_set_key (struct llb_remote *r)
{
  free (r->key);
  r->key = xasprintf ("http:%s\nname=%s\nperm=%o\nuid=%u\ngid=%u", r->sha256, r->filename, (unsigned) r->http.perm,
                      (unsigned) r->http.uid, (unsigned) r->http.gid);
}

static int
copy_fd (int in, int out)
{
  for (;;)
    {
      ssize_t n = copy_file_range (in, NULL, out, NULL, 1 << 30, 0);
      if (n == 0)
        return 0;
      if (n > 0)
        continue;
      if (errno == EINTR)
        continue;
      if (errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
        return -1;
      break; /* nothing copied yet on these errors: plain read/write */
    }
  char buf[65536];
  for (;;)
    {
      ssize_t n = read (in, buf, sizeof buf);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return (int) n;
      for (ssize_t off = 0; off < n;)
        {
          ssize_t w = write (out, buf + off, (size_t) (n - off));
          if (w < 0 && errno == EINTR)
            continue;
          if (w < 0)
            return -1;
          off += w;
        }
    }
}

static int
http_materialize (struct llb_remote *r, const char *rootfs, solver_job *job, ps_error **err)
{
  if (r->file == NULL && http_download (r, job, NULL, NULL, err) < 0)
    return -1;
  cleanup_close int in = open (r->file, O_RDONLY | O_CLOEXEC);
  cleanup_close int dir = open (rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (in < 0 || dir < 0)
    return ps_error_set_errno (err, 500, errno, "open %s", in < 0 ? r->file : rootfs);
  /* the name is one component (safe_file_name) and the rootfs is empty */
  cleanup_close int out = openat (dir, r->filename, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (out < 0)
    return ps_error_set_errno (err, 500, errno, "create %s/%s", rootfs, r->filename);
  if (copy_fd (in, out) < 0)
    return ps_error_set_errno (err, 500, errno, "write %s/%s", rootfs, r->filename);
  if ((r->http.uid || r->http.gid) && fchown (out, r->http.uid, r->http.gid) < 0)
    return ps_error_set_errno (err, 500, errno, "chown %s to %u:%u", r->filename, (unsigned) r->http.uid,
                               (unsigned) r->http.gid);
  struct timespec times[2] = { { r->mtime, 0 }, { r->mtime, 0 } };
  if (fchmod (out, r->http.perm) < 0 || futimens (out, times) < 0)
    return ps_error_set_errno (err, 500, errno, "set mode and time of %s", r->filename);
  return 0;
}

/* ---- git -------------------------------------------------------------------------- */

/* Run `git ARGS...` (NULL-terminated) in `dir` (NULL: anywhere) with no
   system or user config and only network transports podsolve supports
   (submodules inherit the -c options), polling for cancellation.  *out
   (when not NULL) gets stdout.  A failure quotes git's stderr. */
static int
git_run (solver_job *job, const char *dir, char **out, ps_error **err, const char *first, ...)
{
  ps_strv argv = { 0 };
  const char *const base[] = { "git",
                               "-c", "protocol.allow=never",
                               "-c", "protocol.http.allow=always",
                               "-c", "protocol.https.allow=always",
                               "-c", "protocol.git.allow=always",
                               "-c", "http.lowSpeedLimit=1",
                               "-c", "advice.detachedHead=false" };
  for (size_t i = 0; i < ARRAY_SIZE (base); i++)
    ps_strv_push (&argv, base[i]);
  ps_strv_push (&argv, "-c");
  ps_strv_pushf (&argv, "http.lowSpeedTime=%d", LLB_REMOTE_STALL_S);
  if (dir)
    {
      ps_strv_push (&argv, "-C");
      ps_strv_push (&argv, dir);
    }
  va_list ap;
  va_start (ap, first);
  for (const char *a = first; a; a = va_arg (ap, const char *))
    ps_strv_push (&argv, a);
  va_end (ap);
  char *const env[] = { "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
                        "HOME=/dev/null", "LC_ALL=C", "GIT_ASKPASS=/bin/false", NULL };
  struct ps_child child;
  if (ps_child_spawn_env (argv.v, env, &child, err) < 0)
    {
      ps_strv_free (&argv);
      return ps_error_wrap (err, "git %s", first);
    }
  ps_buf ob = { 0 }, eb = { 0 };
  ps_buf_puts (&ob, "");
  ps_buf_puts (&eb, "");
  struct pollfd pfd[2] = { { child.out_fd, POLLIN, 0 }, { child.err_fd, POLLIN, 0 } };
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0)
    {
      int n = poll (pfd, 2, CANCEL_POLL_MS);
      if (n < 0 && errno != EINTR)
        break;
      if (!killed && job && solver_job_cancelled (job))
        {
          ps_child_terminate (child.pid, LLB_REMOTE_CANCEL_GRACE_MS);
          killed = true;
        }
      for (int i = 0; n > 0 && i < 2; i++)
        {
          if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
          char buf[8192];
          ssize_t r = read (pfd[i].fd, buf, sizeof buf);
          if (r < 0 && errno == EINTR)
            continue;
          if (r <= 0)
            {
              pfd[i].fd = -1;
              open_fds--;
              continue;
            }
          ps_buf *b = i == 0 ? &ob : &eb;
          if (b->len < LLB_REMOTE_MAX_GIT_OUTPUT)
            ps_buf_append (b, buf, (size_t) r);
        }
    }
  int status = ps_child_wait (&child);
  int ret = 0;
  if (killed)
    ret = ps_error_set (err, 499, "cancelled");
  else if (status != 0)
    {
      while (eb.len > 0 && isspace ((unsigned char) eb.data[eb.len - 1]))
        eb.data[--eb.len] = '\0';
      const char *msg = eb.len > 2000 ? eb.data + eb.len - 2000 : eb.data;
      ret = ps_error_set (err, 502, "git %s: exit status %d%s%s", first, status, *msg ? ": " : "", msg);
    }
  ps_strv_free (&argv);
  ps_buf_free (&eb);
  if (ret == 0 && out)
    *out = ps_buf_steal (&ob);
  else
    ps_buf_free (&ob);
  return ret;
}

static int
git_resolve (struct llb_remote *r, solver_job *job, ps_error **err)
{
  struct llb_git_spec *g = &r->git;
  const char *digest = r->v->digest;
  if (is_commit_sha (g->ref))
    r->commit = xstrdup (g->ref);
  else
    {
      cleanup_free char *out = NULL;
      cleanup_free char *peel = xasprintf ("%s^{}", g->ref);
      int rc = *g->ref ? git_run (job, NULL, &out, err, "ls-remote", "--", g->remote, g->ref, peel, NULL)
                       : git_run (job, NULL, &out, err, "ls-remote", "--symref", "--", g->remote, "HEAD", NULL);
      if (rc < 0)
        return ps_error_wrap (err, "resolve %s of %s", *g->ref ? g->ref : "HEAD", g->remote);
      /* gitSourceHandler.resolveMetadata: an exact full ref, then a
         branch (git checkout prefers branches), then a tag; an annotated
         tag's peeled commit is what it stands for. */
      const char *ref = g->ref;
      if (ps_str_has_prefix (ref, "refs/"))
        ref += 5;
      cleanup_free char *partial = xasprintf ("refs/%s", ref);
      cleanup_free char *head = xasprintf ("refs/heads/%s", ps_str_has_prefix (g->ref, "refs/heads/") ? g->ref + 11 : g->ref);
      cleanup_free char *tag = xasprintf ("refs/tags/%s", ps_str_has_prefix (g->ref, "refs/tags/") ? g->ref + 10 : g->ref);
      cleanup_free char *tag_peeled = xasprintf ("%s^{}", tag);
      char *sha = NULL, *used = NULL, *head_sha = NULL, *tag_sha = NULL, *peeled_sha = NULL, *symref = NULL;
      for (char *save = NULL, *line = strtok_r (out, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
        {
          char *tab = strchr (line, '\t');
          if (tab == NULL)
            continue;
          *tab = '\0';
          const char *name = tab + 1;
          if (*g->ref == '\0')
            {
              if (strcmp (name, "HEAD") == 0 && ps_str_has_prefix (line, "ref: "))
                symref = line + 5;
              else if (strcmp (name, "HEAD") == 0)
                sha = line;
            }
          else if (strcmp (name, head) == 0)
            head_sha = line;
          else if (strcmp (name, tag) == 0)
            tag_sha = line;
          else if (strcmp (name, tag_peeled) == 0)
            peeled_sha = line;
          else if (strcmp (name, partial) == 0)
            sha = line, used = partial;
        }
      if (*g->ref == '\0')
        used = symref;
      else
        {
          if (sha == NULL && head_sha)
            sha = head_sha, used = head;
          if (sha)
            peeled_sha = NULL;
          else if (tag_sha)
            sha = tag_sha, used = tag;
        }
      if (sha == NULL)
        return ps_error_set (err, 400, "op %s: git remote %s has no ref \"%s\" (branch, tag or full ref name; "
                                       "or give a full commit sha)", digest, g->remote, *g->ref ? g->ref : "HEAD");
      if (!is_commit_sha (sha))
        return ps_error_set (err, 502, "git ls-remote %s: \"%s\" is not an object name", g->remote, sha);
      r->commit = xstrdup (sha);
      r->used_ref = used ? xstrdup (used) : NULL;
      r->peeled = peeled_sha && is_commit_sha (peeled_sha) ? xstrdup (peeled_sha) : NULL;
    }
  if (g->checksum && !ps_str_has_prefix (r->commit, g->checksum)
      && !(r->peeled && ps_str_has_prefix (r->peeled, g->checksum)))
    return ps_error_set (err, 400, "op %s: git.checksum %s does not match %s (%s of %s)", digest, g->checksum,
                         r->commit, *g->ref ? g->ref : "HEAD", g->remote);

  /* gitSourceHandler.shaToCacheKey: the commit, or what an annotated tag
     points to when its tag object is not kept in .git */
  const char *sha = r->peeled && !g->keep_git_dir ? r->peeled : r->commit;
  ps_buf k = { 0 };
  ps_buf_printf (&k, "git:%s", sha);
  if (g->keep_git_dir)
    ps_buf_printf (&k, ".git#%s", r->used_ref ? r->used_ref : "");
  if (*g->subdir)
    ps_buf_printf (&k, ":%s", g->subdir);
  if (g->skip_submodules)
    ps_buf_puts (&k, "(skip-submodules)");
  r->key = ps_buf_steal (&k);
  return 0;
}

/* Fetch r->commit into the repository at `work`, shallow when the
   server allows it. */
static int
git_fetch (struct llb_remote *r, solver_job *job, const char *work, ps_error **err)
{
  cleanup_error ps_error *e1 = NULL;
  if (r->used_ref)
    {
      cleanup_free char *spec = xasprintf ("+%s:%s", r->used_ref, r->used_ref);
      cleanup_free char *got = NULL;
      if (git_run (job, work, NULL, err, "fetch", "-q", "--depth=1", "--no-tags", "--update-head-ok", "--", "origin",
                   spec, NULL) < 0
          || git_run (job, work, &got, err, "rev-parse", "--verify", "-q", r->used_ref, NULL) < 0)
        return -1;
      got[strcspn (got, "\n")] = '\0';
      if (strcmp (got, r->commit) == 0)
        return 0;
      /* the ref moved since ls-remote: still build what the key names */
      if (git_run (job, work, NULL, &e1, "fetch", "-q", "--depth=1", "--no-tags", "--", "origin", r->commit, NULL) < 0)
        return ps_error_set (err, 502, "%s of %s moved from %s to %s while it was fetched, and the server does not "
                                       "serve %s by its sha: %s", r->used_ref, r->git.remote, r->commit, got,
                             r->commit, e1->msg);
      return git_run (job, work, NULL, err, "update-ref", "--no-deref", r->used_ref, r->commit, NULL);
    }
  if (git_run (job, work, NULL, &e1, "fetch", "-q", "--depth=1", "--no-tags", "--", "origin", r->commit, NULL) == 0)
    return 0;
  if (e1->status == 499)
    return ps_error_set (err, 499, "cancelled");
  /* servers that only serve advertised refs (protocol v0/v1 without
     uploadpack.allowAnySHA1InWant): everything, then look for it */
  if (git_run (job, work, NULL, err, "fetch", "-q", "--tags", "--", "origin", NULL) < 0)
    return -1;
  cleanup_free char *obj = xasprintf ("%s^{commit}", r->commit);
  cleanup_error ps_error *e2 = NULL;
  if (git_run (job, work, NULL, &e2, "cat-file", "-e", obj, NULL) < 0)
    return ps_error_set (err, 400, "op %s: commit %s is not in %s", r->v->digest, r->commit, r->git.remote);
  return 0;
}

/* Every component of `sub` under `top` is a real directory (no symlink
   can take the copy elsewhere), as BuildKit's validateDirsOnly. */
static int
check_subdir (const char *top, const char *sub, ps_error **err)
{
  ps_buf p = { 0 };
  ps_buf_puts (&p, top);
  cleanup_free char *copy = xstrdup (sub);
  char *save = NULL;
  int ret = 0;
  for (char *c = strtok_r (copy, "/", &save); c && ret == 0; c = strtok_r (NULL, "/", &save))
    {
      ps_buf_printf (&p, "/%s", c);
      struct stat st;
      if (lstat (p.data, &st) < 0 || !S_ISDIR (st.st_mode))
        ret = ps_error_set (err, 400, "subdir \"%s\": \"%s\" is not a directory in the checkout", sub,
                            p.data + strlen (top) + 1);
    }
  ps_buf_free (&p);
  return ret;
}

static int
git_materialize (struct llb_remote *r, const char *rootfs, solver_job *job, ps_error **err)
{
  const struct llb_git_spec *g = &r->git;
  if (ensure_dir (r, err) < 0)
    return -1;
  cleanup_free char *work = xasprintf ("%s/checkout", r->dir);
  cleanup_free char *obj = xasprintf ("%s^{commit}", r->commit);
  if (git_run (job, NULL, NULL, err, "init", "-q", "--initial-branch=master", "--", work, NULL) < 0
      || git_run (job, work, NULL, err, "remote", "add", "--", "origin", g->remote, NULL) < 0
      || git_fetch (r, job, work, err) < 0
      || git_run (job, work, NULL, err, "checkout", "-q", "--detach", obj, NULL) < 0)
    return ps_error_wrap (err, "check out %s of %s", r->commit, g->remote);
  cleanup_free char *modules = xasprintf ("%s/.gitmodules", work);
  if (!g->skip_submodules && access (modules, F_OK) == 0
      && git_run (job, work, NULL, err, "submodule", "update", "--init", "--recursive", "--depth=1", NULL) < 0)
    return ps_error_wrap (err, "submodules of %s", g->remote);

  cleanup_free char *gitdir = xasprintf ("%s/.git", work);
  if (g->keep_git_dir && *g->subdir == '\0')
    {
      /* as BuildKit leaves it: HEAD detached at the commit, the ref it
         was found under, no reflog or FETCH_HEAD */
      if (git_run (job, work, NULL, err, "reflog", "expire", "--all", "--expire=now", NULL) < 0)
        return -1;
      cleanup_free char *fh = xasprintf ("%s/FETCH_HEAD", gitdir);
      unlink (fh);
    }
  else if (ps_rm_rf (gitdir, err) < 0)
    return -1;

  cleanup_free char *src = *g->subdir ? xasprintf ("%s/%s", work, g->subdir) : xstrdup (work);
  if (*g->subdir && check_subdir (work, g->subdir, err) < 0)
    return ps_error_wrap (err, "op %s", r->v->digest);
  if (job && solver_job_cancelled (job))
    return ps_error_set (err, 499, "cancelled");
  return rootfs_copy_dir (src, rootfs, err);
}

/* ---- the interface ----------------------------------------------------------------- */

int
llb_remote_resolve (const struct llb_vertex *v, const char *tmp_root, const char *state_dir, solver_job *job,
                    struct llb_remote **out, ps_error **err)
{
  cleanup_llb_remote struct llb_remote *r = xcalloc (1, sizeof *r);
  r->v = v;
  r->tmp_root = xstrdup (tmp_root);
  if (ps_str_has_prefix (v->op->source->identifier, "git://"))
    {
      r->kind = REMOTE_GIT;
      if (llb_remote_git_spec (v, &r->git, err) < 0 || git_resolve (r, job, err) < 0)
        return -1;
    }
  else
    {
      r->kind = REMOTE_HTTP;
      if (parse_http (v, &r->http, err) < 0)
        return -1;
      if (r->http.checksum)
        {
          /* pinned: the identity is known without fetching anything
             (BuildKit names the file from the URL here too) */
          snprintf (r->sha256, sizeof r->sha256, "%s", r->http.checksum);
          r->filename = llb_remote_http_filename (r->http.url, r->http.filename, NULL);
        }
      else
        {
          struct http_validators cond;
          bool have = false, unchanged = false;
          if (state_dir)
            {
              cleanup_free char *dir = xasprintf ("%s/" CACHE_HTTP_RECORDS, state_dir);
              cleanup_free char *what = xasprintf ("%s\n%s\n%s", r->http.url, r->http.accept ? r->http.accept : "",
                                                   r->http.user_agent ? r->http.user_agent : "");
              char key[65];
              ps_sha256_hex (what, strlen (what), key);
              if (ps_mkdir_p (dir, 0700, NULL) == 0)
                r->validators = xasprintf ("%s/%s.json", dir, key);
              have = validators_load (r, &cond);
            }
          int dl = http_download (r, job, have ? &cond : NULL, &unchanged, err);
          if (have)
            {
              if (unchanged)
                cache_record_touch (r->validators); /* in use: prune by age keeps it */
              http_validators_free (&cond);
            }
          if (dl < 0)
            return -1;
        }
      http_set_key (r);
    }
  *out = steal_pointer (&r);
  return 0;
}

int
llb_remote_materialize (struct llb_remote *r, const char *rootfs, solver_job *job, ps_error **err)
{
  if (r->kind == REMOTE_GIT)
    return git_materialize (r, rootfs, job, err);
  return http_materialize (r, rootfs, job, err);
}

int
llb_remote_commit (struct llb_remote *r, solver_job *job, char **image, ps_error **err)
{
  struct buildah_wc w;
  if (llb_wc_from (NULL, true, &w, err) < 0)
    return -1;
  int ret = llb_remote_materialize (r, w.mnt, job, err);
  if (ret == 0)
    ret = llb_wc_commit_rm (&w, image, err);
  llb_wc_remove (&w);
  return ret;
}
