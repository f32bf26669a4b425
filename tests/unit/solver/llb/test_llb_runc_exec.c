/* test_llb_runc_exec.c — the direct runc path's pieces: the user lookup in
 * a rootfs's /etc/passwd and /etc/group, the seccomp conversion and the
 * OCI spec. */
#define _GNU_SOURCE
#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/ps.h"
#include "solver/llb/runc_exec.h"
#include "tests/unit/unit.h"

static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
                             "# a comment\n"
                             "\n"
                             "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                             "app:x:1000:1001:app user:/home/app:/bin/sh\n"
                             "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
static const char group[] = "root:x:0:\n"
                            "daemon:x:1:\n"
                            "wheel:x:10:root,app\n"
                            "appgrp:x:1001:\n"
                            "audio:x:29: app , other\n"
                            "staff:x:50:other\n";

static void
user_of (const char *spec, struct llb_user *u)
{
  ps_error *err = NULL;
  int r = llb_user_from_text (passwd, strlen (passwd), group, strlen (group), spec, u, &err);
  ck_assert_msg (r == 0, "%s: %s", spec, err ? err->msg : "");
}

START_TEST (user_by_name_has_its_groups)
{
  struct llb_user u;
  user_of ("app", &u);
  ck_assert_uint_eq (u.uid, 1000);
  ck_assert_uint_eq (u.gid, 1001);
  ck_assert_uint_eq (u.n_groups, 3); /* primary, then wheel and audio (members listed) */
  ck_assert_uint_eq (u.groups[0], 1001);
  ck_assert_uint_eq (u.groups[1], 10);
  ck_assert_uint_eq (u.groups[2], 29);
  llb_user_clear (&u);
  user_of ("", &u); /* empty: root */
  ck_assert_uint_eq (u.uid, 0);
  ck_assert_uint_eq (u.gid, 0);
  ck_assert_uint_eq (u.n_groups, 2);
  ck_assert_uint_eq (u.groups[1], 10);
  llb_user_clear (&u);
}
END_TEST

START_TEST (user_by_number_and_explicit_group)
{
  struct llb_user u;
  user_of ("1000", &u); /* a uid in passwd: its group and groups */
  ck_assert_uint_eq (u.gid, 1001);
  ck_assert_uint_eq (u.n_groups, 3);
  llb_user_clear (&u);
  user_of ("4242", &u); /* not in passwd: gid 0 */
  ck_assert_uint_eq (u.uid, 4242);
  ck_assert_uint_eq (u.gid, 0);
  ck_assert_uint_eq (u.n_groups, 1);
  llb_user_clear (&u);
  user_of ("app:staff", &u); /* a group given: only it */
  ck_assert_uint_eq (u.uid, 1000);
  ck_assert_uint_eq (u.gid, 50);
  ck_assert_uint_eq (u.n_groups, 1);
  llb_user_clear (&u);
  user_of ("nobody:7", &u);
  ck_assert_uint_eq (u.uid, 65534);
  ck_assert_uint_eq (u.gid, 7);
  llb_user_clear (&u);
}
END_TEST

START_TEST (unknown_user_or_group_is_an_error)
{
  struct llb_user u;
  ps_error *err = NULL;
  ck_assert_int_eq (llb_user_from_text (passwd, strlen (passwd), group, strlen (group), "ghost", &u, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "ghost"));
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (llb_user_from_text (passwd, strlen (passwd), group, strlen (group), "app:nogroup", &u, &err), -1);
  ps_error_free (err);
  err = NULL;
  /* no /etc/passwd at all: names fail, numbers work */
  ck_assert_int_eq (llb_user_from_text (NULL, 0, NULL, 0, "app", &u, &err), -1);
  ps_error_free (err);
  err = NULL;
  ck_assert_int_eq (llb_user_from_text (NULL, 0, NULL, 0, "12:34", &u, &err), 0);
  ck_assert_uint_eq (u.uid, 12);
  ck_assert_uint_eq (u.gid, 34);
  llb_user_clear (&u);
}
END_TEST

/* A rootfs whose /etc/passwd is a symlink out of it: read inside, never
   the host's. */
START_TEST (user_files_are_read_inside_the_rootfs)
{
  char dir[] = "/tmp/ps-unit-runc-XXXXXX";
  ck_assert_ptr_nonnull (mkdtemp (dir));
  char *etc = xasprintf ("%s/etc", dir);
  char *inner = xasprintf ("%s/etc/real-passwd", dir);
  char *link = xasprintf ("%s/etc/passwd", dir);
  ck_assert_int_eq (mkdir (etc, 0755), 0);
  ck_assert_int_eq (ps_write_file (inner, "hostile:x:77:78::/:/bin/sh\n", 27, 0644, NULL), 0);
  /* absolute: resolved in the rootfs, so /etc/real-passwd there */
  ck_assert_int_eq (symlink ("/etc/real-passwd", link), 0);
  struct llb_user u;
  ps_error *err = NULL;
  ck_assert_int_eq (llb_user_resolve (dir, "hostile", &u, &err), 0);
  ck_assert_uint_eq (u.uid, 77);
  ck_assert_uint_eq (u.gid, 78);
  llb_user_clear (&u);
  /* "root" there is unknown, though the host has one */
  unlink (link);
  ck_assert_int_eq (symlink ("../../../../../../etc/passwd", link), 0);
  ck_assert_int_eq (llb_user_resolve (dir, "root", &u, &err), -1);
  ps_error_free (err);
  ps_rm_rf (dir, NULL);
  free (etc);
  free (inner);
  free (link);
}
END_TEST

static const char profile[] = "{\"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":38,"
  "\"archMap\":[{\"architecture\":\"SCMP_ARCH_X86_64\",\"subArchitectures\":[\"SCMP_ARCH_X86\",\"SCMP_ARCH_X32\"]},"
  "{\"architecture\":\"SCMP_ARCH_AARCH64\",\"subArchitectures\":[\"SCMP_ARCH_ARM\"]}],"
  "\"syscalls\":["
  "{\"names\":[\"read\",\"write\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[],\"includes\":{},\"excludes\":{}},"
  "{\"names\":[\"personality\"],\"action\":\"SCMP_ACT_ALLOW\",\"args\":[{\"index\":0,\"value\":8,\"valueTwo\":0,\"op\":\"SCMP_CMP_EQ\"}],\"includes\":{},\"excludes\":{}},"
  "{\"names\":[\"arch_prctl\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"arches\":[\"amd64\",\"x32\"]},\"excludes\":{}},"
  "{\"names\":[\"breakpoint\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"arches\":[\"arm\",\"arm64\"]},\"excludes\":{}},"
  "{\"names\":[\"chroot\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"caps\":[\"CAP_SYS_CHROOT\"]},\"excludes\":{}},"
  "{\"names\":[\"mount\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"caps\":[\"CAP_SYS_ADMIN\"]},\"excludes\":{}},"
  "{\"names\":[\"mount\"],\"action\":\"SCMP_ACT_ERRNO\",\"errnoRet\":1,\"includes\":{},\"excludes\":{\"caps\":[\"CAP_SYS_ADMIN\"]}},"
  "{\"names\":[\"newish\"],\"action\":\"SCMP_ACT_ALLOW\",\"includes\":{\"minKernel\":\"5.8\"},\"excludes\":{}}"
  "]}";

static bool
has_rule (const cJSON *s, const char *name, const char *action)
{
  const cJSON *r;
  cJSON_ArrayForEach (r, cJSON_GetObjectItem (s, "syscalls"))
  {
    const cJSON *n;
    cJSON_ArrayForEach (n, cJSON_GetObjectItem (r, "names"))
    if (strcmp (n->valuestring, name) == 0 && strcmp (cJSON_GetObjectItem (r, "action")->valuestring, action) == 0)
      return true;
  }
  return false;
}

START_TEST (seccomp_is_converted_for_arch_caps_and_kernel)
{
  ps_error *err = NULL;
  cJSON *s = llb_seccomp_from_moby (profile, llb_default_caps, llb_n_default_caps, "amd64", 5, 10, &err);
  ck_assert_ptr_nonnull (s);
  ck_assert_str_eq (cJSON_GetObjectItem (s, "defaultAction")->valuestring, "SCMP_ACT_ERRNO");
  ck_assert_int_eq (cJSON_GetObjectItem (s, "defaultErrnoRet")->valueint, 38);
  cJSON *arches = cJSON_GetObjectItem (s, "architectures");
  ck_assert_int_eq (cJSON_GetArraySize (arches), 3);
  ck_assert_str_eq (cJSON_GetArrayItem (arches, 0)->valuestring, "SCMP_ARCH_X86_64");
  ck_assert (has_rule (s, "read", "SCMP_ACT_ALLOW"));
  ck_assert (has_rule (s, "arch_prctl", "SCMP_ACT_ALLOW"));
  ck_assert (!has_rule (s, "breakpoint", "SCMP_ACT_ALLOW"));
  ck_assert (has_rule (s, "chroot", "SCMP_ACT_ALLOW"));          /* CAP_SYS_CHROOT is a default */
  ck_assert (!has_rule (s, "mount", "SCMP_ACT_ALLOW"));          /* no CAP_SYS_ADMIN ... */
  ck_assert (has_rule (s, "mount", "SCMP_ACT_ERRNO"));           /* ... so EPERM */
  ck_assert (has_rule (s, "newish", "SCMP_ACT_ALLOW"));          /* 5.10 >= 5.8 */
  char *text = cJSON_PrintUnformatted (s);
  ck_assert_ptr_nonnull (strstr (text, "{\"index\":0,\"value\":8,\"op\":\"SCMP_CMP_EQ\"}"));
  ck_assert_ptr_null (strstr (text, "\"args\":[]"));
  free (text);
  cJSON_Delete (s);

  const char *admin[] = { "CAP_SYS_ADMIN" };
  s = llb_seccomp_from_moby (profile, admin, 1, "arm64", 4, 19, &err);
  ck_assert_ptr_nonnull (s);
  ck_assert_str_eq (cJSON_GetArrayItem (cJSON_GetObjectItem (s, "architectures"), 0)->valuestring,
                    "SCMP_ARCH_AARCH64");
  ck_assert (has_rule (s, "mount", "SCMP_ACT_ALLOW"));
  ck_assert (!has_rule (s, "mount", "SCMP_ACT_ERRNO"));
  ck_assert (!has_rule (s, "chroot", "SCMP_ACT_ALLOW"));
  ck_assert (has_rule (s, "breakpoint", "SCMP_ACT_ALLOW"));
  ck_assert (!has_rule (s, "newish", "SCMP_ACT_ALLOW")); /* 4.19 < 5.8 */
  cJSON_Delete (s);

  ck_assert_ptr_null (llb_seccomp_from_moby ("{\"syscalls\":[]}", admin, 1, "amd64", 5, 10, &err));
  ps_error_free (err);
}
END_TEST

/* The real profile of containers-common, when installed: converted as
   buildah 1.28 does it for `buildah run` (22 rules on amd64 with the
   default capabilities, captured from its config.json). */
START_TEST (seccomp_of_containers_common)
{
  char *text = NULL;
  if (ps_read_file ("/usr/share/containers/seccomp.json", 1 << 20, &text, NULL, NULL) < 0)
    return;
  ps_error *err = NULL;
  cJSON *s = llb_seccomp_from_moby (text, llb_default_caps, llb_n_default_caps, "amd64", 6, 1, &err);
  ck_assert_ptr_nonnull (s);
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (s, "syscalls")), 22);
  ck_assert (has_rule (s, "bpf", "SCMP_ACT_ERRNO"));
  ck_assert (has_rule (s, "chroot", "SCMP_ACT_ALLOW"));
  char *out = cJSON_PrintUnformatted (s);
  ck_assert_ptr_null (strstr (out, "valueTwo\":0")); /* omitted when 0, as buildah writes it */
  free (out);
  cJSON_Delete (s);
  free (text);
}
END_TEST

START_TEST (spec_has_buildahs_parts)
{
  uint32_t groups[] = { 1001, 10 };
  struct llb_user u = { .uid = 1000, .gid = 1001, .groups = groups, .n_groups = 2 };
  const char *args[] = { "/bin/sh", "-c", "true" };
  const char *env[] = { "PATH=/bin", "HOSTNAME=h" };
  struct llb_oci_mount mounts[] = {
    { "/dev/shm/x", "tmpfs", "tmpfs", { "rw", "private", "size=4096" } },
    { "/src", "bind", "/host/src", { "ro", "rbind", "private" } },
  };
  struct llb_rlimit rl[] = { { "RLIMIT_NOFILE", 1024, 1024 }, { "RLIMIT_CORE", UINT64_MAX, UINT64_MAX } };
  cJSON *sc = cJSON_Parse ("{\"defaultAction\":\"SCMP_ACT_ERRNO\"}");
  struct llb_oci_spec s = { .rootfs = "/mnt/root", .args = args, .n_args = 3, .env = env, .n_env = 2, .cwd = "/w",
                            .user = &u, .caps = llb_default_caps, .n_caps = llb_n_default_caps,
                            .host_network = false, .hostname = "h", .mounts = mounts, .n_mounts = 2,
                            .rlimits = rl, .n_rlimits = 2, .seccomp = sc };
  char *json = llb_oci_spec_json (&s);
  cJSON *c = cJSON_Parse (json);
  ck_assert_msg (c != NULL, "%s", json);
  ck_assert_ptr_nonnull (strstr (json, "\"hard\":18446744073709551615"));
  cJSON *p = cJSON_GetObjectItem (c, "process");
  ck_assert_int_eq (cJSON_GetObjectItem (cJSON_GetObjectItem (p, "user"), "uid")->valueint, 1000);
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (cJSON_GetObjectItem (p, "user"), "additionalGids")), 2);
  ck_assert_str_eq (cJSON_GetObjectItem (p, "cwd")->valuestring, "/w");
  cJSON *caps = cJSON_GetObjectItem (p, "capabilities");
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (caps, "bounding")), 11);
  ck_assert_ptr_null (cJSON_GetObjectItem (caps, "effective")); /* not root */
  cJSON *l = cJSON_GetObjectItem (c, "linux");
  cJSON *ns = cJSON_GetObjectItem (l, "namespaces");
  ck_assert_int_eq (cJSON_GetArraySize (ns), 5);
  ck_assert_str_eq (cJSON_GetObjectItem (cJSON_GetArrayItem (ns, 1), "type")->valuestring, "network");
  ck_assert_ptr_nonnull (cJSON_GetObjectItem (l, "seccomp"));
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (l, "maskedPaths")), 11);
  /* /dev/shm/x after /dev/shm, after /dev */
  int dev = -1, shm = -1, x = -1, i = 0;
  cJSON *m;
  cJSON_ArrayForEach (m, cJSON_GetObjectItem (c, "mounts"))
  {
    const char *d = cJSON_GetObjectItem (m, "destination")->valuestring;
    dev = strcmp (d, "/dev") == 0 ? i : dev;
    shm = strcmp (d, "/dev/shm") == 0 ? i : shm;
    x = strcmp (d, "/dev/shm/x") == 0 ? i : x;
    i++;
  }
  ck_assert_int_eq (i, 9);
  ck_assert (dev >= 0 && dev < shm && shm < x);
  free (json);
  cJSON_Delete (c);

  u.uid = 0;
  s.host_network = true;
  s.seccomp = NULL;
  json = llb_oci_spec_json (&s);
  c = cJSON_Parse (json);
  caps = cJSON_GetObjectItem (cJSON_GetObjectItem (c, "process"), "capabilities");
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (caps, "effective")), 11);
  ck_assert_int_eq (cJSON_GetArraySize (cJSON_GetObjectItem (cJSON_GetObjectItem (c, "linux"), "namespaces")), 4);
  ck_assert_ptr_null (strstr (json, "\"network\""));
  free (json);
  cJSON_Delete (c);
  cJSON_Delete (sc);
}
END_TEST

START_TEST (rlimits_default_and_given)
{
  struct llb_rlimit *r = NULL;
  size_t n = 0;
  ps_error *err = NULL;
  ck_assert_int_eq (llb_rlimits (NULL, NULL, NULL, 0, &r, &n, &err), 0);
  ck_assert_uint_eq (n, 2);
  ck_assert_str_eq (r[0].type, "RLIMIT_NOFILE");
  ck_assert_uint_eq (r[1].hard, 32768);
  free (r);
  const char *names[] = { "nofile", "core" };
  int64_t soft[] = { 100, -1 }, hard[] = { 200, -1 };
  ck_assert_int_eq (llb_rlimits (names, soft, hard, 2, &r, &n, &err), 0);
  ck_assert_uint_eq (n, 3);
  ck_assert_uint_eq (r[0].soft, 100);
  ck_assert_str_eq (r[1].type, "RLIMIT_CORE");
  ck_assert_uint_eq (r[1].hard, UINT64_MAX);
  ck_assert_str_eq (r[2].type, "RLIMIT_NPROC");
  free (r);
  const char *bad[] = { "bogus" };
  ck_assert_int_eq (llb_rlimits (bad, soft, hard, 1, &r, &n, &err), -1);
  ps_error_free (err);
}
END_TEST

PS_TEST_SUITE (llb_runc_exec)
{
  Suite *s = suite_create ("llb_runc_exec");
  TCase *tc = tcase_create ("core");
  tcase_add_test (tc, user_by_name_has_its_groups);
  tcase_add_test (tc, user_by_number_and_explicit_group);
  tcase_add_test (tc, unknown_user_or_group_is_an_error);
  tcase_add_test (tc, user_files_are_read_inside_the_rootfs);
  tcase_add_test (tc, seccomp_is_converted_for_arch_caps_and_kernel);
  tcase_add_test (tc, seccomp_of_containers_common);
  tcase_add_test (tc, spec_has_buildahs_parts);
  tcase_add_test (tc, rlimits_default_and_given);
  suite_add_tcase (s, tc);
  return s;
}
