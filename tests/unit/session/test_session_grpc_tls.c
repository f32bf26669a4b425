/* test_session_grpc_tls.c — session/grpc_tls.c with real OpenSSL on both
 * ends of a socketpair: loading the server's files (and the errors that
 * name them), the handshake (mutual TLS, ALPN h2, its deadline, the wake
 * at shutdown), and the transport contract session/grpc.c relies on
 * (EAGAIN with what to poll for, partial writes retried, bytes pending in
 * OpenSSL), with megabytes both ways.  The certificates are made once by
 * the openssl CLI in a temporary directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/grpc_tls.h"
#include "tests/unit/unit.h"

static char pki[] = "/tmp/podsolve-unit-tls-XXXXXX";

static void
pki_make (void)
{
  signal (SIGPIPE, SIG_IGN);
  ck_assert_ptr_nonnull (mkdtemp (pki));
  cleanup_free char *cmd = xasprintf (
      "set -e; cd %s; exec >/dev/null 2>&1;"
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=unit-ca;"
      "printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext;"
      "for who in server client; do"
      "  openssl req -newkey rsa:2048 -nodes -keyout $who-key.pem -out $who.csr -subj /CN=$who;"
      "  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out $who.pem -days 2"
      "    $( [ $who = server ] && echo -extfile server.ext );"
      "done;"
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue-key.pem -out rogue.pem -days 2 -subj /CN=rogue;"
      "printf 'not a certificate\\n' > junk.pem",
      pki);
  ck_assert_int_eq (system (cmd), 0);
}

static void
pki_remove (void)
{
  cleanup_free char *cmd = xasprintf ("rm -rf %s", pki);
  ck_assert_int_eq (system (cmd), 0);
}

static char *
pki_path (const char *name)
{
  return xasprintf ("%s/%s", pki, name);
}

static grpc_tls_server *
server_new (const char *cert, const char *key, const char *ca, ps_error **err)
{
  cleanup_free char *c = pki_path (cert), *k = pki_path (key), *a = ca ? pki_path (ca) : NULL;
  return grpc_tls_server_new (c, k, a, err);
}

/* ---- loading -------------------------------------------------------------------- */

static void
assert_load_fails (const char *cert, const char *key, const char *ca, const char *want)
{
  ps_error *err = NULL;
  grpc_tls_server *s = server_new (cert, key, ca, &err);
  ck_assert_ptr_null (s);
  ck_assert_ptr_nonnull (err);
  ck_assert_msg (strstr (err->msg, want) != NULL, "%s: want \"%s\"", err->msg, want);
  ps_error_free (err);
}

START_TEST (load_errors_name_the_file_and_the_fault)
{
  assert_load_fails ("missing.pem", "server-key.pem", NULL, "server certificate: open ");
  assert_load_fails ("server.pem", "missing.pem", NULL, "server key: open ");
  assert_load_fails ("junk.pem", "server-key.pem", NULL, "junk.pem: no start line");
  assert_load_fails ("server.pem", "junk.pem", NULL, "an unencrypted PEM private key is needed");
  assert_load_fails ("server.pem", "client-key.pem", NULL, "client-key.pem does not belong to the server certificate");
  assert_load_fails ("server.pem", "server-key.pem", "junk.pem", "junk.pem: no PEM certificate in it");
  assert_load_fails ("server.pem", "server-key.pem", "missing.pem", "client CA: open ");
  ps_error *err = NULL;
  grpc_tls_server *s = server_new ("server.pem", "server-key.pem", "ca.pem", &err);
  ck_assert_ptr_nonnull (s);
  grpc_tls_server_free (s);
  ck_assert_int_eq (ERR_peek_error (), 0); /* nothing left on this thread's queue */
}
END_TEST

/* ---- a client on the other end of a socketpair ------------------------------------ */

struct client
{
  int fd;
  const char *cert;    /* "client", "rogue", or NULL for none */
  const char *alpn;    /* "h2", "http/1.1", or NULL for none */
  size_t echo_bytes;   /* after the handshake: write this many, read them back */
  bool handshake_ok;
  bool echo_ok;
  char alpn_got[16];  /* what the server chose, "" for none */
  pthread_t th;
};

static void *
client_main (void *arg)
{
  struct client *c = arg;
  SSL_CTX *ctx = SSL_CTX_new (TLS_client_method ());
  cleanup_free char *ca = pki_path ("ca.pem");
  SSL_CTX_load_verify_locations (ctx, ca, NULL);
  SSL_CTX_set_verify (ctx, SSL_VERIFY_PEER, NULL);
  if (c->cert)
    {
      cleanup_free char *cert = xasprintf ("%s/%s.pem", pki, c->cert);
      cleanup_free char *key = xasprintf ("%s/%s-key.pem", pki, c->cert);
      SSL_CTX_use_certificate_file (ctx, cert, SSL_FILETYPE_PEM);
      SSL_CTX_use_PrivateKey_file (ctx, key, SSL_FILETYPE_PEM);
    }
  SSL *ssl = SSL_new (ctx);
  SSL_set_fd (ssl, c->fd);
  SSL_set1_host (ssl, "127.0.0.1");
  if (c->alpn)
    {
      unsigned char wire[32];
      size_t n = strlen (c->alpn);
      wire[0] = (unsigned char) n;
      memcpy (wire + 1, c->alpn, n);
      SSL_set_alpn_protos (ssl, wire, (unsigned) n + 1);
    }
  /* TLS 1.3: the client's handshake ends before the server has judged its
     certificate; a refusal shows on the first read. */
  c->handshake_ok = SSL_connect (ssl) == 1;
  if (c->handshake_ok)
    {
      const unsigned char *a;
      unsigned alen;
      SSL_get0_alpn_selected (ssl, &a, &alen);
      snprintf (c->alpn_got, sizeof c->alpn_got, "%.*s", (int) alen, (const char *) a);
    }
  if (c->handshake_ok && c->echo_bytes)
    {
      char *out = xmalloc (c->echo_bytes), *in = xmalloc (c->echo_bytes);
      for (size_t i = 0; i < c->echo_bytes; i++)
        out[i] = (char) (i * 7 + i / 4096);
      size_t sent = 0, got = 0;
      /* Blocking, interleaved: the server echoes while we still send. */
      int fl = fcntl (c->fd, F_GETFL);
      fcntl (c->fd, F_SETFL, fl | O_NONBLOCK);
      while (got < c->echo_bytes)
        {
          size_t n = 0;
          bool progress = false;
          if (sent < c->echo_bytes && SSL_write_ex (ssl, out + sent, c->echo_bytes - sent, &n) == 1)
            sent += n, progress = true;
          if (SSL_read_ex (ssl, in + got, c->echo_bytes - got, &n) == 1)
            got += n, progress = true;
          else if (SSL_get_error (ssl, 0) == SSL_ERROR_ZERO_RETURN)
            break;
          if (!progress)
            {
              struct pollfd p = { .fd = c->fd, .events = POLLIN | (sent < c->echo_bytes ? POLLOUT : 0) };
              poll (&p, 1, 1000);
            }
        }
      c->echo_ok = got == c->echo_bytes && memcmp (in, out, got) == 0;
      free (out);
      free (in);
    }
  else if (c->handshake_ok)
    {
      char b;
      SSL_read (ssl, &b, 1); /* the server's verdict on our certificate */
    }
  SSL_free (ssl);
  SSL_CTX_free (ctx);
  ERR_clear_error ();
  shutdown (c->fd, SHUT_RDWR);
  return NULL;
}

struct conn_pair
{
  int sv[2];
  struct client c;
};

static void
pair_start (struct conn_pair *p, const char *cert, const char *alpn, size_t echo_bytes)
{
  ck_assert_int_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->sv), 0);
  p->c = (struct client){ .fd = p->sv[1], .cert = cert, .alpn = alpn, .echo_bytes = echo_bytes };
  pthread_create (&p->c.th, NULL, client_main, &p->c);
}

static void
pair_end (struct conn_pair *p)
{
  close (p->sv[0]);
  pthread_join (p->c.th, NULL);
  close (p->sv[1]);
}

/* Echo through the transport as session/grpc.c's loop drives it: poll
   for what the last call asked for, read before polling while OpenSSL
   holds bytes, and retry a write with the same bytes (and more after). */
static size_t
transport_echo (const struct grpc_transport *t, int fd, size_t want)
{
  ps_buf pend = { 0 };
  size_t off = 0, echoed = 0, received = 0;
  short read_wait = POLLIN, write_wait = POLLOUT;
  char buf[64 * 1024];
  while (echoed < want)
    {
      while (off < pend.len)
        {
          write_wait = POLLOUT;
          ssize_t w = t->write (t->ud, pend.data + off, pend.len - off, &write_wait);
          if (w < 0)
            {
              ck_assert_int_eq (errno, EAGAIN);
              break;
            }
          off += (size_t) w;
          echoed += (size_t) w;
        }
      if (off == pend.len)
        {
          ps_buf_reset (&pend);
          off = 0;
        }
      if (echoed == want)
        break;
      bool buffered = t->pending (t->ud);
      struct pollfd p = { .fd = fd, .events = (short) (read_wait | (off < pend.len ? write_wait : 0)) };
      if (!buffered)
        ck_assert_int_gt (poll (&p, 1, 10000), 0);
      if (buffered || (p.revents & (read_wait | POLLHUP | POLLERR)))
        {
          read_wait = POLLIN;
          /* Small reads: a record is handed out in parts, the rest pending. */
          ssize_t r = t->read (t->ud, buf, received % 3 ? 1000 : sizeof buf, &read_wait);
          if (r < 0)
            ck_assert_int_eq (errno, EAGAIN);
          ck_assert_int_ne (r, 0);
          if (r > 0)
            {
              ps_buf_append (&pend, buf, (size_t) r);
              received += (size_t) r;
            }
        }
    }
  ps_buf_free (&pend);
  return echoed;
}

START_TEST (mutual_tls_handshake_then_megabytes_both_ways)
{
  ps_error *err = NULL;
  grpc_tls_server *s = server_new ("server.pem", "server-key.pem", "ca.pem", &err);
  ck_assert_ptr_nonnull (s);
  struct conn_pair p;
  const size_t n = 3 * 1024 * 1024 + 17;
  pair_start (&p, "client", "h2", n);
  grpc_tls_conn *t = grpc_tls_accept (s, p.sv[0], 10000, -1, &err);
  ck_assert_msg (t != NULL, "%s", err ? err->msg : "");
  grpc_tls_server_free (s); /* the connection keeps what it needs */
  char *what = grpc_tls_describe (t);
  ck_assert_msg (strstr (what, "ALPN h2, client CN=client") != NULL, "%s", what);
  free (what);
  ck_assert_uint_eq (transport_echo (grpc_tls_transport (t), p.sv[0], n), n);
  grpc_tls_close (t);
  pair_end (&p);
  ck_assert (p.c.echo_ok);
  ck_assert_str_eq (p.c.alpn_got, "h2");
}
END_TEST

static void
assert_refused (const char *server_ca, const char *cert, const char *alpn, const char *want)
{
  ps_error *err = NULL;
  grpc_tls_server *s = server_new ("server.pem", "server-key.pem", server_ca, &err);
  ck_assert_ptr_nonnull (s);
  struct conn_pair p;
  pair_start (&p, cert, alpn, 0);
  grpc_tls_conn *t = grpc_tls_accept (s, p.sv[0], 10000, -1, &err);
  ck_assert_ptr_null (t);
  ck_assert_msg (strstr (err->msg, want) != NULL, "%s: want \"%s\"", err->msg, want);
  ps_error_free (err);
  grpc_tls_server_free (s);
  pair_end (&p);
}

START_TEST (handshake_refusals_say_why)
{
  assert_refused ("ca.pem", NULL, "h2", "TLS handshake failed: peer did not return a certificate");
  assert_refused ("ca.pem", "rogue", "h2", "certificate verify failed: client certificate: self-signed certificate");
  assert_refused (NULL, NULL, "http/1.1", "TLS handshake failed: no application protocol");
}
END_TEST

START_TEST (no_client_certificate_needed_without_a_ca_nor_alpn_without_an_offer)
{
  ps_error *err = NULL;
  grpc_tls_server *s = server_new ("server.pem", "server-key.pem", NULL, &err);
  struct conn_pair p;
  pair_start (&p, NULL, NULL, 1000);
  grpc_tls_conn *t = grpc_tls_accept (s, p.sv[0], 10000, -1, &err);
  ck_assert_msg (t != NULL, "%s", err ? err->msg : "");
  ck_assert_uint_eq (transport_echo (grpc_tls_transport (t), p.sv[0], 1000), 1000);
  char *what = grpc_tls_describe (t);
  ck_assert_msg (strstr (what, "ALPN none, no client certificate") != NULL, "%s", what);
  free (what);
  grpc_tls_close (t);
  grpc_tls_server_free (s);
  pair_end (&p);
  ck_assert_str_eq (p.c.alpn_got, "");
}
END_TEST

START_TEST (a_silent_peer_meets_the_deadline_and_a_stopping_daemon_the_wake)
{
  ps_error *err = NULL;
  grpc_tls_server *s = server_new ("server.pem", "server-key.pem", NULL, &err);
  int sv[2];
  ck_assert_int_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ck_assert_ptr_null (grpc_tls_accept (s, sv[0], 200, -1, &err));
  ck_assert_msg (strstr (err->msg, "TLS handshake: no handshake in time") != NULL, "%s", err->msg);
  ps_error_free (err);
  err = NULL;
  int wake = eventfd (1, EFD_CLOEXEC); /* already readable: the daemon is stopping */
  ck_assert_ptr_null (grpc_tls_accept (s, sv[0], 60000, wake, &err));
  ck_assert_msg (strstr (err->msg, "TLS handshake: the daemon is stopping") != NULL, "%s", err->msg);
  ps_error_free (err);
  close (wake);
  close (sv[0]);
  close (sv[1]);
  grpc_tls_server_free (s);
}
END_TEST

START_TEST (garbage_is_not_a_handshake)
{
  ps_error *err = NULL;
  grpc_tls_server *s = server_new ("server.pem", "server-key.pem", NULL, &err);
  int sv[2];
  ck_assert_int_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  const char h2c[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  ck_assert_int_eq (write (sv[1], h2c, sizeof h2c - 1), (ssize_t) sizeof h2c - 1);
  shutdown (sv[1], SHUT_WR);
  ck_assert_ptr_null (grpc_tls_accept (s, sv[0], 10000, -1, &err));
  ck_assert_msg (strstr (err->msg, "TLS handshake failed: ") != NULL, "%s", err->msg);
  ps_error_free (err);
  close (sv[0]);
  close (sv[1]);
  grpc_tls_server_free (s);
}
END_TEST

PS_TEST_SUITE (session_grpc_tls)
{
  Suite *s = suite_create ("session_grpc_tls");
  TCase *tc = tcase_create ("tls");
  tcase_add_unchecked_fixture (tc, pki_make, pki_remove);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, load_errors_name_the_file_and_the_fault);
  tcase_add_test (tc, mutual_tls_handshake_then_megabytes_both_ways);
  tcase_add_test (tc, handshake_refusals_say_why);
  tcase_add_test (tc, no_client_certificate_needed_without_a_ca_nor_alpn_without_an_offer);
  tcase_add_test (tc, a_silent_peer_meets_the_deadline_and_a_stopping_daemon_the_wake);
  tcase_add_test (tc, garbage_is_not_a_handshake);
  suite_add_tcase (s, tc);
  return s;
}
