/* test_worker.c — the worker ListWorkers describes: GOARCH names, an id
 * that survives a restart, the host's platform first, a host address. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "solver/buildah.h"
#include "solver/worker.h"
#include "tests/unit/unit.h"

START_TEST (go_arch_names)
{
  ck_assert_str_eq (worker_go_arch ("x86_64"), "amd64");
  ck_assert_str_eq (worker_go_arch ("aarch64"), "arm64");
  ck_assert_str_eq (worker_go_arch ("i686"), "386");
  ck_assert_str_eq (worker_go_arch ("armv7l"), "arm");
  ck_assert_str_eq (worker_go_arch ("s390x"), "s390x");
  ck_assert_str_eq (worker_go_arch ("mips64el"), "mips64le");
}
END_TEST

START_TEST (id_is_kept_in_the_state_dir)
{
  char dir[] = "/tmp/ps-worker-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (dir));
  const char *id = worker_id (dir);
  ck_assert_uint_ge (strlen (id), 16);
  ck_assert_uint_eq (strspn (id, "0123456789abcdef"), strlen (id));
  cleanup_free char *path = xasprintf ("%s/worker-id", dir);
  cleanup_free char *text = NULL;
  ck_assert_int_eq (ps_read_file (path, 256, &text, NULL, NULL), 0);
  cleanup_free char *line = xasprintf ("%s\n", id);
  ck_assert_str_eq (text, line);
  ck_assert_str_eq (worker_id (dir), id);
  ps_rm_rf (dir, NULL);
}
END_TEST

START_TEST (host_platform_first)
{
  struct utsname u;
  uname (&u);
  ps_strv p = { 0 };
  worker_platforms (&p);
  ck_assert_uint_ge (p.n, 1);
  cleanup_free char *host = xasprintf ("linux/%s", worker_go_arch (u.machine));
  ck_assert_str_eq (p.v[0], host);
  for (size_t i = 1; i < p.n; i++)
    ck_assert_str_ne (p.v[i], host);
  ps_strv_free (&p);
}
END_TEST

START_TEST (gateway_is_a_host_address)
{
  cleanup_free char *ip = worker_host_gateway_ip ();
  if (ip == NULL)
    return; /* a host with no global address */
  unsigned char buf[16];
  ck_assert (inet_pton (AF_INET, ip, buf) == 1 || inet_pton (AF_INET6, ip, buf) == 1);
  ck_assert (!ps_str_has_prefix (ip, "127.") && strcmp (ip, "::1") != 0);
}
END_TEST

START_TEST (containers_conf_host_ip)
{
  char dir[] = "/tmp/ps-worker-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (dir));
  cleanup_free char *a = xasprintf ("%s/a.conf", dir);
  cleanup_free char *b = xasprintf ("%s/b.conf", dir);
  cleanup_free char *c = xasprintf ("%s/c.conf", dir);
  const char *ta = "[containers]\n#host_containers_internal_ip = \"9.9.9.9\"\n"
                   "host_containers_internal_ip = \"10.0.0.7\"\n[engine]\nhost_containers_internal_ip = \"1.1.1.1\"\n";
  const char *tb = "[network]\nx = 1\n [containers]\n  host_containers_internal_ip='none'\n";
  const char *tc = "[containers]\nhost_containers_internal_ip = \"\"\n";
  ck_assert_int_eq (ps_write_file (a, ta, strlen (ta), 0644, NULL), 0);
  ck_assert_int_eq (ps_write_file (b, tb, strlen (tb), 0644, NULL), 0);
  ck_assert_int_eq (ps_write_file (c, tc, strlen (tc), 0644, NULL), 0);
  const char *only_a[] = { a }, *a_b[] = { a, b }, *a_c[] = { a, c }, *missing[] = { "/nonexistent/x.conf" };
  cleanup_free char *v1 = worker_conf_host_ip (only_a, 1);
  ck_assert_str_eq (v1, "10.0.0.7");
  cleanup_free char *v2 = worker_conf_host_ip (a_b, 2);
  ck_assert_str_eq (v2, "none");
  ck_assert_ptr_null (worker_conf_host_ip (a_c, 2)); /* "" = choose automatically */
  ck_assert_ptr_null (worker_conf_host_ip (missing, 1));
  ps_rm_rf (dir, NULL);
}
END_TEST

/* Both OCI probes failing (the configured runtime, then runc from PATH)
   falls back to chroot and says why for both; joining the two reasons read
   the first after freeing it (AddressSanitizer, at a loaded start-up). */
START_TEST (isolation_falls_back_to_chroot_when_every_oci_probe_fails)
{
  char dir[] = "/tmp/ps-probe-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (dir));
  cleanup_free char *fake = xasprintf ("%s/buildah", dir);
  const char *script = "#!/bin/sh\n"
                       "case \" $* \" in\n"
                       "  *\" version \"*) echo '{\"version\": \"1.28.2\"}' ;;\n"
                       "  *\" from \"*) echo fake-working-container ;;\n"
                       "  *\" run \"*) echo 'cannot run containers: fake' >&2; exit 1 ;;\n"
                       "esac\n";
  ck_assert_int_eq (ps_write_file (fake, script, strlen (script), 0755, NULL), 0);
  struct buildah_config cfg = { .buildah = fake };
  buildah_configure (&cfg);
  ps_error *err = NULL;
  ck_assert_int_eq (buildah_probe_isolation ("oci", "/bin/false", &err), 0);
  ck_assert_str_eq (buildah_isolation (), "chroot");
  ps_rm_rf (dir, NULL);
}
END_TEST

PS_TEST_SUITE (worker)
{
  Suite *s = suite_create ("worker");
  TCase *tc = tcase_create ("worker");
  tcase_add_test (tc, go_arch_names);
  tcase_add_test (tc, id_is_kept_in_the_state_dir);
  tcase_add_test (tc, host_platform_first);
  tcase_add_test (tc, gateway_is_a_host_address);
  tcase_add_test (tc, containers_conf_host_ip);
  tcase_add_test (tc, isolation_falls_back_to_chroot_when_every_oci_probe_fails);
  suite_add_tcase (s, tc);
  return s;
}
