/* test_llb_fileop.c — LLB FileOp pieces without buildah: Go's
 * filepath.Match (copy/rm wildcards), chmod(1) mode strings (modeStr),
 * /etc/passwd and /etc/group lookups (owner by name), and single actions
 * run on plain directories with BuildKit's copy semantics: wildcards,
 * include/exclude patterns, directory contents, owners, modes, times, and
 * no way out of the rootfs through a symlink. */
#define _GNU_SOURCE
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "solver/llb/fileop.h"
#include "solver/llb/fileutil.h"
#include "tests/unit/unit.h"
#include "tests/fixtures/session_peer.h"

/* ---- wildcards ------------------------------------------------------------------- */

struct match_case
{
  const char *pattern, *name;
  int want; /* 1, 0, -1 bad pattern */
};

/* Go's own path/filepath match tests, with '/' as separator. */
static const struct match_case match_cases[] = {
  { "abc", "abc", 1 },
  { "*", "abc", 1 },
  { "*c", "abc", 1 },
  { "a*", "a", 1 },
  { "a*", "abc", 1 },
  { "a*", "ab/c", 0 },
  { "a*/b", "abc/b", 1 },
  { "a*/b", "a/c/b", 0 },
  { "a*b*c*d*e*/f", "axbxcxdxe/f", 1 },
  { "a*b*c*d*e*/f", "axbxcxdxexxx/f", 1 },
  { "a*b*c*d*e*/f", "axbxcxdxe/xxx/f", 0 },
  { "a*b*c*d*e*/f", "axbxcxdxexxx/fff", 0 },
  { "a*b?c*x", "abxbbxdbxebxczzx", 1 },
  { "a*b?c*x", "abxbbxdbxebxczzy", 0 },
  { "ab[c]", "abc", 1 },
  { "ab[b-d]", "abc", 1 },
  { "ab[e-g]", "abc", 0 },
  { "ab[^c]", "abc", 0 },
  { "ab[^b-d]", "abc", 0 },
  { "ab[^e-g]", "abc", 1 },
  { "a\\*b", "a*b", 1 },
  { "a\\*b", "ab", 0 },
  { "a?b", "a\xe2\x98\xba" "b", 1 },
  { "a[^a]b", "a\xe2\x98\xba" "b", 1 },
  { "a???b", "a\xe2\x98\xba" "b", 0 },
  { "a?b", "a/b", 0 },
  { "a*b", "a/b", 0 },
  { "[\\]a]", "]", 1 },
  { "[\\-]", "-", 1 },
  { "[x\\-]", "-", 1 },
  { "[x\\-]", "z", 0 },
  { "[]a]", "]", -1 },
  { "[-]", "-", -1 },
  { "[x-]", "x", -1 },
  { "[-x]", "x", -1 },
  { "\\", "a", -1 },
  { "[a-b-c]", "a", -1 },
  { "[", "a", -1 },
  { "[^bc", "a", -1 },
  { "a[", "ab", -1 },
  { "a/b[", "x", -1 },
  { "*x", "xxx", 1 },
  { "[!a]", "!", 1 }, /* '!' is no negation in Go */
  { "*.txt", ".hidden.txt", 1 },
};

START_TEST (glob_matches_as_go_filepath_match)
{
  for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++)
    {
      const struct match_case *c = &match_cases[i];
      ck_assert_msg (llb_glob_match (c->pattern, c->name) == c->want, "Match(%s, %s) = %d, want %d", c->pattern,
                     c->name, llb_glob_match (c->pattern, c->name), c->want);
      ck_assert_msg (llb_glob_valid (c->pattern) == (c->want >= 0), "valid(%s)", c->pattern);
    }
}
END_TEST

START_TEST (wildcards_are_unescaped_stars_questions_and_brackets)
{
  ck_assert (llb_has_wildcards ("/app/*.txt"));
  ck_assert (llb_has_wildcards ("a?"));
  ck_assert (llb_has_wildcards ("[ab]"));
  ck_assert (!llb_has_wildcards ("/app/file.txt"));
  ck_assert (!llb_has_wildcards ("a\\*b"));
  ck_assert (!llb_has_wildcards ("trailing\\"));
}
END_TEST

/* ---- modes ---------------------------------------------------------------------------- */

static mode_t
apply (const char *s, mode_t mode)
{
  struct llb_modeset m;
  ck_assert_msg (llb_modeset_parse (s, &m) == 0, "parse %s", s);
  mode_t r = llb_modeset_apply (&m, mode);
  llb_modeset_free (&m);
  return r & 07777;
}

START_TEST (mode_strings_as_chmod)
{
  ck_assert_uint_eq (apply ("+x", S_IFREG | 0644), 0755);
  ck_assert_uint_eq (apply ("u+rwx,go-w", S_IFREG | 0666), 0744);
  ck_assert_uint_eq (apply ("go=u-w", S_IFREG | 0750), 0755);
  ck_assert_uint_eq (apply ("a=r", S_IFREG | 0777), 0444);
  ck_assert_uint_eq (apply ("755", S_IFREG | 0600), 0755);
  ck_assert_uint_eq (apply ("0640", S_IFDIR | 04777), 0640);
  ck_assert_uint_eq (apply ("u+s", S_IFREG | 0755), 04755);
  ck_assert_uint_eq (apply ("g+s,o-rx", S_IFREG | 0755), 02750);
  ck_assert_uint_eq (apply ("+t", S_IFDIR | 0777), 01777);
  ck_assert_uint_eq (apply ("o+t", S_IFDIR | 0777), 0777); /* "other" has no sticky bit */
  ck_assert_uint_eq (apply ("u+r-w", S_IFREG | 0200), 0400);
  /* X: execute for directories and already executable files only */
  ck_assert_uint_eq (apply ("=rw,+X", S_IFDIR | 0700), 0777);
  ck_assert_uint_eq (apply ("=rw,+X", S_IFREG | 0644), 0666);
  ck_assert_uint_eq (apply ("=rw,+X", S_IFREG | 0744), 0777);
  ck_assert_uint_eq (apply ("go=", S_IFREG | 0777), 0700);
}
END_TEST

START_TEST (bad_mode_strings_are_refused)
{
  const char *bad[] = { "", "x", "u", "u+x,", "8", "u*x", "1777777", "+x,,-w", "rwx" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    {
      struct llb_modeset m;
      ck_assert_msg (llb_modeset_parse (bad[i], &m) < 0, "\"%s\" parsed", bad[i]);
      ck_assert_ptr_null (m.cmds);
    }
}
END_TEST

/* ---- passwd and group ------------------------------------------------------------------- */

static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
                             "# app:x:1:1::/:/bin/false\n"
                             "\n"
                             "  app:x:1234:1235:App:/home/app:/bin/sh  \r\n"
                             "app2:x:2000:2000::/:/bin/sh\n"
                             "app:x:9:9::/:/bin/sh\n"
                             "broken:x:abc:1::/:/bin/sh\n"
                             "short:x:5\n"
                             "last:x:7:8";

START_TEST (passwd_lookup_takes_the_first_entry_of_that_exact_name)
{
  uint32_t uid = 99, gid = 99;
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "app", &uid, &gid), 1);
  ck_assert_uint_eq (uid, 1234);
  ck_assert_uint_eq (gid, 1235);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "root", &uid, &gid), 1);
  ck_assert_uint_eq (uid, 0);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "last", &uid, &gid), 1);
  ck_assert_uint_eq (uid, 7);
  ck_assert_uint_eq (gid, 8);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "ap", &uid, &gid), 0);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "nobody", &uid, &gid), 0);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "# app", &uid, &gid), 0);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "broken", &uid, &gid), -1);
  ck_assert_int_eq (llb_passwd_lookup (passwd, strlen (passwd), "short", &uid, &gid), -1);
  ck_assert_int_eq (llb_passwd_lookup ("", 0, "root", &uid, &gid), 0);
  /* a NUL or a length cut keeps lookups inside the text */
  ck_assert_int_eq (llb_passwd_lookup (passwd, 10, "app", &uid, &gid), 0);
}
END_TEST

START_TEST (group_lookup_reads_the_third_field)
{
  const char group[] = "root:x:0:\nstaff:x:50:app,root\n#x:x:1:\nwheel:x:\nbig:x:4294967296:\n";
  uint32_t gid = 0;
  ck_assert_int_eq (llb_group_lookup (group, strlen (group), "staff", &gid), 1);
  ck_assert_uint_eq (gid, 50);
  ck_assert_int_eq (llb_group_lookup (group, strlen (group), "x", &gid), 0);
  ck_assert_int_eq (llb_group_lookup (group, strlen (group), "wheel", &gid), -1);
  ck_assert_int_eq (llb_group_lookup (group, strlen (group), "big", &gid), -1);
  ck_assert_int_eq (llb_group_lookup (group, strlen (group), "app", &gid), 0);
}
END_TEST

/* ---- actions on directories ---------------------------------------------------------------- */

static void
put (const char *root, const char *rel, const char *data, mode_t mode)
{
  char *p = NULL;
  ck_assert_int_ge (asprintf (&p, "%s/%s", root, rel), 0);
  /* parents */
  for (char *s = p + strlen (root) + 1; (s = strchr (s, '/')) != NULL; s++)
    {
      *s = '\0';
      mkdir (p, 0755);
      *s = '/';
    }
  int fd = open (p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge (fd, 0);
  ck_assert_int_eq (write (fd, data, strlen (data)), (ssize_t) strlen (data));
  close (fd);
  chmod (p, mode);
  free (p);
}

static bool
exists (const char *root, const char *rel)
{
  char *p = NULL;
  ck_assert_int_ge (asprintf (&p, "%s/%s", root, rel), 0);
  struct stat st;
  bool r = lstat (p, &st) == 0;
  free (p);
  return r;
}

static struct stat
stat_of (const char *root, const char *rel)
{
  char *p = NULL;
  ck_assert_int_ge (asprintf (&p, "%s/%s", root, rel), 0);
  struct stat st;
  ck_assert_msg (lstat (p, &st) == 0, "%s missing", rel);
  free (p);
  return st;
}

static void
rm_root (char *root)
{
  ps_rm_rf (root, NULL);
  free (root);
}

struct copy_case
{
  Pb__FileAction a;
  Pb__FileActionCopy c;
};

static void
copy_init (struct copy_case *k, const char *src, const char *dest)
{
  Pb__FileAction a = PB__FILE_ACTION__INIT;
  Pb__FileActionCopy c = PB__FILE_ACTION_COPY__INIT;
  k->a = a;
  k->c = c;
  k->c.src = (char *) src;
  k->c.dest = (char *) dest;
  k->c.mode = -1;
  k->c.timestamp = -1;
  k->a.action_case = PB__FILE_ACTION__ACTION_COPY;
  k->a.copy = &k->c;
  k->a.input = 0;
  k->a.secondaryinput = 1;
}

static int
run (const Pb__FileAction *a, const char *root, const char *src, ps_error **err)
{
  return llb_file_action_apply (a, root, src, root, root, "the base", "the base", err);
}

START_TEST (wildcard_copy_takes_each_match_and_empty_is_an_error_unless_allowed)
{
  char *src = test_mkdtemp (), *dst = test_mkdtemp ();
  put (src, "app/a.txt", "a", 0644);
  put (src, "app/b.txt", "b", 0644);
  put (src, "app/c.md", "c", 0644);
  put (src, "app/sub/d.txt", "d", 0644);
  struct copy_case k;
  copy_init (&k, "/app/*.txt", "/out/");
  k.c.allowwildcard = true;
  k.c.createdestpath = true;
  ps_error *err = NULL;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "out/a.txt") && exists (dst, "out/b.txt"));
  ck_assert (!exists (dst, "out/c.md") && !exists (dst, "out/d.txt") && !exists (dst, "out/sub"));

  /* a wildcard matching a directory copies it whole, by its name */
  copy_init (&k, "/ap?", "/out2/");
  k.c.allowwildcard = true;
  k.c.createdestpath = true;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "out2/app/sub/d.txt"));

  copy_init (&k, "/app/*.none", "/out/");
  k.c.allowwildcard = true;
  ck_assert_int_eq (run (&k.a, dst, src, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_msg (strstr (err->msg, "no source matches"), "%s", err->msg);
  ps_error_free (err);
  err = NULL;
  k.c.allowemptywildcard = true;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  rm_root (src);
  rm_root (dst);
}
END_TEST

START_TEST (copy_include_and_exclude_patterns_filter_below_the_source)
{
  char *src = test_mkdtemp (), *dst = test_mkdtemp ();
  put (src, "ctx/keep.txt", "k", 0644);
  put (src, "ctx/skip.log", "s", 0644);
  put (src, "ctx/docs/a.md", "a", 0644);
  put (src, "ctx/docs/b.txt", "b", 0644);
  put (src, "ctx/other/c.bin", "c", 0644);
  struct copy_case k;
  char *inc[] = { "*.txt", "docs" };
  char *exc[] = { "docs/*.txt" };
  copy_init (&k, "/ctx", "/out");
  k.c.include_patterns = inc;
  k.c.n_include_patterns = 2;
  k.c.exclude_patterns = exc;
  k.c.n_exclude_patterns = 1;
  ps_error *err = NULL;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "out/keep.txt"));
  ck_assert (exists (dst, "out/docs/a.md"));
  ck_assert (!exists (dst, "out/docs/b.txt"));
  ck_assert (!exists (dst, "out/skip.log"));
  ck_assert (!exists (dst, "out/other")); /* not made: nothing below it is included */
  rm_root (src);
  rm_root (dst);
}
END_TEST

START_TEST (copy_into_existing_dir_dir_contents_and_create_dest_path)
{
  char *src = test_mkdtemp (), *dst = test_mkdtemp ();
  put (src, "d/f", "f", 0640);
  put (dst, "exists/.keep", "", 0644);
  struct copy_case k;
  ps_error *err = NULL;
  /* a directory into an existing directory keeps its name ... */
  copy_init (&k, "/d", "/exists");
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "exists/d/f"));
  /* ... unless its contents are asked for */
  copy_init (&k, "/d", "/exists");
  k.c.dircopycontents = true;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "exists/f"));
  /* a directory to a new path becomes it */
  copy_init (&k, "/d", "/new");
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "new/f"));
  ck_assert_uint_eq (stat_of (dst, "new/f").st_mode & 07777, 0640);
  /* missing parents without createDestPath: 400 */
  copy_init (&k, "/d/f", "/a/b/c");
  ck_assert_int_eq (run (&k.a, dst, src, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  err = NULL;
  k.c.createdestpath = true;
  k.c.mode = 0600;
  k.c.timestamp = 1000000000LL * 1234567;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  struct stat st = stat_of (dst, "a/b/c");
  ck_assert_uint_eq (st.st_mode & 07777, 0600);
  ck_assert_int_eq (st.st_mtim.tv_sec, 1234567);
  /* made parents get the mode too (as BuildKit) and the time */
  ck_assert_uint_eq (stat_of (dst, "a/b").st_mode & 07777, 0600);
  ck_assert_int_eq (stat_of (dst, "a").st_mtim.tv_sec, 1234567);
  /* a file into an existing directory keeps its name */
  put (src, "g", "g", 0644);
  copy_init (&k, "/g", "/exists/d");
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "exists/d/g"));
  /* a directory's contents onto a file are refused */
  copy_init (&k, "/d", "/exists/.keep");
  k.c.dircopycontents = true;
  ck_assert_int_eq (run (&k.a, dst, src, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  rm_root (src);
  rm_root (dst);
}
END_TEST

START_TEST (copy_mode_str_follow_symlink_and_owner_by_id)
{
  char *src = test_mkdtemp (), *dst = test_mkdtemp ();
  put (src, "bin/tool", "#!/bin/sh\n", 0644);
  put (src, "bin/dir/x", "x", 0600);
  char *l = NULL;
  ck_assert_int_ge (asprintf (&l, "%s/link", src), 0);
  ck_assert_int_eq (symlink ("bin/tool", l), 0);
  free (l);
  struct copy_case k;
  ps_error *err = NULL;
  copy_init (&k, "/bin", "/b");
  k.c.modestr = "u+x,go-rwx";
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert_uint_eq (stat_of (dst, "b/tool").st_mode & 07777, 0700);
  ck_assert_uint_eq (stat_of (dst, "b/dir/x").st_mode & 07777, 0700);

  copy_init (&k, "/link", "/l1");
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (S_ISLNK (stat_of (dst, "l1").st_mode));
  copy_init (&k, "/link", "/l2");
  k.c.followsymlink = true;
  Pb__ChownOpt own = PB__CHOWN_OPT__INIT;
  Pb__UserOpt u = PB__USER_OPT__INIT;
  u.user_case = PB__USER_OPT__USER_BY_ID;
  u.byid = 4321;
  own.user = &u;
  k.c.owner = &own;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  struct stat st = stat_of (dst, "l2");
  ck_assert (S_ISREG (st.st_mode));
  ck_assert_uint_eq (st.st_uid, 4321);
  ck_assert_uint_eq (st.st_gid, 4321); /* a uid alone sets the same gid */
  rm_root (src);
  rm_root (dst);
}
END_TEST

static Pb__FileAction
mkfile_owned_by (Pb__FileActionMkFile *mk, Pb__ChownOpt *own, Pb__UserOpt *u, Pb__NamedUserOpt *nu, Pb__UserOpt *g,
                 Pb__NamedUserOpt *ng, const char *user, const char *group)
{
  Pb__FileAction a = PB__FILE_ACTION__INIT;
  Pb__FileActionMkFile m = PB__FILE_ACTION_MK_FILE__INIT;
  Pb__ChownOpt o = PB__CHOWN_OPT__INIT;
  Pb__UserOpt ui = PB__USER_OPT__INIT, gi = PB__USER_OPT__INIT;
  Pb__NamedUserOpt n = PB__NAMED_USER_OPT__INIT, gn = PB__NAMED_USER_OPT__INIT;
  *mk = m;
  *own = o;
  *u = ui;
  *g = gi;
  *nu = n;
  *ng = gn;
  mk->path = "/owned";
  mk->mode = 0644;
  mk->timestamp = -1;
  mk->owner = own;
  if (user)
    {
      nu->name = (char *) user;
      nu->input = -1;
      u->user_case = PB__USER_OPT__USER_BY_NAME;
      u->byname = nu;
      own->user = u;
    }
  if (group)
    {
      ng->name = (char *) group;
      ng->input = -1;
      g->user_case = PB__USER_OPT__USER_BY_NAME;
      g->byname = ng;
      own->group = g;
    }
  a.action_case = PB__FILE_ACTION__ACTION_MKFILE;
  a.mkfile = mk;
  return a;
}

START_TEST (owner_by_name_reads_the_rootfs_passwd_and_group_never_the_hosts)
{
  char *root = test_mkdtemp ();
  put (root, "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1234:1235::/home/app:/bin/sh\n", 0644);
  put (root, "etc/group", "root:x:0:\nstaff:x:50:app\n", 0644);
  Pb__FileActionMkFile mk;
  Pb__ChownOpt own;
  Pb__UserOpt u, g;
  Pb__NamedUserOpt nu, ng;
  ps_error *err = NULL;

  Pb__FileAction a = mkfile_owned_by (&mk, &own, &u, &nu, &g, &ng, "app", NULL);
  ck_assert_int_eq (run (&a, root, NULL, &err), 0);
  ck_assert_uint_eq (stat_of (root, "owned").st_uid, 1234);
  ck_assert_uint_eq (stat_of (root, "owned").st_gid, 1235);
  a = mkfile_owned_by (&mk, &own, &u, &nu, &g, &ng, "app", "staff");
  ck_assert_int_eq (run (&a, root, NULL, &err), 0);
  ck_assert_uint_eq (stat_of (root, "owned").st_gid, 50);

  a = mkfile_owned_by (&mk, &own, &u, &nu, &g, &ng, "ghost", NULL);
  ck_assert_int_eq (run (&a, root, NULL, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_msg (strstr (err->msg, "\"ghost\" not found in /etc/passwd of the base"), "%s", err->msg);
  ps_error_free (err);
  err = NULL;

  /* /etc/passwd -> a symlink climbing out resolves inside the root: the
     host's "daemon" is not found */
  char *l = NULL;
  ck_assert_int_ge (asprintf (&l, "%s/etc/passwd", root), 0);
  ck_assert_int_eq (unlink (l), 0);
  ck_assert_int_eq (symlink ("../../../../../../../../etc/passwd-elsewhere", l), 0);
  free (l);
  a = mkfile_owned_by (&mk, &own, &u, &nu, &g, &ng, "daemon", NULL);
  ck_assert_int_eq (run (&a, root, NULL, &err), -1);
  ck_assert_msg (strstr (err->msg, "has no /etc/passwd"), "%s", err->msg);
  ps_error_free (err);
  err = NULL;
  put (root, "etc/passwd-elsewhere", "daemon:x:77:78::/:/bin/false\n", 0644);
  ck_assert_int_eq (run (&a, root, NULL, &err), 0);
  ck_assert_uint_eq (stat_of (root, "owned").st_uid, 77);
  rm_root (root);
}
END_TEST

/* A gzip'd tar at root/rel holding one file `name` with `data`, mode 0640. */
static void
put_tar_gz (const char *root, const char *rel, const char *name, const char *data)
{
  char *p = NULL;
  ck_assert_int_ge (asprintf (&p, "%s/%s", root, rel), 0);
  struct archive *a = archive_write_new ();
  archive_write_set_format_pax_restricted (a);
  archive_write_add_filter_gzip (a);
  ck_assert_int_eq (archive_write_open_filename (a, p), ARCHIVE_OK);
  struct archive_entry *e = archive_entry_new ();
  archive_entry_set_pathname (e, name);
  archive_entry_set_filetype (e, AE_IFREG);
  archive_entry_set_perm (e, 0640);
  archive_entry_set_size (e, (la_int64_t) strlen (data));
  ck_assert_int_eq (archive_write_header (a, e), ARCHIVE_OK);
  ck_assert_int_eq (archive_write_data (a, data, strlen (data)), (la_ssize_t) strlen (data));
  archive_entry_free (e);
  archive_write_close (a);
  archive_write_free (a);
  free (p);
}

START_TEST (add_unpacks_archives_and_copies_other_files)
{
  char *src = test_mkdtemp (), *dst = test_mkdtemp ();
  put_tar_gz (src, "app.tar.gz", "pkg/readme", "inside\n");
  put (src, "plain.gz", "not gzip at all\n", 0644);
  struct copy_case k;
  copy_init (&k, "/app.tar.gz", "/opt/");
  k.c.attemptunpackdockercompatibility = true;
  k.c.createdestpath = true;
  ps_error *err = NULL;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "opt/pkg/readme") && !exists (dst, "opt/app.tar.gz"));
  ck_assert_int_eq (stat_of (dst, "opt/pkg/readme").st_mode & 07777, 0640);
  copy_init (&k, "/plain.gz", "/opt/");
  k.c.attemptunpackdockercompatibility = true;
  k.c.createdestpath = true;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "opt/plain.gz"));
  rm_root (src);
  rm_root (dst);
}
END_TEST

START_TEST (required_paths_must_exist_in_the_source)
{
  char *src = test_mkdtemp (), *dst = test_mkdtemp ();
  put (src, "app/a.txt", "a", 0644);
  struct copy_case k;
  copy_init (&k, "/app", "/out/");
  k.c.createdestpath = true;
  char *req[] = { (char *) "/app/a.txt", (char *) "/app/*.txt" };
  k.c.required_paths = req;
  k.c.n_required_paths = 2;
  ps_error *err = NULL;
  ck_assert_int_eq (run (&k.a, dst, src, &err), 0);
  ck_assert (exists (dst, "out/app/a.txt"));
  char *missing[] = { (char *) "/app/a.txt", (char *) "/app/gone.txt" };
  k.c.required_paths = missing;
  ck_assert_int_eq (run (&k.a, dst, src, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_msg (strstr (err->msg, "\"/app/gone.txt\" not found"), "%s", err->msg);
  ps_error_free (err);
  rm_root (src);
  rm_root (dst);
}
END_TEST

START_TEST (rm_with_wildcards_removes_every_match)
{
  char *root = test_mkdtemp ();
  put (root, "tmp/a.log", "", 0644);
  put (root, "tmp/b.log", "", 0644);
  put (root, "tmp/keep", "", 0644);
  put (root, "tmp/dir.log/x", "", 0644);
  Pb__FileAction a = PB__FILE_ACTION__INIT;
  Pb__FileActionRm rm = PB__FILE_ACTION_RM__INIT;
  rm.path = "/tmp/*.log";
  rm.allowwildcard = true;
  a.action_case = PB__FILE_ACTION__ACTION_RM;
  a.rm = &rm;
  ps_error *err = NULL;
  ck_assert_int_eq (run (&a, root, NULL, &err), 0);
  ck_assert (!exists (root, "tmp/a.log") && !exists (root, "tmp/b.log") && !exists (root, "tmp/dir.log"));
  ck_assert (exists (root, "tmp/keep"));
  /* no match is fine */
  ck_assert_int_eq (run (&a, root, NULL, &err), 0);
  /* without allowWildcard the pattern is a name */
  rm.allowwildcard = false;
  ck_assert_int_eq (run (&a, root, NULL, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
  rm_root (root);
}
END_TEST

PS_TEST_SUITE (llb_fileop)
{
  Suite *s = suite_create ("llb_fileop");
  TCase *tc = tcase_create ("match");
  tcase_add_test (tc, glob_matches_as_go_filepath_match);
  tcase_add_test (tc, wildcards_are_unescaped_stars_questions_and_brackets);
  tcase_add_test (tc, mode_strings_as_chmod);
  tcase_add_test (tc, bad_mode_strings_are_refused);
  tcase_add_test (tc, passwd_lookup_takes_the_first_entry_of_that_exact_name);
  tcase_add_test (tc, group_lookup_reads_the_third_field);
  suite_add_tcase (s, tc);

  tc = tcase_create ("actions");
  tcase_add_test (tc, wildcard_copy_takes_each_match_and_empty_is_an_error_unless_allowed);
  tcase_add_test (tc, copy_include_and_exclude_patterns_filter_below_the_source);
  tcase_add_test (tc, copy_into_existing_dir_dir_contents_and_create_dest_path);
  tcase_add_test (tc, copy_mode_str_follow_symlink_and_owner_by_id);
  tcase_add_test (tc, owner_by_name_reads_the_rootfs_passwd_and_group_never_the_hosts);
  tcase_add_test (tc, rm_with_wildcards_removes_every_match);
  tcase_add_test (tc, add_unpacks_archives_and_copies_other_files);
  tcase_add_test (tc, required_paths_must_exist_in_the_source);
  suite_add_tcase (s, tc);
  return s;
}
