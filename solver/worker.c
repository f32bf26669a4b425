/* worker.c — facts about the worker podsolved is (see worker.h). */
#define _GNU_SOURCE
#include "solver/worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/log.h"

const char *
worker_id (const char *state_dir)
{
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  static char *id;
  pthread_mutex_lock (&lock);
  if (id == NULL)
    {
      cleanup_free char *path = xasprintf ("%s/worker-id", state_dir);
      cleanup_free char *text = NULL;
      if (ps_read_file (path, 256, &text, NULL, NULL) == 0)
        {
          size_t n = strspn (text, "0123456789abcdef");
          if (n >= 16 && (text[n] == '\0' || text[n] == '\n'))
            id = xstrndup (text, n);
        }
      if (id == NULL)
        {
          char hex[27];
          ps_random_hex (hex, 13);
          id = xstrdup (hex);
          cleanup_free char *line = xasprintf ("%s\n", id);
          ps_error *err = NULL;
          if (ps_write_file (path, line, strlen (line), 0644, &err) < 0)
            {
              ps_warn ("worker id: %s (it will change with the next start)", err->msg);
              ps_error_free (err);
            }
        }
    }
  pthread_mutex_unlock (&lock);
  return id;
}

const char *
worker_go_arch (const char *machine)
{
  static const char *const map[][2] = {
    { "x86_64", "amd64" },     { "aarch64", "arm64" },     { "i386", "386" },       { "i686", "386" },
    { "mips64el", "mips64le" }, { "loongarch64", "loong64" }, { "ppc64le", "ppc64le" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (map); i++)
    if (strcmp (machine, map[i][0]) == 0)
      return map[i][1];
  if (strncmp (machine, "armv", 4) == 0 || strcmp (machine, "arm") == 0)
    return "arm";
  return machine;
}

/* A qemu binfmt handler's name (after "qemu-") as a platform. */
static const char *
qemu_platform (const char *name)
{
  static const char *const map[][2] = {
    { "aarch64", "linux/arm64" },  { "arm", "linux/arm/v7" },     { "x86_64", "linux/amd64" },
    { "i386", "linux/386" },       { "riscv64", "linux/riscv64" }, { "ppc64le", "linux/ppc64le" },
    { "s390x", "linux/s390x" },    { "mips64el", "linux/mips64le" }, { "mips64", "linux/mips64" },
    { "loongarch64", "linux/loong64" },
  };
  for (size_t i = 0; i < ARRAY_SIZE (map); i++)
    if (strcmp (name, map[i][0]) == 0)
      return map[i][1];
  return NULL;
}

/* An enabled handler whose interpreter can be started. */
static bool
binfmt_usable (const char *entry)
{
  cleanup_free char *text = NULL;
  if (ps_read_file (entry, 4096, &text, NULL, NULL) < 0 || !ps_str_has_prefix (text, "enabled\n"))
    return false;
  const char *interp = strstr (text, "\ninterpreter ");
  const char *flags = strstr (text, "\nflags: ");
  if (flags)
    {
      flags += 8;
      if (memchr (flags, 'F', strcspn (flags, "\n")))
        return true; /* the kernel opened it at registration */
    }
  if (interp == NULL)
    return false;
  interp += 13;
  cleanup_free char *path = xstrndup (interp, strcspn (interp, "\n"));
  return access (path, X_OK) == 0;
}

static bool
strv_has (const ps_strv *v, const char *s)
{
  for (size_t i = 0; i < v->n; i++)
    if (strcmp (v->v[i], s) == 0)
      return true;
  return false;
}

void
worker_platforms (ps_strv *out)
{
  struct utsname u;
  uname (&u);
  cleanup_free char *host = xasprintf ("linux/%s", worker_go_arch (u.machine));
  ps_strv_push (out, host);

  const char *dir = "/proc/sys/fs/binfmt_misc";
  cleanup_close int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ps_strv names = { 0 };
  const char *step = NULL;
  if (dfd < 0 || ps_list_dir_at (dfd, true, &names, &step) < 0)
    {
      ps_strv_free (&names);
      return;
    }
  for (size_t i = 0; i < names.n; i++)
    {
      if (!ps_str_has_prefix (names.v[i], "qemu-"))
        continue;
      const char *p = qemu_platform (names.v[i] + 5);
      if (p == NULL || strcmp (p, host) == 0 || strv_has (out, p))
        continue;
      cleanup_free char *entry = xasprintf ("%s/%s", dir, names.v[i]);
      if (binfmt_usable (entry))
        ps_strv_push (out, p);
    }
  ps_strv_free (&names);
}

char *
worker_conf_host_ip (const char *const *paths, size_t n)
{
  char *found = NULL;
  for (size_t i = 0; i < n; i++)
    {
      cleanup_free char *text = NULL;
      if (ps_read_file (paths[i], 1024 * 1024, &text, NULL, NULL) < 0)
        continue;
      bool in_containers = false;
      char *save = NULL;
      for (char *line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save))
        {
          line += strspn (line, " \t");
          if (*line == '[')
            {
              in_containers = strncmp (line, "[containers]", 12) == 0;
              continue;
            }
          const char *key = "host_containers_internal_ip";
          if (!in_containers || strncmp (line, key, strlen (key)) != 0)
            continue;
          char *v = line + strlen (key);
          v += strspn (v, " \t");
          if (*v++ != '=')
            continue;
          v += strspn (v, " \t");
          char q = *v;
          if (q != '"' && q != '\'')
            continue;
          char *end = strchr (v + 1, q);
          if (end == NULL)
            continue;
          free (found);
          found = xstrndup (v + 1, (size_t) (end - v - 1));
        }
    }
  if (found && *found == '\0')
    {
      free (found); /* "" is the default: choose automatically */
      found = NULL;
    }
  return found;
}

char *
worker_host_gateway_ip (void)
{
  /* containers.conf as containers/common reads it (system files; the
     daemon runs as root, so no per-user file). */
  ps_strv confs = { 0 };
  ps_strv_push (&confs, "/usr/share/containers/containers.conf");
  ps_strv_push (&confs, "/etc/containers/containers.conf");
  const char *override = getenv ("CONTAINERS_CONF");
  cleanup_close int dfd = open ("/etc/containers/containers.conf.d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ps_strv dropins = { 0 };
  const char *step = NULL;
  if (dfd >= 0 && ps_list_dir_at (dfd, true, &dropins, &step) == 0)
    for (size_t i = 0; i < dropins.n; i++)
      if (ps_str_has_suffix (dropins.v[i], ".conf"))
        ps_strv_pushf (&confs, "/etc/containers/containers.conf.d/%s", dropins.v[i]);
  ps_strv_free (&dropins);
  char *conf = override && *override ? worker_conf_host_ip (&override, 1)
                                     : worker_conf_host_ip ((const char *const *) confs.v, confs.n);
  ps_strv_free (&confs);
  if (conf)
    {
      if (strcmp (conf, "none") == 0)
        {
          free (conf);
          return NULL;
        }
      return conf;
    }

  struct ifaddrs *ifs = NULL;
  if (getifaddrs (&ifs) < 0)
    return NULL;
  char v4[INET_ADDRSTRLEN] = "", v6[INET6_ADDRSTRLEN] = "";
  for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
    {
      if (i->ifa_addr == NULL || (i->ifa_flags & IFF_LOOPBACK))
        continue;
      if (i->ifa_addr->sa_family == AF_INET && v4[0] == '\0')
        {
          const struct in_addr *a = &((const struct sockaddr_in *) i->ifa_addr)->sin_addr;
          uint32_t h = ntohl (a->s_addr);
          /* not loopback, link-local (169.254/16) or unspecified */
          if ((h >> 24) != 127 && (h >> 16) != 0xa9fe && h != 0)
            inet_ntop (AF_INET, a, v4, sizeof v4);
        }
      else if (i->ifa_addr->sa_family == AF_INET6 && v6[0] == '\0')
        {
          const struct in6_addr *a = &((const struct sockaddr_in6 *) i->ifa_addr)->sin6_addr;
          if (!IN6_IS_ADDR_LOOPBACK (a) && !IN6_IS_ADDR_LINKLOCAL (a) && !IN6_IS_ADDR_UNSPECIFIED (a)
              && !IN6_IS_ADDR_MULTICAST (a))
            inet_ntop (AF_INET6, a, v6, sizeof v6);
        }
    }
  freeifaddrs (ifs);
  return v4[0] ? xstrdup (v4) : v6[0] ? xstrdup (v6) : NULL;
}
