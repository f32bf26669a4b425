/* grpc_tls.c — TLS under a gRPC server connection (see grpc_tls.h).
 *
 * The socket stays non-blocking throughout.  OpenSSL reads one record at
 * a time (read_ahead stays off), so a record not yet read is still in the
 * kernel's buffer and wakes poll(); only the rest of a record already
 * decrypted can hide from it, and SSL_pending reports exactly that.  Writes
 * are partial (SSL_MODE_ENABLE_PARTIAL_WRITE) from a buffer that may move
 * between retries (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER): session/grpc.c
 * retries with the same bytes, perhaps followed by more. */
#define _GNU_SOURCE
#include "session/grpc_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "session/session_limits.h"

struct grpc_tls_server
{
  SSL_CTX *ctx;
};

struct grpc_tls_conn
{
  SSL *ssl;
  bool broken; /* a fatal error: no close_notify, no more SSL calls */
  struct grpc_transport transport;
};

/* OpenSSL's error queue as one line ("reason: reason"), emptied; `fallback`
   when it holds nothing.  malloc'd. */
static char *
openssl_errors (const char *fallback)
{
  ps_buf b = { 0 };
  unsigned long e;
  const char *data;
  int flags;
  while ((e = ERR_get_error_all (NULL, NULL, NULL, &data, &flags)) != 0)
    {
      const char *reason = ERR_reason_error_string (e);
      char code[32];
      if (reason == NULL)
        {
          snprintf (code, sizeof code, "error %#lx", e);
          reason = code;
        }
      if (b.len)
        ps_buf_append (&b, ": ", 2);
      ps_buf_append (&b, reason, strlen (reason));
      if ((flags & ERR_TXT_STRING) && data && *data)
        {
          ps_buf_append (&b, " (", 2);
          ps_buf_append (&b, data, strlen (data));
          ps_buf_append (&b, ")", 1);
        }
    }
  if (b.len == 0)
    return xstrdup (fallback);
  ps_buf_append (&b, "", 1);
  return ps_buf_steal (&b);
}

/* A PEM file's bytes in a memory BIO: the file is read here (bounded) so a
   missing or unreadable one is reported as such, not as a parse error. */
static BIO *
pem_file (const char *what, const char *path, ps_error **err)
{
  char *data = NULL;
  size_t len = 0;
  if (ps_read_file (path, PS_MAX_TLS_FILE_BYTES, &data, &len, err) < 0)
    return ps_error_wrap (err, "%s", what), NULL;
  BIO *b = BIO_new (BIO_s_mem ());
  if (b == NULL || BIO_write (b, data, (int) len) != (int) len)
    {
      BIO_free (b);
      explicit_bzero (data, len);
      free (data);
      return ps_error_set (err, 500, "%s %s: out of memory", what, path), NULL;
    }
  explicit_bzero (data, len);
  free (data);
  return b;
}

/* An encrypted key would have OpenSSL prompt on the terminal: refuse. */
static int
no_passphrase (char *buf, int size, int rwflag, void *ud)
{
  return -1;
}

static int
load_certificate (SSL_CTX *ctx, const char *path, ps_error **err)
{
  BIO *b = pem_file ("server certificate", path, err);
  if (b == NULL)
    return -1;
  int ret = 0;
  X509 *leaf = PEM_read_bio_X509_AUX (b, NULL, no_passphrase, NULL);
  if (leaf == NULL || SSL_CTX_use_certificate (ctx, leaf) != 1)
    {
      cleanup_free char *why = openssl_errors ("no PEM certificate in it");
      ret = ps_error_set (err, 400, "server certificate %s: %s", path, why);
    }
  X509_free (leaf);
  /* The chain the client needs to reach its CA, if the file has one. */
  X509 *x;
  while (ret == 0 && (x = PEM_read_bio_X509 (b, NULL, no_passphrase, NULL)) != NULL)
    if (SSL_CTX_add0_chain_cert (ctx, x) != 1)
      {
        X509_free (x);
        cleanup_free char *why = openssl_errors ("cannot add it to the chain");
        ret = ps_error_set (err, 400, "server certificate %s: intermediate certificate: %s", path, why);
      }
  ERR_clear_error (); /* the end of the file reads as "no start line" */
  BIO_free (b);
  return ret;
}

static int
load_key (SSL_CTX *ctx, const char *path, ps_error **err)
{
  BIO *b = pem_file ("server key", path, err);
  if (b == NULL)
    return -1;
  int ret = 0;
  EVP_PKEY *key = PEM_read_bio_PrivateKey (b, NULL, no_passphrase, NULL);
  BIO_free (b);
  if (key == NULL)
    {
      cleanup_free char *why = openssl_errors ("no PEM private key in it");
      ret = ps_error_set (err, 400, "server key %s: %s (an unencrypted PEM private key is needed)", path, why);
    }
  else if (SSL_CTX_use_PrivateKey (ctx, key) != 1 || SSL_CTX_check_private_key (ctx) != 1)
    {
      cleanup_free char *why = openssl_errors ("key values mismatch");
      ret = ps_error_set (err, 400, "server key %s does not belong to the server certificate (%s)", path, why);
    }
  EVP_PKEY_free (key);
  return ret;
}

static int
load_client_ca (SSL_CTX *ctx, const char *path, ps_error **err)
{
  BIO *b = pem_file ("client CA", path, err);
  if (b == NULL)
    return -1;
  X509_STORE *store = SSL_CTX_get_cert_store (ctx);
  int n = 0, ret = 0;
  X509 *x;
  while (ret == 0 && (x = PEM_read_bio_X509 (b, NULL, no_passphrase, NULL)) != NULL)
    {
      /* Trusted for verifying, and named in the CertificateRequest so the
         client picks the right certificate. */
      if (X509_STORE_add_cert (store, x) != 1 || SSL_CTX_add_client_CA (ctx, x) != 1)
        {
          cleanup_free char *why = openssl_errors ("cannot use it");
          ret = ps_error_set (err, 400, "client CA %s: certificate %d: %s", path, n + 1, why);
        }
      X509_free (x);
      n++;
    }
  ERR_clear_error ();
  BIO_free (b);
  if (ret == 0 && n == 0)
    ret = ps_error_set (err, 400, "client CA %s: no PEM certificate in it", path);
  if (ret == 0)
    SSL_CTX_set_verify (ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  return ret;
}

/* ALPN: "h2" or nothing.  A client that offers protocols but not h2 is
   refused (no_application_protocol), as Go's TLS server does; one that
   offers none may go on (and then has to speak HTTP/2 anyway). */
static int
alpn_select (SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned inlen,
             void *ud)
{
  static const unsigned char h2[] = { 2, 'h', '2' };
  unsigned char *chosen = NULL;
  if (SSL_select_next_proto (&chosen, outlen, h2, sizeof h2, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

grpc_tls_server *
grpc_tls_server_new (const char *cert_file, const char *key_file, const char *ca_file, ps_error **err)
{
  ERR_clear_error ();
  SSL_CTX *ctx = SSL_CTX_new (TLS_server_method ());
  if (ctx == NULL)
    {
      cleanup_free char *why = openssl_errors ("unknown error");
      return ps_error_set (err, 500, "TLS: %s", why), NULL;
    }
  SSL_CTX_set_min_proto_version (ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode (ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* No renegotiation (a client could make us work for nothing), no
     resumption (BuildKit clients do not resume; nothing to keep), and an
     EOF without close_notify is an end like any other: HTTP/2 framing
     already tells a cut connection from a finished one. */
  SSL_CTX_set_options (ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF
                                | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_session_cache_mode (ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets (ctx, 0);
  SSL_CTX_set_alpn_select_cb (ctx, alpn_select, NULL);
  if (load_certificate (ctx, cert_file, err) < 0 || load_key (ctx, key_file, err) < 0
      || (ca_file && load_client_ca (ctx, ca_file, err) < 0))
    {
      SSL_CTX_free (ctx);
      return NULL;
    }
  grpc_tls_server *s = xcalloc (1, sizeof *s);
  s->ctx = ctx;
  return s;
}

void
grpc_tls_server_free (grpc_tls_server *s)
{
  if (s == NULL)
    return;
  SSL_CTX_free (s->ctx); /* each SSL holds a reference of its own */
  free (s);
}

/* ---- the transport ---------------------------------------------------------------- */

/* A failed SSL_read_ex / SSL_write_ex as read(2) / send(2) would say it. */
static ssize_t
tls_failed (grpc_tls_conn *t, int r, bool reading, short *wait)
{
  int e = SSL_get_error (t->ssl, r);
  switch (e)
    {
    case SSL_ERROR_WANT_READ:
      *wait = POLLIN;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_WANT_WRITE:
      *wait = POLLOUT;
      errno = EAGAIN;
      return -1;
    case SSL_ERROR_ZERO_RETURN: /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
      if (reading)
        return 0;
      t->broken = true;
      errno = EPIPE;
      return -1;
    case SSL_ERROR_SYSCALL:
      t->broken = true;
      if (errno == 0)
        errno = ECONNRESET;
      return -1;
    default:
      {
        t->broken = true;
        cleanup_free char *why = openssl_errors ("TLS error");
        ps_debug ("TLS %s: %s", reading ? "read" : "write", why);
        errno = EPROTO;
        return -1;
      }
    }
}

static ssize_t
tls_read (void *ud, void *buf, size_t len, short *wait)
{
  grpc_tls_conn *t = ud;
  size_t n = 0;
  ERR_clear_error ();
  int r = SSL_read_ex (t->ssl, buf, len, &n);
  return r == 1 ? (ssize_t) n : tls_failed (t, r, true, wait);
}

static ssize_t
tls_write (void *ud, const void *buf, size_t len, short *wait)
{
  grpc_tls_conn *t = ud;
  size_t n = 0;
  ERR_clear_error ();
  int r = SSL_write_ex (t->ssl, buf, len, &n);
  return r == 1 ? (ssize_t) n : tls_failed (t, r, false, wait);
}

static bool
tls_pending (void *ud)
{
  grpc_tls_conn *t = ud;
  return SSL_pending (t->ssl) > 0;
}

/* ---- the handshake ---------------------------------------------------------------- */

/* Why the handshake failed, for the log: OpenSSL's reason, and for a
   refused client certificate what was wrong with it. */
static char *
handshake_error (SSL *ssl, int r)
{
  int e = SSL_get_error (ssl, r);
  if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN)
    {
      int saved = errno;
      cleanup_free char *queued = openssl_errors ("");
      if (*queued)
        return xstrdup (queued);
      return saved && e == SSL_ERROR_SYSCALL ? xasprintf ("%s", strerror (saved))
                                             : xstrdup ("the client closed the connection");
    }
  cleanup_free char *why = openssl_errors ("TLS error");
  long verify = SSL_get_verify_result (ssl);
  if (verify != X509_V_OK)
    return xasprintf ("%s: client certificate: %s", why, X509_verify_cert_error_string (verify));
  return xstrdup (why);
}

/* After a refused handshake: the alert that says why is on its way, but
   closing a socket with unread bytes (the client's next flight, often
   sent with its certificate) resets the connection, and the client may
   never read the alert ("connection reset by peer" instead of "tls:
   certificate required").  So: end our side, and read what still comes
   until the client closes, for PS_GRPC_TLS_LINGER_MS at most. */
static void
linger_after_alert (int fd, int wake_fd)
{
  if (shutdown (fd, SHUT_WR) < 0)
    return;
  int64_t deadline = ps_deadline_ns_after_ms (PS_GRPC_TLS_LINGER_MS);
  char sink[4096];
  for (;;)
    {
      int64_t left_ms = (deadline - ps_monotonic_ns ()) / 1000000;
      if (left_ms <= 0)
        return;
      struct pollfd p[2] = {
        { .fd = fd, .events = POLLIN },
        { .fd = wake_fd, .events = POLLIN },
      };
      int n = poll (p, wake_fd >= 0 ? 2 : 1, (int) left_ms);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0 || (wake_fd >= 0 && p[1].revents))
        return;
      ssize_t r = read (fd, sink, sizeof sink);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
        return;
    }
}

grpc_tls_conn *
grpc_tls_accept (grpc_tls_server *s, int fd, int timeout_ms, int wake_fd, ps_error **err)
{
  int fl = fcntl (fd, F_GETFL);
  if (fl < 0 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return ps_error_set_errno (err, 500, errno, "TLS: set the socket non-blocking"), NULL;
  ERR_clear_error ();
  SSL *ssl = SSL_new (s->ctx);
  if (ssl == NULL || SSL_set_fd (ssl, fd) != 1)
    {
      cleanup_free char *why = openssl_errors ("out of memory");
      SSL_free (ssl);
      return ps_error_set (err, 500, "TLS: %s", why), NULL;
    }
  int64_t deadline = ps_deadline_ns_after_ms (timeout_ms);
  for (;;)
    {
      ERR_clear_error ();
      errno = 0;
      int r = SSL_accept (ssl);
      if (r == 1)
        break;
      int e = SSL_get_error (ssl, r);
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        {
          cleanup_free char *why = handshake_error (ssl, r);
          SSL_free (ssl);
          if (e == SSL_ERROR_SSL)
            linger_after_alert (fd, wake_fd);
          return ps_error_set (err, 400, "TLS handshake failed: %s", why), NULL;
        }
      int64_t left_ms = (deadline - ps_monotonic_ns ()) / 1000000;
      struct pollfd p[2] = {
        { .fd = fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT },
        { .fd = wake_fd, .events = POLLIN },
      };
      int n = left_ms > 0 ? poll (p, wake_fd >= 0 ? 2 : 1, (int) left_ms) : 0;
      if (n < 0 && errno == EINTR)
        continue;
      const char *why = n < 0                      ? strerror (errno)
                        : n == 0                   ? "no handshake in time"
                        : wake_fd >= 0 && p[1].revents ? "the daemon is stopping"
                                                   : NULL;
      if (why)
        {
          SSL_free (ssl);
          return ps_error_set (err, 408, "TLS handshake: %s (%d s at most)", why, timeout_ms / 1000), NULL;
        }
    }
  grpc_tls_conn *t = xcalloc (1, sizeof *t);
  t->ssl = ssl;
  t->transport = (struct grpc_transport){
    .read = tls_read,
    .write = tls_write,
    .pending = tls_pending,
    .ud = t,
  };
  return t;
}

const struct grpc_transport *
grpc_tls_transport (grpc_tls_conn *t)
{
  return &t->transport;
}

char *
grpc_tls_describe (grpc_tls_conn *t)
{
  const unsigned char *alpn = NULL;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected (t->ssl, &alpn, &alpn_len);
  char cn[256] = "";
  X509 *peer = SSL_get1_peer_certificate (t->ssl);
  if (peer)
    X509_NAME_get_text_by_NID (X509_get_subject_name (peer), NID_commonName, cn, sizeof cn);
  char *s = xasprintf ("%s, ALPN %.*s, %s%s", SSL_get_version (t->ssl), alpn_len ? (int) alpn_len : 4,
                       alpn_len ? (const char *) alpn : "none", peer ? "client CN=" : "no client certificate", cn);
  X509_free (peer);
  return s;
}

void
grpc_tls_close (grpc_tls_conn *t)
{
  if (t == NULL)
    return;
  /* One try: the socket is non-blocking and the peer may be gone. */
  if (!t->broken)
    {
      ERR_clear_error ();
      SSL_shutdown (t->ssl);
    }
  ERR_clear_error ();
  SSL_free (t->ssl);
  free (t);
}
