/* test_session_sshforward.c — SSH agent forwarding over the session
 * (session/sshforward.c) against the fake peer's SSH service: CheckAgent's
 * answers, bytes both ways through the socket, the id in the stream's
 * metadata, the half-close, and a stop with connections still open. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "session/session_limits.h"
#include "session/sshforward.h"
#include "solver/session_io.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

static const struct fake_config agent = { .mode = FAKE_NORMAL, .ssh_id = "mykey" };

static int
connect_to (const char *path)
{
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge (fd, 0);
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", path);
  ck_assert_int_eq (connect (fd, (struct sockaddr *) &sa, sizeof sa), 0);
  return fd;
}

/* Read until `want` bytes or EOF. */
static char *
read_n (int fd, size_t want)
{
  char *buf = xcalloc (1, want + 1);
  ssize_t n = ps_read_full (fd, buf, want);
  ck_assert_int_eq (n, (ssize_t) want);
  return buf;
}

START_TEST (check_agent_knows_the_forwarded_id_only)
{
  struct peer_pair pp;
  pair_start_session (&pp, &agent, "sess-ssh-check", NULL, 0);
  ps_error *err = NULL;
  ck_assert_int_eq (session_ssh_check (pp.session, "mykey", &err), 0);
  ck_assert_int_eq (session_ssh_check (pp.session, "other", &err), -1);
  ck_assert_int_eq (err->status, 404);
  ck_assert_str_eq (err->msg, "no SSH key \"other\" forwarded from the client: SSH/CheckAgent: grpc status 2 (UNKNOWN): unset ssh forward key other");
  ps_error_free (err);
  err = NULL;
  pair_stop (&pp);

  /* A session that does not expose SSH at all (no --ssh given). */
  const char *methods[] = { "/moby.filesync.v1.FileSync/DiffCopy" };
  pair_start_session (&pp, &agent, "sess-ssh-none", methods, 1);
  ck_assert_int_eq (session_ssh_check (pp.session, "", &err), -1);
  ck_assert_int_eq (err->status, 404);
  ck_assert_str_eq (err->msg, "no SSH key \"default\" forwarded from the client");
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

START_TEST (bytes_go_both_ways_with_the_id_in_metadata)
{
  struct peer_pair pp;
  pair_start_session (&pp, &agent, "sess-ssh-fwd", NULL, 0);
  cleanup_free char *dir = NULL;
  session_ssh_forward *fwd = NULL;
  ps_error *err = NULL;
  const struct session_ssh_socket sock = { .uid = 1234, .gid = 5678, .mode = 0640 };
  ck_assert_msg (session_ssh_to_socket (pp.session, "mykey", &dir, "podsolve-unit-ssh", &sock, &fwd, &err) == 0, "%s",
                 err ? err->msg : "");
  const char *path = session_ssh_forward_path (fwd);
  struct stat st;
  ck_assert_int_eq (stat (dir, &st), 0);
  ck_assert_int_eq (st.st_mode & 07777, 0700);
  ck_assert_int_eq (lstat (path, &st), 0);
  ck_assert (S_ISSOCK (st.st_mode));
  ck_assert_int_eq (st.st_mode & 0777, 0640);
  ck_assert_int_eq (st.st_uid, 1234);
  ck_assert_int_eq (st.st_gid, 5678);

  /* Two connections, each its own stream; a half-close ends each. */
  for (int i = 0; i < 2; i++)
    {
      int fd = connect_to (path);
      ck_assert_int_eq (ps_write_all (fd, "\0\0\0\1\x0b", 5), 0);
      cleanup_free char *got = read_n (fd, 11);
      ck_assert_int_eq (memcmp (got, "agent:\0\0\0\1\x0b", 11), 0);
      shutdown (fd, SHUT_WR);
      char c;
      ck_assert_int_eq (read (fd, &c, 1), 0); /* the peer ended the call: EOF */
      close (fd);
    }
  cleanup_free char *id = fake_peer_metadata (pp.peer, "buildkit.ssh.id");
  ck_assert_str_eq (id, "mykey");
  ck_assert_uint_eq (session_ssh_forward_connections (fwd), 2);
  session_ssh_forward_stop (fwd);
  ck_assert_int_eq (lstat (path, &st), -1);
  test_rm_tree (&dir);
  pair_stop (&pp);
}
END_TEST

START_TEST (stop_ends_open_connections)
{
  struct peer_pair pp;
  pair_start_session (&pp, &agent, "sess-ssh-stop", NULL, 0);
  cleanup_free char *dir = NULL;
  session_ssh_forward *fwd = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (session_ssh_to_socket (pp.session, "mykey", &dir, "podsolve-unit-ssh", NULL, &fwd, &err), 0);
  int fd = connect_to (session_ssh_forward_path (fwd));
  ck_assert_int_eq (ps_write_all (fd, "x", 1), 0);
  cleanup_free char *got = read_n (fd, 7);
  ck_assert_str_eq (got, "agent:x");
  /* The stream is open and the process silent: the build ends anyway. */
  session_ssh_forward_stop (fwd);
  char c;
  ck_assert_int_le (read (fd, &c, 1), 0);
  close (fd);
  test_rm_tree (&dir);
  pair_stop (&pp);
}
END_TEST

START_TEST (connections_beyond_the_limit_are_closed)
{
  struct peer_pair pp;
  pair_start_session (&pp, &agent, "sess-ssh-limit", NULL, 0);
  cleanup_free char *dir = NULL;
  session_ssh_forward *fwd = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (session_ssh_to_socket (pp.session, "mykey", &dir, "podsolve-unit-ssh", NULL, &fwd, &err), 0);
  const char *path = session_ssh_forward_path (fwd);
  int fds[PS_SSH_MAX_CONNECTIONS];
  for (size_t i = 0; i < ARRAY_SIZE (fds); i++)
    {
      /* each answered: its stream is open when the next one comes */
      fds[i] = connect_to (path);
      ck_assert_int_eq (ps_write_all (fds[i], "x", 1), 0);
      cleanup_free char *got = read_n (fds[i], 7);
      ck_assert_str_eq (got, "agent:x");
    }
  int extra = connect_to (path);
  char c;
  ck_assert_int_le (read (extra, &c, 1), 0); /* closed at once */
  close (extra);
  ck_assert_uint_eq (session_ssh_forward_connections (fwd), PS_SSH_MAX_CONNECTIONS);
  /* One ends; a new one is served again. */
  shutdown (fds[0], SHUT_WR);
  ck_assert_int_eq (read (fds[0], &c, 1), 0);
  close (fds[0]);
  bool served = false;
  for (int tries = 0; tries < 200 && !served; tries++)
    {
      int fd = connect_to (path);
      /* MSG_NOSIGNAL: while the slot is not free yet, the forwarder closes at once */
      if (send (fd, "y", 1, MSG_NOSIGNAL) == 1)
        {
          char buf[7];
          served = ps_read_full (fd, buf, 7) == 7 && memcmp (buf, "agent:y", 7) == 0;
        }
      close (fd);
      if (!served)
        usleep (10 * 1000); /* the ended connection is reaped by the accept thread */
    }
  ck_assert (served);
  for (size_t i = 1; i < ARRAY_SIZE (fds); i++)
    close (fds[i]);
  session_ssh_forward_stop (fwd);
  test_rm_tree (&dir);
  pair_stop (&pp);
}
END_TEST

START_TEST (an_id_the_client_lacks_makes_no_socket)
{
  struct peer_pair pp;
  pair_start_session (&pp, &agent, "sess-ssh-lack", NULL, 0);
  char *dir = NULL;
  session_ssh_forward *fwd = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (session_ssh_to_socket (pp.session, "default", &dir, "podsolve-unit-ssh", NULL, &fwd, &err), -1);
  ck_assert_int_eq (err->status, 404);
  ck_assert_ptr_nonnull (strstr (err->msg, "no SSH key \"default\" forwarded from the client"));
  ck_assert_ptr_null (fwd);
  ck_assert_ptr_null (dir);
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

PS_TEST_SUITE (session_sshforward)
{
  Suite *s = suite_create ("session_sshforward");
  TCase *tc = tcase_create ("sshforward");
  tcase_add_test (tc, check_agent_knows_the_forwarded_id_only);
  tcase_add_test (tc, bytes_go_both_ways_with_the_id_in_metadata);
  tcase_add_test (tc, stop_ends_open_connections);
  tcase_add_test (tc, connections_beyond_the_limit_are_closed);
  tcase_add_test (tc, an_id_the_client_lacks_makes_no_socket);
  suite_add_tcase (s, tc);
  return s;
}
