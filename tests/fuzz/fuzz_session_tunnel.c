/* fuzz_session_tunnel — Control.Session, the grpchijack tunnel
 * (session/tunnel.c): a session's HTTP/2 carried inside BytesMessages on a
 * gRPC call, as buildx and buildctl open it on --buildkit-listen and
 * POST /grpc.  A real gRPC client (session/grpc.c's, as the unit tests use
 * it) calls a real grpc_serve over a socketpair; the input says what it
 * sends.
 *
 * Two service ends behind the same method path, chosen by the input:
 *  - recording: session_tunnel_pump on one end of a socketpair, a thread on
 *    the other playing the session — it writes the input's session bytes,
 *    then reads until EOF.  Checked: the session read exactly the data of
 *    the client's messages, in order, up to the first message that is not
 *    a BytesMessage (a prefix of it when the client cancels), however the
 *    stream was cut into messages; the client received exactly the
 *    session's bytes as BytesMessages, however the pump chunked them;
 *  - real: session_tunnel_serve, the daemon's Control.Session — identity
 *    from the metadata, session_serve_upgraded on the socketpair, so the
 *    bytes reach the session's HTTP/2 client (its preface must come back
 *    first).  Checked: the call ends, and the session leaves the registry.
 * In both: every handler thread ends once the connection is gone, nothing
 * leaks or crashes.
 *
 * Input: a flags byte (bit 0 real, bit 1 cancel instead of half-close,
 * bit 2 metadata without a uuid), then records [op][n][n bytes] while they
 * last: op % 4 = 0 a BytesMessage of the bytes, 1 the bytes as a raw
 * message, 2 bytes the session writes (recording), 3 a BytesMessage of the
 * bytes repeated to n * 521 bytes (messages across 64 KiB chunks and flow
 * control windows). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "control.pb-c.h"
#include "session/grpc.h"
#include "session/session.h"
#include "session/tunnel.h"

#define PATH_REAL "/moby.buildkit.v1.Control/Session"
#define PATH_RECORD "/fuzz.Tunnel/Record"
#define WAIT_MS 10000

static void
die (const char *what)
{
  fprintf (stderr, "fuzz_session_tunnel: %s\n", what);
  abort ();
}

/* ---- the recording session end ---------------------------------------------------- */

static ps_buf session_out; /* what the session writes (set per input) */
static ps_buf session_in;  /* what it read */

static void *
session_main (void *arg)
{
  int fd = *(int *) arg;
  for (size_t off = 0; off < session_out.len;)
    {
      ssize_t w = send (fd, session_out.data + off, session_out.len - off, MSG_NOSIGNAL);
      if (w <= 0)
        break;
      off += (size_t) w;
    }
  char buf[65536];
  ssize_t n;
  while ((n = read (fd, buf, sizeof buf)) > 0)
    ps_buf_append (&session_in, buf, (size_t) n);
  return NULL;
}

static void
record (grpc_call *call, void *ud)
{
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    die ("socketpair");
  pthread_t th;
  pthread_create (&th, NULL, session_main, &sv[0]);
  session_tunnel_pump (call, sv[1]);
  pthread_join (th, NULL);
  close (sv[0]);
  close (sv[1]);
  grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

static void
real (grpc_call *call, void *ud)
{
  session_tunnel_serve (call);
}

static const struct grpc_method methods[] = {
  { PATH_REAL, real, NULL },
  { PATH_RECORD, record, NULL },
};
static const struct grpc_service_table table = { methods, 2 };

/* ---- the two connection ends ---------------------------------------------------------- */

static void *
serve_main (void *arg)
{
  ps_error *err = NULL;
  if (grpc_serve (*(int *) arg, NULL, 0, "fuzz", &table, &err) < 0)
    ps_error_free (err);
  return NULL;
}

static void *
client_main (void *arg)
{
  ps_error *err = NULL;
  if (grpc_conn_run (arg, &err) < 0)
    ps_error_free (err);
  return NULL;
}

/* Messages from the tunnel, their data appended to `got`, until `want`
   bytes are there (or the call ends / WAIT_MS pass).  -1 once the call
   has ended. */
static int
receive (grpc_call *call, ps_buf *got, size_t want)
{
  while (got->len < want)
    {
      void *msg = NULL;
      size_t len = 0;
      ps_error *err = NULL;
      int r = grpc_call_recv (call, &msg, &len, WAIT_MS, &err);
      if (r < 0)
        {
          bool timeout = err->status == 504 && grpc_call_status (call) < 0;
          ps_error_free (err);
          if (timeout)
            die ("no message from the tunnel for 10 s");
          return -1;
        }
      if (r == 0)
        return -1;
      Moby__Buildkit__V1__BytesMessage *m = moby__buildkit__v1__bytes_message__unpack (NULL, len, msg);
      free (msg);
      if (m == NULL)
        die ("the tunnel sent something that is not a BytesMessage");
      ps_buf_append (got, m->data.data, m->data.len);
      moby__buildkit__v1__bytes_message__free_unpacked (m, NULL);
    }
  return 0;
}

static atomic_uint uuid_counter;

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static bool quiet;
  if (!quiet)
    {
      ps_log_set_level (PS_LOG_ERROR);
      quiet = true;
    }
  if (size == 0)
    return 0;
  uint8_t flags = data[0];
  bool is_real = flags & 1, cancel = flags & 2, no_uuid = flags & 4;

  /* The client's messages, and what the session must read of them. */
  ps_buf msgs = { 0 };     /* each: 8-byte length, then the message */
  ps_buf expected = { 0 }; /* data of the messages up to the first non-BytesMessage */
  bool ended = false;
  ps_buf_free (&session_out);
  ps_buf_free (&session_in);
  for (size_t off = 1; off + 2 <= size;)
    {
      uint8_t op = data[off] % 4;
      size_t n = data[off + 1];
      off += 2;
      if (n > size - off)
        n = size - off;
      const uint8_t *b = data + off;
      off += n;
      if (op == 2)
        {
          ps_buf_append (&session_out, b, n);
          continue;
        }
      ps_buf payload = { 0 };
      if (op == 3)
        for (size_t k = 0; n > 0 && k < 521; k++)
          ps_buf_append (&payload, b, n);
      else
        ps_buf_append (&payload, b, n);
      uint8_t *packed = NULL;
      size_t plen = 0;
      if (op == 1)
        {
          packed = xmalloc (payload.len + 1);
          if (payload.len)
            memcpy (packed, payload.data, payload.len);
          plen = payload.len;
        }
      else
        {
          Moby__Buildkit__V1__BytesMessage m = MOBY__BUILDKIT__V1__BYTES_MESSAGE__INIT;
          m.data.data = (uint8_t *) payload.data;
          m.data.len = payload.len;
          packed = xmalloc (moby__buildkit__v1__bytes_message__get_packed_size (&m) + 1);
          plen = moby__buildkit__v1__bytes_message__pack (&m, packed);
        }
      if (!ended)
        {
          Moby__Buildkit__V1__BytesMessage *m = moby__buildkit__v1__bytes_message__unpack (NULL, plen, packed);
          if (m == NULL)
            ended = true;
          else
            {
              ps_buf_append (&expected, m->data.data, m->data.len);
              moby__buildkit__v1__bytes_message__free_unpacked (m, NULL);
            }
        }
      uint64_t l = plen;
      ps_buf_append (&msgs, &l, sizeof l);
      ps_buf_append (&msgs, packed, plen);
      free (packed);
      ps_buf_free (&payload);
    }
  if (is_real)
    ps_buf_free (&session_out);

  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    die ("socketpair");
  pthread_t server, client;
  pthread_create (&server, NULL, serve_main, &sv[0]);
  ps_error *err = NULL;
  grpc_conn *conn = grpc_conn_new (sv[1], NULL, 0, "fuzz-client", &err);
  if (conn == NULL)
    die ("grpc_conn_new");
  pthread_create (&client, NULL, client_main, conn);

  char uuid[64];
  snprintf (uuid, sizeof uuid, "fuzz-tunnel-%u", atomic_fetch_add (&uuid_counter, 1));
  struct grpc_metadata md[] = {
    { "x-docker-expose-session-uuid", no_uuid ? "" : uuid },
    { "x-docker-expose-session-name", "fuzz" },
    { "x-docker-expose-session-sharedkey", "fuzz-key" },
    { "x-docker-expose-session-grpc-method", "/moby.filesync.v1.FileSync/DiffCopy" },
    { "x-docker-expose-session-grpc-method", "/grpc.health.v1.Health/Check" },
  };
  grpc_call *call = grpc_call_start (conn, is_real ? PATH_REAL : PATH_RECORD, md, ARRAY_SIZE (md), &err);
  if (call == NULL)
    die ("grpc_call_start");

  /* First what the session says: all of it (recording), or the HTTP/2
     client preface of the real session's connection. */
  ps_buf got = { 0 };
  static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  bool live = receive (call, &got, is_real ? sizeof preface - 1 : session_out.len) == 0;
  if (is_real && !no_uuid && (got.len < sizeof preface - 1 || memcmp (got.data, preface, sizeof preface - 1) != 0))
    die ("the real session's preface did not come through the tunnel");
  if (!is_real && got.len != session_out.len)
    die ("the client did not receive all the session wrote");
  if (!is_real && got.len && memcmp (got.data, session_out.data, got.len) != 0)
    die ("the client received other bytes than the session wrote");

  /* Then the client's messages. */
  for (size_t off = 0; live && off < msgs.len;)
    {
      uint64_t l;
      memcpy (&l, msgs.data + off, sizeof l);
      off += sizeof l;
      if (grpc_call_send (call, msgs.data + off, (size_t) l, &err) < 0)
        {
          ps_error_free (err);
          err = NULL;
          live = false;
        }
      off += (size_t) l;
    }
  if (cancel)
    {
      grpc_call_flush (call, WAIT_MS);
      grpc_call_cancel (call);
    }
  else if (live && grpc_call_close_send (call, &err) < 0)
    {
      ps_error_free (err);
      err = NULL;
    }
  /* Drain to the end of the call: a recording session says nothing more. */
  size_t before = got.len;
  if (!cancel)
    receive (call, &got, SIZE_MAX);
  if (!is_real && got.len != before)
    die ("the client received more than the session wrote");
  int status = grpc_call_status (call);
  if (!cancel && !no_uuid && status != GRPC_STATUS_OK)
    {
      fprintf (stderr, "status %d\n", status);
      die ("the tunnel call did not end OK");
    }
  grpc_call_free (call);

  grpc_conn_shutdown (conn);
  pthread_join (client, NULL);
  grpc_conn_free (conn);
  close (sv[1]);
  pthread_join (server, NULL);
  close (sv[0]);
  for (int i = 0; i < 5000 && grpc_server_handlers_running () > 0; i++)
    usleep (1000);
  if (grpc_server_handlers_running () > 0)
    die ("handler threads still running 5 s after the connection ended");

  if (!is_real && !cancel)
    {
      if (session_in.len != expected.len || (expected.len && memcmp (session_in.data, expected.data, expected.len) != 0))
        {
          fprintf (stderr, "session read %zu bytes, the client's messages carried %zu\n", session_in.len, expected.len);
          die ("the session did not read exactly the data of the client's BytesMessages");
        }
    }
  else if (!is_real)
    {
      if (session_in.len > expected.len || (session_in.len && memcmp (session_in.data, expected.data, session_in.len) != 0))
        die ("after a cancel the session read something other than a prefix of the client's data");
    }
  else
    {
      for (int i = 0; i < 5000 && session_registry_has (uuid); i++)
        usleep (1000);
      if (session_registry_has (uuid))
        die ("the session is still registered 5 s after its tunnel ended");
    }
  ps_buf_free (&got);
  ps_buf_free (&msgs);
  ps_buf_free (&expected);
  return 0;
}
