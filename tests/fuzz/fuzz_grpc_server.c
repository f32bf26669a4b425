/* fuzz_grpc_server — arbitrary bytes from a client on a gRPC server
 * connection (grpc_serve: the HTTP/2 server of POST /grpc and
 * --buildkit-listen), over a socketpair.  Whatever arrives (a broken
 * preface, bad frames, streams reset or left open, oversize or truncated
 * messages, wrong methods or content types), grpc_serve must return, every
 * handler thread must end, and nothing may leak or crash.
 *
 * Input: the first byte's low bit set puts a valid client preface and an
 * empty SETTINGS frame before the rest (so most inputs get past the
 * preface); the rest goes to the socket as is, then the write side is
 * shut.  The service table has a unary echo, a streaming echo and a
 * handler that finishes without reading. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "session/grpc.h"

static void
echo_unary (grpc_call *call, void *ud)
{
  ps_error *err = NULL;
  void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_one (call, &msg, &len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
      return;
    }
  if (grpc_call_send (call, msg, len, &err) < 0)
    {
      grpc_call_finish_error (call, err);
      ps_error_free (err);
    }
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
  free (msg);
  (void) grpc_call_metadata (call, "user-agent");
  const char **v;
  (void) grpc_call_metadata_all (call, "x-m", &v);
}

static void
echo_stream (grpc_call *call, void *ud)
{
  for (;;)
    {
      ps_error *err = NULL;
      void *msg = NULL;
      size_t len = 0;
      int r = grpc_call_recv (call, &msg, &len, 2000, &err);
      if (r <= 0)
        {
          if (r < 0)
            {
              grpc_call_finish_error (call, err);
              ps_error_free (err);
            }
          break;
        }
      r = grpc_call_send (call, msg, len, &err);
      free (msg);
      if (r < 0)
        {
          grpc_call_finish_error (call, err);
          ps_error_free (err);
          break;
        }
      if (grpc_call_cancelled (call))
        break;
    }
  grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

static void
refuse (grpc_call *call, void *ud)
{
  grpc_call_finish (call, GRPC_STATUS_FAILED_PRECONDITION, "no %s for you: \x01%%\xff", grpc_call_path (call));
}

static const struct grpc_method methods[] = {
  { "/f.S/Unary", echo_unary, NULL },
  { "/f.S/Stream", echo_stream, NULL },
  { "/f.S/Refuse", refuse, NULL },
};
static const struct grpc_service_table table = { methods, 3 };

struct server
{
  int fd;
};

static void *
serve_main (void *arg)
{
  struct server *s = arg;
  ps_error *err = NULL;
  if (grpc_serve (s->fd, NULL, 0, "fuzz", &table, &err) < 0)
    ps_error_free (err);
  return NULL;
}

static void *
drain_main (void *arg)
{
  int fd = *(int *) arg;
  char buf[65536];
  while (read (fd, buf, sizeof buf) > 0)
    ;
  return NULL;
}

static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                 "\x00\x00\x00\x04\x00\x00\x00\x00\x00";

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
  int sv[2];
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort ();
  struct server s = { sv[0] };
  pthread_t server, drain;
  pthread_create (&server, NULL, serve_main, &s);
  pthread_create (&drain, NULL, drain_main, &sv[1]);
  if (data[0] & 1)
    {
      ssize_t w = write (sv[1], preface, sizeof preface - 1);
      (void) w;
    }
  for (size_t off = 1; off < size;)
    {
      ssize_t w = write (sv[1], data + off, size - off);
      if (w <= 0)
        break;
      off += (size_t) w;
    }
  shutdown (sv[1], SHUT_WR);
  pthread_join (server, NULL);
  close (sv[0]); /* the drain sees EOF */
  pthread_join (drain, NULL);
  close (sv[1]);
  /* Handlers of the dead connection end on their own (their calls fail). */
  for (int i = 0; i < 5000 && grpc_server_handlers_running () > 0; i++)
    usleep (1000);
  if (grpc_server_handlers_running () > 0)
    {
      fprintf (stderr, "handler threads still running 5 s after the connection ended\n");
      abort ();
    }
  return 0;
}
