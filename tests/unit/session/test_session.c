/* test_session.c — sessions: identity headers, the uuid registry, and the
 * small services (Auth/Credentials, Secrets/GetSecret, Health/Check). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "session/auth.h"
#include "session/secrets.h"
#include "session/session.h"
#include "session/session_limits.h"
#include "solver/session_io.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

static const struct fake_config services = {
  .mode = FAKE_NORMAL,
  .auth_host = "registry.example.com",
  .auth_user = "alice",
  .auth_secret = "s3cret",
  .secret_id = "npmrc",
  .secret_value = "//registry.npmjs.org/:_authToken=abc\n",
};

START_TEST (identity_headers_are_validated)
{
  const char *methods[] = { "/moby.filesync.v1.FileSync/DiffCopy" };
  struct session_info ok = { .uuid = "8o5az5q1id7dpvmk3175jsgp6", .methods = methods, .n_methods = 1 };
  ps_error *err = NULL;
  ck_assert_int_eq (session_info_validate (&ok, &err), 0);

  struct session_info none = { .uuid = NULL };
  ck_assert_int_eq (session_info_validate (&none, &err), -1);
  ck_assert_str_eq (err->msg, "missing X-Docker-Expose-Session-Uuid header");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  err = NULL;

  struct session_info weird = { .uuid = "../../etc" };
  ck_assert_int_eq (session_info_validate (&weird, &err), -1);
  ps_error_free (err);
  err = NULL;

  /* buildx's shared key "<builder>:<node id>" is fine; a second line is not */
  struct session_info buildx_key = { .uuid = "abc", .shared_key = "default:p4wl9bq2mmzd7d8jd5f7v3ncm" };
  ck_assert_int_eq (session_info_validate (&buildx_key, &err), 0);
  buildx_key.shared_key = "a\nb";
  ck_assert_int_eq (session_info_validate (&buildx_key, &err), -1);
  ps_error_free (err);
  err = NULL;

  const char *bad_methods[] = { "not-a-path" };
  struct session_info bm = { .uuid = "abc", .methods = bad_methods, .n_methods = 1 };
  ck_assert_int_eq (session_info_validate (&bm, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "expected /package.Service/Method"));
  ps_error_free (err);
  err = NULL;

  /* PS_SESSION_MAX_METHODS: one more method header is refused. */
  const char *many[PS_SESSION_MAX_METHODS + 1];
  for (size_t i = 0; i < ARRAY_SIZE (many); i++)
    many[i] = "/moby.filesync.v1.FileSync/DiffCopy";
  struct session_info lots = { .uuid = "abc", .methods = many, .n_methods = PS_SESSION_MAX_METHODS };
  ck_assert_int_eq (session_info_validate (&lots, &err), 0);
  lots.n_methods++;
  ck_assert_int_eq (session_info_validate (&lots, &err), -1);
  ck_assert_str_eq (err->msg, "too many X-Docker-Expose-Session-Grpc-Method headers (257, at most 256)");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

struct late_add
{
  ps_session *s;
};

static void *
add_later (void *arg)
{
  struct late_add *la = arg;
  usleep (150000);
  ps_error *err = NULL;
  ck_assert_int_eq (session_registry_add (la->s, &err), 0);
  return NULL;
}

START_TEST (registry_finds_waits_and_refuses_duplicates)
{
  struct peer_pair pp;
  pair_start_session (&pp, &services, "sess-registry", NULL, 0);
  ps_session *s = pp.session;
  ck_assert_str_eq (session_uuid (s), "sess-registry");
  ck_assert_str_eq (session_shared_key (s), "k3y");
  ck_assert_str_eq (session_name (s), "ctx");
  ck_assert (session_has_method (s, "/moby.filesync.v1.FileSync/DiffCopy"));
  ck_assert (session_has_method (s, "/MOBY.FILESYNC.V1.FILESYNC/DIFFCOPY"));
  ck_assert (!session_has_method (s, "/moby.filesync.v1.FileSend/DiffCopy"));

  /* /build usually arrives first: it waits for the session. */
  struct late_add la = { s };
  pthread_t th;
  pthread_create (&th, NULL, add_later, &la);
  ps_error *err = NULL;
  int64_t t0 = ps_monotonic_ns ();
  ps_session *found = session_wait ("sess-registry", 3000, &err);
  ck_assert_ptr_eq (found, s);
  ck_assert ((ps_monotonic_ns () - t0) / 1000000 >= 100);
  pthread_join (th, NULL);
  session_unref (found);

  ck_assert (session_registry_has ("sess-registry"));
  ck_assert_int_eq (session_registry_add (s, &err), -1);
  ck_assert_str_eq (err->msg, "session sess-registry already exists");
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  err = NULL;

  ck_assert_ptr_null (session_wait ("no-such-session", 100, &err));
  ck_assert_int_eq (err->status, 404);
  ck_assert_ptr_nonnull (strstr (err->msg, "no session no-such-session (waited 100 ms)"));
  ps_error_free (err);
  err = NULL;

  /* The client hangs up: the session is gone for new waiters. */
  fake_peer_hangup (pp.peer);
  for (int i = 0; i < 200 && session_alive (s); i++)
    usleep (10000);
  ck_assert (!session_alive (s));
  ck_assert_ptr_null (session_wait ("sess-registry", 100, &err));
  ck_assert_ptr_nonnull (strstr (err->msg, "has ended"));
  ps_error_free (err);

  session_registry_remove (s);
  ck_assert (!session_registry_has ("sess-registry"));
  pair_stop (&pp);
}
END_TEST

START_TEST (auth_credentials_found_anonymous_and_not_exposed)
{
  struct peer_pair pp;
  pair_start_session (&pp, &services, "sess-auth", NULL, 0);
  char *user = NULL, *secret = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (session_auth_credentials (pp.session, "registry.example.com", &user, &secret, &err), 1);
  ck_assert_str_eq (user, "alice");
  ck_assert_str_eq (secret, "s3cret");
  free (user);
  free (secret);
  ck_assert_int_eq (session_auth_credentials (pp.session, "registry-1.docker.io", &user, &secret, &err), 0);
  ck_assert_ptr_null (user);
  ck_assert_int_eq (session_health_check (pp.session, 2000, &err), 0);
  pair_stop (&pp);

  /* A client exposing no Auth: anonymous, without a call. */
  const char *none[] = { "/moby.filesync.v1.FileSync/DiffCopy" };
  pair_start_session (&pp, &services, "sess-noauth", none, 1);
  ck_assert_int_eq (session_auth_credentials (pp.session, "registry.example.com", &user, &secret, &err), 0);
  ck_assert_int_eq (session_health_check (pp.session, 2000, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "does not serve /grpc.health.v1.Health/Check"));
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

START_TEST (auth_unimplemented_is_anonymous)
{
  /* Exposed in the headers but the server says UNIMPLEMENTED: BuildKit
     treats that as "no credentials". */
  struct fake_config cfg = services;
  cfg.auth_unimplemented = true;
  struct peer_pair pp;
  pair_start_session (&pp, &cfg, "sess-auth2", NULL, 0);
  char *user = NULL, *secret = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (session_auth_credentials (pp.session, "registry.example.com", &user, &secret, &err), 0);
  pair_stop (&pp);
}
END_TEST

START_TEST (secrets_found_missing_and_not_exposed)
{
  struct peer_pair pp;
  pair_start_session (&pp, &services, "sess-secrets", NULL, 0);
  unsigned char *data = NULL;
  size_t len = 0;
  ps_error *err = NULL;
  ck_assert_int_eq (session_get_secret (pp.session, "npmrc", &data, &len, &err), 1);
  ck_assert_uint_eq (len, strlen (services.secret_value));
  ck_assert_mem_eq (data, services.secret_value, len);
  free (data);
  ck_assert_int_eq (session_get_secret (pp.session, "other", &data, &len, &err), 0);
  ck_assert_ptr_null (data);
  ck_assert_int_eq (session_get_secret (pp.session, "", &data, &len, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  err = NULL;
  pair_stop (&pp);

  const char *none[] = { "/moby.filesync.v1.FileSync/DiffCopy" };
  pair_start_session (&pp, &services, "sess-nosecrets", none, 1);
  ck_assert_int_eq (session_get_secret (pp.session, "npmrc", &data, &len, &err), 0);
  pair_stop (&pp);
}
END_TEST

/* The one writer of secrets to disk (Dockerfile builds and LLB secret
   mounts): a file of its own in a 0700 directory on tmpfs, created only
   for a secret the client has. */
START_TEST (secret_to_tmpfs_writes_a_private_file_only_for_a_secret_the_client_has)
{
  struct peer_pair pp;
  pair_start_session (&pp, &services, "sess-secret-tmpfs", NULL, 0);
  ps_error *err = NULL;
  char *dir = NULL, *path = NULL;
  const char *prefix = "podsolve-unit-secrets";
  const struct session_secret_file named = { .name = "npmrc" };
  ck_assert_int_eq (session_secret_to_tmpfs (pp.session, "other", &dir, prefix, &named, &path, &err), 0);
  ck_assert_ptr_null (dir);
  ck_assert_ptr_null (path);

  ck_assert_int_eq (session_secret_to_tmpfs (pp.session, "npmrc", &dir, prefix, &named, &path, &err), 1);
  ck_assert (ps_str_has_prefix (dir, "/dev/shm/podsolve-unit-secrets-"));
  ck_assert_uint_eq (strlen (dir), strlen ("/dev/shm/podsolve-unit-secrets-") + 16);
  struct stat st;
  ck_assert_int_eq (stat (dir, &st), 0);
  ck_assert_uint_eq (st.st_mode & 07777, 0700);
  cleanup_free char *expect = xasprintf ("%s/npmrc", dir);
  ck_assert_str_eq (path, expect);
  ck_assert_int_eq (stat (path, &st), 0);
  ck_assert_uint_eq (st.st_mode & 07777, 0600);
  char *text = NULL;
  ck_assert_int_eq (ps_read_file (path, 4096, &text, NULL, NULL), 0);
  ck_assert_str_eq (text, services.secret_value);
  free (text);
  free (path);

  /* An LLB mount's file: a random name, its owner and mode as asked, in
     the same directory. */
  cleanup_free char *first_dir = xstrdup (dir);
  const struct session_secret_file owned = { .chown = true, .uid = getuid (), .gid = getgid (), .mode = 0440 };
  ck_assert_int_eq (session_secret_to_tmpfs (pp.session, "npmrc", &dir, prefix, &owned, &path, &err), 1);
  ck_assert_str_eq (dir, first_dir);
  ck_assert (ps_str_has_prefix (path, dir) && path[strlen (dir)] == '/');
  ck_assert_uint_eq (strlen (path + strlen (dir) + 1), 16);
  ck_assert_int_eq (stat (path, &st), 0);
  ck_assert_uint_eq (st.st_mode & 07777, 0440);
  ck_assert_uint_eq (st.st_uid, getuid ());
  free (path);

  /* A failed call names the secret. */
  ck_assert_int_eq (session_secret_to_tmpfs (pp.session, "", &dir, prefix, &named, &path, &err), -1);
  ck_assert_ptr_null (path);
  ck_assert (ps_str_has_prefix (err->msg, "secret : "));
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  ck_assert_int_eq (ps_rm_rf (dir, NULL), 0);
  free (dir);
  pair_stop (&pp);
}
END_TEST

START_TEST (calls_on_a_dead_session_fail_fast)
{
  struct peer_pair pp;
  pair_start_session (&pp, &services, "sess-dead", NULL, 0);
  fake_peer_hangup (pp.peer);
  for (int i = 0; i < 200 && session_alive (pp.session); i++)
    usleep (10000);
  char *user = NULL, *secret = NULL;
  ps_error *err = NULL;
  int64_t t0 = ps_monotonic_ns ();
  ck_assert_int_eq (session_auth_credentials (pp.session, "registry.example.com", &user, &secret, &err), -1);
  ck_assert ((ps_monotonic_ns () - t0) < 1000000000LL);
  ck_assert_ptr_nonnull (strstr (err->msg, "connection closed by the client"));
  ps_error_free (err);
  pair_stop (&pp);
}
END_TEST

PS_TEST_SUITE (session)
{
  Suite *s = suite_create ("session");
  TCase *tc = tcase_create ("session");
  tcase_set_timeout (tc, 30);
  tcase_add_test (tc, identity_headers_are_validated);
  tcase_add_test (tc, registry_finds_waits_and_refuses_duplicates);
  tcase_add_test (tc, auth_credentials_found_anonymous_and_not_exposed);
  tcase_add_test (tc, auth_unimplemented_is_anonymous);
  tcase_add_test (tc, secrets_found_missing_and_not_exposed);
  tcase_add_test (tc, secret_to_tmpfs_writes_a_private_file_only_for_a_secret_the_client_has);
  tcase_add_test (tc, calls_on_a_dead_session_fail_fast);
  suite_add_tcase (s, tc);
  return s;
}
