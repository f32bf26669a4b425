/* test_session_peer.h — an in-process fake BuildKit client for the session
 * tests: an nghttp2 *server* on one end of a socketpair that serves what the
 * docker CLI serves on /session (FileSync/DiffCopy as fsutil's sender, Auth,
 * Secrets, Health) plus a few /test.Echo methods for the gRPC client tests,
 * and misbehaves on request. */
#ifndef TESTS_UNIT_TEST_SESSION_PEER_H
#define TESTS_UNIT_TEST_SESSION_PEER_H

#include <pthread.h>

#include "common/ps.h"
#include "session/grpc_client.h"
#include "session/session.h"

enum fake_mode
{
  FAKE_NORMAL,
  FAKE_GARBAGE,          /* write bytes that are not HTTP/2, then wait */
  FAKE_SILENT,           /* accept streams, never answer */
  FAKE_STAT_DOTDOT,      /* listing contains "../x" */
  FAKE_STAT_ABSOLUTE,    /* listing contains "/abs" */
  FAKE_STAT_NO_PARENT,   /* "missing/child" without "missing" */
  FAKE_STAT_UNORDERED,   /* "b" then "a" */
  FAKE_HARDLINK_UNKNOWN, /* hard link to a path not sent */
  FAKE_DATA_UNREQUESTED, /* DATA for id 0 right after the listing */
  FAKE_CLOSE_MID_FILE,   /* close the socket after the first chunk */
  FAKE_ERR_PACKET,       /* ERR "boom" after the listing */
  FAKE_HUGE_MESSAGE,     /* a message prefix announcing 5 MiB */
  FAKE_IGNORE_EXCLUDES,  /* send excluded files anyway */
  FAKE_NO_FIN,           /* answer FIN by ending the call without FIN */
  /* FileSend (the client's side of --output): */
  FAKE_FS_DECLINE,   /* answer ALREADY_EXISTS at once, like a client declining the target */
  FAKE_FS_REQ_DIR,   /* type=local: REQ the id of the first directory */
  FAKE_FS_REQ_TWICE, /* type=local: REQ the first file twice */
  FAKE_FS_REQ_PAST,  /* type=local: REQ an id past the end of the listing */
  FAKE_FS_ERR,       /* type=local: ERR "no space left on device" after the listing */
  FAKE_FS_HANGUP,    /* close the socket after the first BytesMessage / DATA */
};

struct fake_dir
{
  const char *name; /* dir-name */
  const char *path; /* directory on disk */
};

struct fake_config
{
  enum fake_mode mode;
  struct fake_dir dirs[4];
  size_t chunk;            /* DATA chunk size; 0 = 32 KiB like fsutil */
  const char *auth_host;   /* Credentials: the host we know */
  const char *auth_user;
  const char *auth_secret;
  bool auth_unimplemented; /* answer Credentials with UNIMPLEMENTED */
  const char *secret_id;   /* GetSecret: the id we know */
  const char *secret_value;
  /* FileSend/DiffCopy receiver: what the docker CLI does with --output. */
  const char *filesend_dest; /* the output file (tar) or directory (local) */
  bool filesend_local;       /* the call carries fsutil packets (type=local) */
};

struct fake_peer;

/* Serve on `fd` (the peer takes ownership and closes it) in a new thread. */
struct fake_peer *fake_peer_start (int fd, const struct fake_config *cfg);
/* Close the peer's socket now (simulates the client going away). */
void fake_peer_hangup (struct fake_peer *p);
/* Stop and join; returns after the peer's thread is gone. */
void fake_peer_stop (struct fake_peer *p);

/* What the peer saw (thread safe snapshots). */
size_t fake_peer_reqs (struct fake_peer *p);                      /* REQ packets received */
bool fake_peer_requested (struct fake_peer *p, const char *path); /* was `path` requested? */
/* All values of metadata key `key` on the last DiffCopy call, joined with '|'. */
char *fake_peer_metadata (struct fake_peer *p, const char *key);
/* The ERR text the receiver sent, or NULL. */
char *fake_peer_err_received (struct fake_peer *p);
/* Streams reset by the client (RST_STREAM). */
size_t fake_peer_resets (struct fake_peer *p);
/* PING ACKs received (the peer pings once at start). */
size_t fake_peer_ping_acks (struct fake_peer *p);

/* What the FileSend receiver saw (a snapshot). */
struct fake_filesend_stats
{
  size_t calls;       /* FileSend/DiffCopy calls started */
  size_t messages;    /* tar: BytesMessages received */
  size_t max_message; /* tar: largest BytesMessage (protobuf bytes) */
  uint64_t bytes;     /* tar: file bytes written; local: file bytes written */
  size_t stats;       /* local: STAT packets with a stat */
  size_t reqs;        /* local: REQ packets sent */
  bool fin_received;  /* local: the sender answered our FIN */
  bool half_closed;   /* the daemon ended its side (END_STREAM) */
  bool ok;            /* the receiver ended the call with grpc-status 0 */
  char *paths;        /* local: STAT paths in arrival order, '|'-joined (caller frees) */
  char *problem;      /* the receiver's own complaint, or NULL (caller frees) */
};
void fake_peer_filesend_stats (struct fake_peer *p, struct fake_filesend_stats *out);

/* A connected pair: our gRPC connection (its I/O loop on a thread) and
   the fake peer on the other end of a socketpair. */
struct peer_pair
{
  struct fake_peer *peer;
  grpc_conn *conn;      /* NULL when `session` is used */
  ps_session *session;
  int fd;
  pthread_t io;
  bool joined; /* the I/O thread was joined already */
  int io_result;
  char *io_error;
};

/* With a bare grpc_conn. */
void pair_start (struct peer_pair *pp, const struct fake_config *cfg);
/* With a ps_session exposing `methods` (NULL: every method the fake serves). */
void pair_start_session (struct peer_pair *pp, const struct fake_config *cfg, const char *uuid,
                         const char *const *methods, size_t n_methods);
/* Close our side, join the I/O thread, stop the peer, free everything. */
void pair_stop (struct peer_pair *pp);

/* Helpers for the DiffCopy tests. */
char *test_mkdtemp (void);
/* Remove the tree at *dir (if any) and free and clear the name. */
void test_rm_tree (char **dir);
void test_write (const char *dir, const char *rel, const char *content, mode_t mode, int64_t mtime_ns);
char *test_read (const char *dir, const char *rel);
bool test_exists (const char *dir, const char *rel);
/* Files whose name starts with ".podsolve-diffcopy-" anywhere below dir. */
size_t test_count_temporaries (const char *dir);
void test_rm_rf (const char *dir);

#endif
