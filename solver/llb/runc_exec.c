/* runc_exec.c — an LLB exec as one `runc run` (see runc_exec.h). */
#define _GNU_SOURCE
#include "solver/llb/runc_exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/process.h"
#include "solver/buildah.h"
#include "solver/runc_state.h"

/* The largest /etc/passwd or /etc/group read (as the file ops' chown). */
#define LLB_RUNC_USER_FILE_MAX (4 * 1024 * 1024)
/* containers.conf's seccomp_profile default. */
#define LLB_SECCOMP_PROFILE "/usr/share/containers/seccomp.json"
#define LLB_SECCOMP_PROFILE_MAX (1024 * 1024)

/* ---- the user ------------------------------------------------------------ */

void
llb_user_clear (struct llb_user *u)
{
  free (u->groups);
  memset (u, 0, sizeof *u);
}

static bool
parse_u32 (const char *s, size_t n, uint32_t *out)
{
  if (n == 0 || n > 10)
    return false;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    {
      if (s[i] < '0' || s[i] > '9')
        return false;
      v = v * 10 + (uint64_t) (s[i] - '0');
    }
  if (v > UINT32_MAX)
    return false;
  *out = (uint32_t) v;
  return true;
}

/* Each non-blank, non-comment line of `text` split at ':' into at most
   `max` fields (the last one keeps the rest); `fn` returns true to stop. */
typedef bool (*line_fn) (const char **f, const size_t *fl, size_t n, void *ud);

static void
each_entry (const char *text, size_t len, size_t max, line_fn fn, void *ud)
{
  const char *p = text, *end = text + len;
  while (text && p < end)
    {
      const char *nl = memchr (p, '\n', (size_t) (end - p));
      const char *le = nl ? nl : end;
      const char *f[8];
      size_t fl[8], n = 0;
      if (le > p && *p != '#')
        {
          const char *s = p;
          while (n < max)
            {
              const char *c = n + 1 < max ? memchr (s, ':', (size_t) (le - s)) : NULL;
              f[n] = s;
              fl[n] = (size_t) ((c ? c : le) - s);
              n++;
              if (c == NULL)
                break;
              s = c + 1;
            }
          if (fn (f, fl, n, ud))
            return;
        }
      p = le + 1;
    }
}

struct pw_query
{
  const char *name;  /* by name, or */
  uint32_t uid;      /* by uid when name is NULL */
  bool found;
  uint32_t out_uid, out_gid;
  char *out_name;
};

static bool
pw_match (const char **f, const size_t *fl, size_t n, void *ud)
{
  struct pw_query *q = ud;
  uint32_t uid, gid;
  if (n < 4 || !parse_u32 (f[2], fl[2], &uid) || !parse_u32 (f[3], fl[3], &gid))
    return false;
  if (q->name ? (strlen (q->name) == fl[0] && memcmp (q->name, f[0], fl[0]) == 0) : uid == q->uid)
    {
      q->found = true;
      q->out_uid = uid;
      q->out_gid = gid;
      q->out_name = xstrndup (f[0], fl[0]);
      return true;
    }
  return false;
}

struct gr_query
{
  const char *name;   /* a group by name, or */
  const char *member; /* every group listing this user */
  bool found;
  uint32_t gid;
  uint32_t *gids;
  size_t n_gids;
};

static bool
gr_match (const char **f, const size_t *fl, size_t n, void *ud)
{
  struct gr_query *q = ud;
  uint32_t gid;
  if (n < 3 || !parse_u32 (f[2], fl[2], &gid))
    return false;
  if (q->name)
    {
      if (strlen (q->name) == fl[0] && memcmp (q->name, f[0], fl[0]) == 0)
        {
          q->found = true;
          q->gid = gid;
          return true;
        }
      return false;
    }
  if (n < 4)
    return false;
  size_t ml = strlen (q->member);
  const char *m = f[3], *me = f[3] + fl[3];
  while (m < me)
    {
      const char *c = memchr (m, ',', (size_t) (me - m));
      const char *e = c ? c : me;
      /* trimmed of blanks, as Go's strings.TrimSpace */
      const char *a = m, *b = e;
      while (a < b && (*a == ' ' || *a == '\t' || *a == '\r'))
        a++;
      while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
        b--;
      if ((size_t) (b - a) == ml && memcmp (a, q->member, ml) == 0)
        {
          q->gids = xrealloc (q->gids, (q->n_gids + 1) * sizeof *q->gids);
          q->gids[q->n_gids++] = gid;
          break;
        }
      m = e + 1;
    }
  return false;
}

static void
add_group (struct llb_user *u, uint32_t gid)
{
  for (size_t i = 0; i < u->n_groups; i++)
    if (u->groups[i] == gid)
      return;
  u->groups = xrealloc (u->groups, (u->n_groups + 1) * sizeof *u->groups);
  u->groups[u->n_groups++] = gid;
}

int
llb_user_from_text (const char *passwd, size_t passwd_len, const char *group, size_t group_len, const char *spec,
                    struct llb_user *u, ps_error **err)
{
  memset (u, 0, sizeof *u);
  const char *colon = spec ? strchr (spec, ':') : NULL;
  cleanup_free char *uspec = spec ? xstrndup (spec, colon ? (size_t) (colon - spec) : strlen (spec)) : xstrdup ("");
  const char *gspec = colon ? colon + 1 : NULL;
  cleanup_free char *uname = NULL;

  if (*uspec == '\0')
    uspec = (free (uspec), xstrdup ("0"));
  uint32_t n;
  struct pw_query q = { 0 };
  if (parse_u32 (uspec, strlen (uspec), &n))
    {
      /* a uid: its passwd entry's group, else 0 */
      q.uid = n;
      each_entry (passwd, passwd_len, 7, pw_match, &q);
      u->uid = n;
      u->gid = q.found ? q.out_gid : 0;
      uname = q.out_name;
    }
  else
    {
      q.name = uspec;
      each_entry (passwd, passwd_len, 7, pw_match, &q);
      if (!q.found)
        return ps_error_set (err, 400, "determining run uid: user \"%s\" not found in the rootfs's /etc/passwd%s",
                             uspec, passwd ? "" : " (it has none)");
      u->uid = q.out_uid;
      u->gid = q.out_gid;
      uname = q.out_name;
    }
  if (gspec && *gspec)
    {
      if (parse_u32 (gspec, strlen (gspec), &n))
        u->gid = n;
      else
        {
          struct gr_query g = { .name = gspec };
          each_entry (group, group_len, 4, gr_match, &g);
          if (!g.found)
            return ps_error_set (err, 400, "determining run gid: group \"%s\" not found in the rootfs's /etc/group%s",
                                 gspec, group ? "" : " (it has none)");
          u->gid = g.gid;
        }
    }
  /* buildah: the primary gid, then (user without a group) the groups
     listing the user's name */
  add_group (u, u->gid);
  if (gspec == NULL && uname)
    {
      struct gr_query g = { .member = uname };
      each_entry (group, group_len, 4, gr_match, &g);
      for (size_t i = 0; i < g.n_gids; i++)
        add_group (u, g.gids[i]);
      free (g.gids);
    }
  return 0;
}

/* `path` below `rootfs` as if it were "/"; 1 read, 0 absent. */
static int
read_in_root (int root_fd, const char *path, char **text, size_t *len, ps_error **err)
{
  *text = NULL;
  *len = 0;
  struct open_how how = { .flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC,
                          .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
  cleanup_close int fd = (int) syscall (SYS_openat2, root_fd, path, &how, sizeof how);
  if (fd < 0)
    {
      if (errno == ENOENT || errno == ENOTDIR)
        return 0;
      return ps_error_set_errno (err, 400, errno, "open /%s in the rootfs", path);
    }
  cleanup_free char *what = xasprintf ("/%s in the rootfs", path);
  if (ps_read_regular_fd (fd, what, LLB_RUNC_USER_FILE_MAX, text, len, err) < 0)
    return -1;
  return 1;
}

int
llb_user_resolve (const char *rootfs, const char *spec, struct llb_user *u, ps_error **err)
{
  memset (u, 0, sizeof *u);
  cleanup_close int root = open (rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0)
    return ps_error_set_errno (err, 500, errno, "open the rootfs %s", rootfs);
  cleanup_free char *pw = NULL, *gr = NULL;
  size_t pwl = 0, grl = 0;
  if (read_in_root (root, "etc/passwd", &pw, &pwl, err) < 0 || read_in_root (root, "etc/group", &gr, &grl, err) < 0)
    return -1;
  return llb_user_from_text (pw, pwl, gr, grl, spec, u, err);
}

/* ---- seccomp ------------------------------------------------------------- */

static bool
str_in (const cJSON *arr, const char *s)
{
  const cJSON *it;
  cJSON_ArrayForEach (it, arr)
  {
    const char *v = cJSON_GetStringValue (it);
    if (v && strcmp (v, s) == 0)
      return true;
  }
  return false;
}

static bool
cap_in (const char *const *caps, size_t n, const char *c)
{
  for (size_t i = 0; i < n; i++)
    if (strcmp (caps[i], c) == 0)
      return true;
  return false;
}

/* moby's kernel "maj.min" against the running one: 1 at or above. */
static int
kernel_at_least (const cJSON *mk, int kmaj, int kmin)
{
  const char *s = cJSON_GetStringValue (mk);
  int maj = 0, min = 0;
  if (s == NULL || sscanf (s, "%d.%d", &maj, &min) < 1)
    return -1;
  return kmaj > maj || (kmaj == maj && kmin >= min);
}

/* Go's GOARCH name for a seccomp architecture of the profile's archMap. */
static const char *
scmp_arch (const char *goarch)
{
  static const char *const map[][2] = {
    { "amd64", "SCMP_ARCH_X86_64" }, { "386", "SCMP_ARCH_X86" },     { "arm64", "SCMP_ARCH_AARCH64" },
    { "arm", "SCMP_ARCH_ARM" },      { "ppc64le", "SCMP_ARCH_PPC64LE" }, { "s390x", "SCMP_ARCH_S390X" },
    { "riscv64", "SCMP_ARCH_RISCV64" }, { "mips64", "SCMP_ARCH_MIPS64" }, { "mips64le", "SCMP_ARCH_MIPSEL64" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (map); i++)
    if (strcmp (map[i][0], goarch) == 0)
      return map[i][1];
  return NULL;
}

static cJSON *
rule (const cJSON *names, const cJSON *call)
{
  cJSON *r = cJSON_CreateObject ();
  cJSON_AddItemToObject (r, "names", cJSON_Duplicate (names, true));
  cJSON_AddStringToObject (r, "action", cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (call, "action")));
  const cJSON *errno_ret = cJSON_GetObjectItemCaseSensitive (call, "errnoRet");
  if (cJSON_IsNumber (errno_ret))
    cJSON_AddNumberToObject (r, "errnoRet", errno_ret->valuedouble);
  const cJSON *args = cJSON_GetObjectItemCaseSensitive (call, "args");
  if (cJSON_IsArray (args) && cJSON_GetArraySize (args) > 0)
    {
      cJSON *a = cJSON_AddArrayToObject (r, "args");
      const cJSON *it;
      cJSON_ArrayForEach (it, args)
      {
        cJSON *o = cJSON_CreateObject ();
        /* as Go writes specs.LinuxSeccompArg: valueTwo omitted when 0 */
        const char *keys[] = { "index", "value", "valueTwo" };
        for (size_t k = 0; k < ARRAY_SIZE (keys); k++)
          {
            double n = cJSON_GetNumberValue (cJSON_GetObjectItemCaseSensitive (it, keys[k]));
            if (k < 2 || (n == n && n != 0))
              cJSON_AddNumberToObject (o, keys[k], n == n ? n : 0);
          }
        cJSON_AddStringToObject (o, "op", cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (it, "op")));
        cJSON_AddItemToArray (a, o);
      }
    }
  return r;
}

cJSON *
llb_seccomp_from_moby (const char *profile, const char *const *caps, size_t n_caps, const char *goarch, int kmaj,
                       int kmin, ps_error **err)
{
  cJSON *in = cJSON_Parse (profile);
  const cJSON *def = cJSON_GetObjectItemCaseSensitive (in, "defaultAction");
  const cJSON *calls = cJSON_GetObjectItemCaseSensitive (in, "syscalls");
  const char *native = scmp_arch (goarch);
  if (!cJSON_IsString (def) || !cJSON_IsArray (calls) || native == NULL)
    {
      cJSON_Delete (in);
      ps_error_set (err, 500, "the seccomp profile %s (no defaultAction or syscalls, or architecture %s)",
                    native ? "is malformed" : "has no rules", goarch);
      return NULL;
    }
  cJSON *out = cJSON_CreateObject ();
  cJSON_AddStringToObject (out, "defaultAction", def->valuestring);
  const cJSON *der = cJSON_GetObjectItemCaseSensitive (in, "defaultErrnoRet");
  if (cJSON_IsNumber (der))
    cJSON_AddNumberToObject (out, "defaultErrnoRet", der->valuedouble);
  cJSON *arches = cJSON_AddArrayToObject (out, "architectures");
  const cJSON *am;
  cJSON_ArrayForEach (am, cJSON_GetObjectItemCaseSensitive (in, "archMap"))
  {
    const char *a = cJSON_GetStringValue (cJSON_GetObjectItemCaseSensitive (am, "architecture"));
    if (a == NULL || strcmp (a, native))
      continue;
    cJSON_AddItemToArray (arches, cJSON_CreateString (a));
    const cJSON *sub;
    cJSON_ArrayForEach (sub, cJSON_GetObjectItemCaseSensitive (am, "subArchitectures"))
    if (cJSON_IsString (sub))
      cJSON_AddItemToArray (arches, cJSON_CreateString (sub->valuestring));
  }
  cJSON *rules = cJSON_AddArrayToObject (out, "syscalls");
  const cJSON *call;
  cJSON_ArrayForEach (call, calls)
  {
    const cJSON *inc = cJSON_GetObjectItemCaseSensitive (call, "includes");
    const cJSON *exc = cJSON_GetObjectItemCaseSensitive (call, "excludes");
    const cJSON *it;
    bool skip = false;
    const cJSON *ea = cJSON_GetObjectItemCaseSensitive (exc, "arches");
    if (cJSON_GetArraySize (ea) > 0 && str_in (ea, goarch))
      skip = true;
    cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (exc, "caps"))
    skip |= cJSON_IsString (it) && cap_in (caps, n_caps, it->valuestring);
    const cJSON *emk = cJSON_GetObjectItemCaseSensitive (exc, "minKernel");
    if (cJSON_IsString (emk) && kernel_at_least (emk, kmaj, kmin) == 1)
      skip = true;
    const cJSON *ia = cJSON_GetObjectItemCaseSensitive (inc, "arches");
    if (cJSON_GetArraySize (ia) > 0 && !str_in (ia, goarch))
      skip = true;
    cJSON_ArrayForEach (it, cJSON_GetObjectItemCaseSensitive (inc, "caps"))
    skip |= cJSON_IsString (it) && !cap_in (caps, n_caps, it->valuestring);
    const cJSON *imk = cJSON_GetObjectItemCaseSensitive (inc, "minKernel");
    if (cJSON_IsString (imk) && kernel_at_least (imk, kmaj, kmin) == 0)
      skip = true;
    if (skip || !cJSON_IsString (cJSON_GetObjectItemCaseSensitive (call, "action")))
      continue;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive (call, "name");
    if (cJSON_IsString (name) && *name->valuestring)
      {
        cJSON *one = cJSON_CreateArray ();
        cJSON_AddItemToArray (one, cJSON_CreateString (name->valuestring));
        cJSON_AddItemToArray (rules, rule (one, call));
        cJSON_Delete (one);
      }
    const cJSON *names = cJSON_GetObjectItemCaseSensitive (call, "names");
    if (cJSON_GetArraySize (names) > 0)
      cJSON_AddItemToArray (rules, rule (names, call));
  }
  cJSON_Delete (in);
  return out;
}

/* ---- the spec ------------------------------------------------------------ */

const char *const llb_default_caps[] = {
  "CAP_CHOWN",  "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",       "CAP_NET_BIND_SERVICE",
  "CAP_SETFCAP", "CAP_SETGID",      "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
};
const size_t llb_n_default_caps = ARRAY_SIZE (llb_default_caps);

static void
add_strs (cJSON *obj, const char *key, const char *const *v, size_t n)
{
  cJSON *a = cJSON_AddArrayToObject (obj, key);
  for (size_t i = 0; i < n && v[i]; i++)
    cJSON_AddItemToArray (a, cJSON_CreateString (v[i]));
}

static void
add_mount (cJSON *arr, const char *dest, const char *type, const char *source, const char *const *opts)
{
  cJSON *m = cJSON_CreateObject ();
  cJSON_AddStringToObject (m, "destination", dest);
  cJSON_AddStringToObject (m, "type", type);
  cJSON_AddStringToObject (m, "source", source);
  size_t n = 0;
  while (opts && opts[n])
    n++;
  add_strs (m, "options", opts, n);
  cJSON_AddItemToArray (arr, m);
}

static size_t
path_depth (const char *p)
{
  size_t d = 0;
  for (; *p; p++)
    if (*p == '/' && p[1] && p[1] != '/')
      d++;
  return d;
}

/* A uint64 as JSON: cJSON numbers are doubles, exact to 2^53; runc reads
   rlimits as uint64 and the "unlimited" 2^64-1 must be written whole. */
static cJSON *
u64_raw (uint64_t v)
{
  char buf[32];
  snprintf (buf, sizeof buf, "%llu", (unsigned long long) v);
  return cJSON_CreateRaw (buf);
}

char *
llb_oci_spec_json (const struct llb_oci_spec *s)
{
  cJSON *root = cJSON_CreateObject ();
  cJSON_AddStringToObject (root, "ociVersion", "1.0.2-dev");

  cJSON *proc = cJSON_AddObjectToObject (root, "process");
  cJSON *user = cJSON_AddObjectToObject (proc, "user");
  cJSON_AddNumberToObject (user, "uid", s->user->uid);
  cJSON_AddNumberToObject (user, "gid", s->user->gid);
  cJSON *groups = cJSON_AddArrayToObject (user, "additionalGids");
  for (size_t i = 0; i < s->user->n_groups; i++)
    cJSON_AddItemToArray (groups, cJSON_CreateNumber (s->user->groups[i]));
  add_strs (proc, "args", s->args, s->n_args);
  add_strs (proc, "env", s->env, s->n_env);
  cJSON_AddStringToObject (proc, "cwd", s->cwd && *s->cwd ? s->cwd : "/");
  /* buildah: the bounding set always; the others only for root (a
     non-root process starts without capabilities, as under Docker) */
  cJSON *caps = cJSON_AddObjectToObject (proc, "capabilities");
  add_strs (caps, "bounding", s->caps, s->n_caps);
  if (s->user->uid == 0)
    {
      add_strs (caps, "effective", s->caps, s->n_caps);
      add_strs (caps, "permitted", s->caps, s->n_caps);
      add_strs (caps, "ambient", s->caps, s->n_caps);
    }
  cJSON *rl = cJSON_AddArrayToObject (proc, "rlimits");
  for (size_t i = 0; i < s->n_rlimits; i++)
    {
      cJSON *r = cJSON_CreateObject ();
      cJSON_AddStringToObject (r, "type", s->rlimits[i].type);
      cJSON_AddItemToObject (r, "hard", u64_raw (s->rlimits[i].hard));
      cJSON_AddItemToObject (r, "soft", u64_raw (s->rlimits[i].soft));
      cJSON_AddItemToArray (rl, r);
    }

  cJSON *rootfs = cJSON_AddObjectToObject (root, "root");
  cJSON_AddStringToObject (rootfs, "path", s->rootfs);
  cJSON_AddStringToObject (root, "hostname", s->hostname);

  /* buildah's mounts: the system ones, then the bundle's files and the
     op's, ordered by depth (stable) so /dev/x comes after /dev */
  static const char *const proc_o[] = { "nosuid", "noexec", "nodev", NULL };
  static const char *const dev_o[] = { "nosuid", "noexec", "strictatime", "mode=755", "size=65536k", NULL };
  static const char *const sys_o[] = { "nosuid", "noexec", "nodev", "ro", NULL };
  static const char *const pts_o[] = { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5", NULL };
  static const char *const shm_o[] = { "private", "nodev", "noexec", "nosuid", "mode=1777", "size=65536k", NULL };
  static const char *const mq_o[] = { "nosuid", "noexec", "nodev", NULL };
  static const char *const cg_o[] = { "rprivate", "nosuid", "noexec", "nodev", "relatime", "rw", NULL };
  const struct llb_oci_mount sys[] = {
    { "/proc", "proc", "proc", { 0 } },          { "/dev", "tmpfs", "tmpfs", { 0 } },
    { "/sys", "sysfs", "sysfs", { 0 } },         { "/dev/pts", "devpts", "devpts", { 0 } },
    { "/dev/shm", "tmpfs", "shm", { 0 } },       { "/dev/mqueue", "mqueue", "mqueue", { 0 } },
    { "/sys/fs/cgroup", "cgroup", "cgroup", { 0 } },
  };
  const char *const *sys_opts[] = { proc_o, dev_o, sys_o, pts_o, shm_o, mq_o, cg_o };
  size_t total = ARRAY_SIZE (sys) + s->n_mounts;
  const struct llb_oci_mount **all = xcalloc (total, sizeof *all);
  const char *const **opts = xcalloc (total, sizeof *opts);
  size_t n = 0;
  for (size_t i = 0; i < ARRAY_SIZE (sys); i++, n++)
    {
      all[n] = &sys[i];
      opts[n] = sys_opts[i];
    }
  for (size_t i = 0; i < s->n_mounts; i++, n++)
    {
      all[n] = &s->mounts[i];
      opts[n] = s->mounts[i].options;
    }
  /* insertion sort by depth: stable, and a handful of entries */
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && path_depth (all[j - 1]->dest) > path_depth (all[j]->dest); j--)
      {
        const struct llb_oci_mount *t = all[j];
        all[j] = all[j - 1];
        all[j - 1] = t;
        const char *const *o = opts[j];
        opts[j] = opts[j - 1];
        opts[j - 1] = o;
      }
  cJSON *mounts = cJSON_AddArrayToObject (root, "mounts");
  for (size_t i = 0; i < n; i++)
    add_mount (mounts, all[i]->dest, all[i]->type, all[i]->source, opts[i]);
  free (all);
  free (opts);

  cJSON *linux_ = cJSON_AddObjectToObject (root, "linux");
  cJSON *res = cJSON_AddObjectToObject (linux_, "resources");
  cJSON *devs = cJSON_AddArrayToObject (res, "devices");
  cJSON *deny = cJSON_CreateObject ();
  cJSON_AddBoolToObject (deny, "allow", false);
  cJSON_AddStringToObject (deny, "access", "rwm");
  cJSON_AddItemToArray (devs, deny);
  cJSON *ns = cJSON_AddArrayToObject (linux_, "namespaces");
  const char *const nss[] = { "pid", s->host_network ? NULL : "network", "ipc", "uts", "mount" };
  for (size_t i = 0; i < ARRAY_SIZE (nss); i++)
    if (nss[i])
      {
        cJSON *o = cJSON_CreateObject ();
        cJSON_AddStringToObject (o, "type", nss[i]);
        cJSON_AddItemToArray (ns, o);
      }
  static const char *const masked[] = { "/proc/acpi",         "/proc/kcore",       "/proc/keys",
                                        "/proc/latency_stats", "/proc/timer_list",  "/proc/timer_stats",
                                        "/proc/sched_debug",  "/proc/scsi",        "/sys/firmware",
                                        "/sys/fs/selinux",    "/sys/dev" };
  static const char *const ro[] = { "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                    "/proc/sysrq-trigger" };
  add_strs (linux_, "maskedPaths", masked, ARRAY_SIZE (masked));
  add_strs (linux_, "readonlyPaths", ro, ARRAY_SIZE (ro));
  if (s->seccomp)
    cJSON_AddItemToObject (linux_, "seccomp", cJSON_Duplicate (s->seccomp, true));

  char *out = cJSON_PrintUnformatted (root);
  cJSON_Delete (root);
  return out;
}

int
llb_rlimits (const char *const *names, const int64_t *soft, const int64_t *hard, size_t n, struct llb_rlimit **out,
             size_t *n_out, ps_error **err)
{
  static const char *const known[] = { "core",   "cpu",   "data",   "fsize",  "locks",      "memlock",
                                       "msgqueue", "nice", "nofile", "nproc",  "rss",        "rtprio",
                                       "rttime", "sigpending", "stack", "as" };
  struct llb_rlimit *r = xcalloc (n + 2, sizeof *r);
  size_t k = 0;
  bool nofile = false, nproc = false;
  for (size_t i = 0; i < n; i++)
    {
      bool ok = false;
      for (size_t j = 0; j < ARRAY_SIZE (known) && !ok; j++)
        ok = strcmp (known[j], names[i]) == 0;
      if (!ok)
        {
          free (r);
          return ps_error_set (err, 400, "ulimit \"%s\": not a resource limit name", names[i]);
        }
      snprintf (r[k].type, sizeof r[k].type, "RLIMIT_%s", names[i]);
      for (char *c = r[k].type; *c; c++)
        *c = (char) (*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
      r[k].soft = soft[i] < 0 ? UINT64_MAX : (uint64_t) soft[i];
      r[k].hard = hard[i] < 0 ? UINT64_MAX : (uint64_t) hard[i];
      nofile |= strcmp (names[i], "nofile") == 0;
      nproc |= strcmp (names[i], "nproc") == 0;
      k++;
    }
  if (!nofile)
    r[k++] = (struct llb_rlimit) { "RLIMIT_NOFILE", 1024, 1024 };
  if (!nproc)
    r[k++] = (struct llb_rlimit) { "RLIMIT_NPROC", 32768, 32768 };
  *out = r;
  *n_out = k;
  return 0;
}

/* ---- running ------------------------------------------------------------- */

static pthread_once_t usable_once = PTHREAD_ONCE_INIT;
static bool usable;
static char *runc_bin;
static cJSON *seccomp_default, *seccomp_all;
static char *runc_root, *runc_bundles;

void
llb_all_caps (ps_strv *out)
{
  static const char *const names[] = {
    "CHOWN",         "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER",    "FSETID",          "KILL",
    "SETGID",        "SETUID",       "SETPCAP",         "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN",     "NET_RAW",      "IPC_LOCK",        "IPC_OWNER", "SYS_MODULE",      "SYS_RAWIO",
    "SYS_CHROOT",    "SYS_PTRACE",   "SYS_PACCT",       "SYS_ADMIN", "SYS_BOOT",        "SYS_NICE",
    "SYS_RESOURCE",  "SYS_TIME",     "SYS_TTY_CONFIG",  "MKNOD",     "LEASE",           "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP",      "MAC_OVERRIDE",    "MAC_ADMIN", "SYSLOG",          "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ",   "PERFMON",         "BPF",       "CHECKPOINT_RESTORE",
  };
  unsigned long long bnd = 0;
  cleanup_free char *status = NULL;
  if (ps_read_file ("/proc/self/status", 65536, &status, NULL, NULL) == 0)
    {
      const char *p = strstr (status, "\nCapBnd:");
      if (p)
        bnd = strtoull (p + strlen ("\nCapBnd:"), NULL, 16);
    }
  for (size_t i = 0; i < ARRAY_SIZE (names); i++)
    if (bnd & (1ULL << i))
      ps_strv_pushf (out, "CAP_%s", names[i]);
}

static const char *
goarch (void)
{
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#elif defined(__i386__)
  return "386";
#elif defined(__arm__)
  return "arm";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return "ppc64le";
#elif defined(__s390x__)
  return "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
  return "riscv64";
#else
  return "unknown";
#endif
}

static void
usable_init (void)
{
  const char *iso = buildah_isolation ();
  const char *rt = buildah_runtime ();
  const char *base = rt ? strrchr (rt, '/') : NULL;
  base = base ? base + 1 : rt;
  if (strcmp (iso, "oci") != 0 || base == NULL || strcmp (base, "runc") != 0)
    {
      ps_info ("LLB execs: through `buildah run` (isolation %s, runtime %s: the direct runc path needs oci with runc)",
               iso, rt ? rt : "buildah's default");
      return;
    }
  cleanup_free char *profile = NULL;
  ps_error *err = NULL;
  if (ps_read_file (LLB_SECCOMP_PROFILE, LLB_SECCOMP_PROFILE_MAX, &profile, NULL, &err) < 0)
    {
      ps_info ("LLB execs: through `buildah run`: the seccomp profile cannot be read: %s", err->msg);
      ps_error_free (err);
      return;
    }
  struct utsname un;
  int kmaj = 0, kmin = 0;
  if (uname (&un) == 0)
    sscanf (un.release, "%d.%d", &kmaj, &kmin);
  ps_strv all = { 0 };
  llb_all_caps (&all);
  seccomp_default = llb_seccomp_from_moby (profile, llb_default_caps, llb_n_default_caps, goarch (), kmaj, kmin, &err);
  if (seccomp_default)
    seccomp_all = llb_seccomp_from_moby (profile, (const char *const *) all.v, all.n, goarch (), kmaj, kmin, &err);
  ps_strv_free (&all);
  if (seccomp_all == NULL)
    {
      ps_info ("LLB execs: through `buildah run`: %s", err->msg);
      ps_error_free (err);
      cJSON_Delete (seccomp_default);
      seccomp_default = NULL;
      return;
    }
  runc_bin = xstrdup (rt);
  usable = runc_root != NULL;
  if (usable)
    ps_info ("LLB execs: one `%s run` each (root %s), seccomp profile %s", runc_bin, runc_root, LLB_SECCOMP_PROFILE);
}

bool
llb_runc_usable (void)
{
  pthread_once (&usable_once, usable_init);
  return usable;
}

const cJSON *
llb_runc_seccomp (bool insecure)
{
  return insecure ? seccomp_all : seccomp_default;
}

const char *
llb_runc_binary (void)
{
  return runc_bin;
}

const char *
llb_runc_root (void)
{
  return runc_root;
}

const char *
llb_runc_bundles (void)
{
  return runc_bundles;
}

void
llb_runc_delete (const char *id)
{
  if (runc_root == NULL || runc_bin == NULL)
    return;
  cleanup_free char *state = xasprintf ("%s/%s", runc_root, id);
  if (access (state, F_OK) == 0)
    runc_state_delete (runc_root, runc_bin, id);
}

void
llb_runc_sweep (const char *state_dir)
{
  free (runc_root);
  free (runc_bundles);
  runc_root = xasprintf ("%s/runc", state_dir);
  runc_bundles = xasprintf ("%s/runc-bundles", state_dir);
  ps_error *err = NULL;
  if (ps_mkdir_p (runc_root, 0700, &err) < 0 || ps_mkdir_p (runc_bundles, 0700, &err) < 0)
    {
      ps_warn ("LLB execs' runc root: %s (execs go through `buildah run`)", err->msg);
      ps_error_free (err);
      free (runc_root);
      runc_root = NULL;
      return;
    }
  /* The records: whichever runc binary made them deletes them; runc's
     from PATH when none was chosen yet. */
  cleanup_free char *bin = ps_find_in_path ("runc", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  size_t deleted = 0, bundles = 0;
  DIR *d = opendir (runc_root);
  struct dirent *de;
  while (bin && d && (de = readdir (d)) != NULL)
    if (de->d_name[0] != '.' && runc_state_delete (runc_root, bin, de->d_name))
      deleted++;
  if (d)
    closedir (d);
  d = opendir (runc_bundles);
  while (d && (de = readdir (d)) != NULL)
    {
      if (de->d_name[0] == '.')
        continue;
      cleanup_free char *p = xasprintf ("%s/%s", runc_bundles, de->d_name);
      if (ps_rm_rf (p, NULL) == 0)
        bundles++;
    }
  if (d)
    closedir (d);
  if (deleted || bundles)
    ps_info ("removed %zu LLB exec container(s) and %zu bundle(s) left by an earlier run", deleted, bundles);
}
