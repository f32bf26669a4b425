/* grpc_pair.c — see grpc_pair.h. */
#define _GNU_SOURCE
#include "tests/unit/session/grpc_pair.h"

#include <check.h>
#include <sys/socket.h>
#include <unistd.h>

static void *
server_main (void *arg)
{
  struct grpc_pair *p = arg;
  ps_error *err = NULL;
  int r = p->tag ? grpc_serve_tagged (p->sv[0], "unit", p->table, p->tag, &err)
                 : grpc_serve (p->sv[0], NULL, 0, "unit", p->table, &err);
  if (r < 0)
    ps_error_free (err);
  return NULL;
}

static void *
client_main (void *arg)
{
  struct grpc_pair *p = arg;
  ps_error *err = NULL;
  if (grpc_conn_run (p->client, &err) < 0)
    ps_error_free (err);
  return NULL;
}

void
grpc_pair_up (struct grpc_pair *p)
{
  ck_assert_int_eq (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->sv), 0);
  ps_error *err = NULL;
  p->client = grpc_conn_new (p->sv[1], NULL, 0, "unit-client", &err);
  ck_assert_ptr_nonnull (p->client);
  pthread_create (&p->server_th, NULL, server_main, p);
  pthread_create (&p->client_th, NULL, client_main, p);
}

void
grpc_pair_down (struct grpc_pair *p)
{
  grpc_conn_shutdown (p->client);
  pthread_join (p->client_th, NULL);
  grpc_conn_free (p->client);
  close (p->sv[1]);
  pthread_join (p->server_th, NULL);
  close (p->sv[0]);
  for (int i = 0; i < 500 && grpc_server_handlers_running () > 0; i++)
    usleep (10000);
  ck_assert_uint_eq (grpc_server_handlers_running (), 0);
}
