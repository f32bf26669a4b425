/* grpc_pair.h — a gRPC client (grpc_conn) and server (grpc_serve) joined
 * by a socketpair, each on a thread of its own: the harness of the unit
 * tests of the server side. */
#ifndef TESTS_UNIT_SESSION_GRPC_PAIR_H
#define TESTS_UNIT_SESSION_GRPC_PAIR_H

#include <pthread.h>

#include "session/grpc.h"

struct grpc_pair
{
  const struct grpc_service_table *table; /* what the server serves */
  const char *tag;                        /* non-NULL: grpc_serve_tagged */
  int sv[2];
  grpc_conn *client;
  pthread_t client_th, server_th;
};

/* Start both ends (p->table, p->tag set by the caller). */
void grpc_pair_up (struct grpc_pair *p);
/* Shut the client down, join both threads, close the sockets, and check
   that every handler thread has ended. */
void grpc_pair_down (struct grpc_pair *p);

#endif
