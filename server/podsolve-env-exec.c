/* podsolve-env-exec — the first program of an LLB exec that has secret
 * environment variables (RUN --mount=type=secret,id=X,env=NAME).
 *
 * podsolved mounts each secret as a read-only file on tmpfs inside the
 * build container, mounts this program at /.podsolve-env-exec, and runs
 *
 *     /.podsolve-env-exec NAME=FILE ... -- ARGV...
 *
 * so that no secret value is ever on a command line (buildah's, or the
 * runtime's): this sets each NAME to the contents of its FILE (a missing
 * FILE, an optional secret the client lacks, sets nothing) and execs ARGV,
 * looked up in PATH as an OCI runtime does.  Statically linked: the image
 * need not have a libc, or any file at all. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* BuildKit's limit for a secret's size (session/secrets: 500 KiB). */
#define MAX_SECRET_BYTES (500 * 1024)

static int
fail (const char *what, const char *detail)
{
  fprintf (stderr, "podsolve-env-exec: %s: %s\n", what, detail);
  return 127;
}

int
main (int argc, char **argv)
{
  int i = 1;
  for (; i < argc && strcmp (argv[i], "--") != 0; i++)
    {
      char *eq = strchr (argv[i], '=');
      if (eq == NULL || eq == argv[i])
        return fail (argv[i], "expected NAME=FILE");
      *eq = '\0';
      int fd = open (eq + 1, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        {
          if (errno == ENOENT)
            continue; /* an optional secret the client does not have */
          return fail (eq + 1, strerror (errno));
        }
      static char buf[MAX_SECRET_BYTES + 1];
      size_t len = 0;
      for (;;)
        {
          ssize_t n = read (fd, buf + len, sizeof buf - 1 - len);
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0)
            return fail (eq + 1, strerror (errno));
          if (n == 0)
            break;
          len += (size_t) n;
          if (len == sizeof buf - 1)
            return fail (argv[i], "secret larger than 500 KiB");
        }
      close (fd);
      buf[len] = '\0';
      if (setenv (argv[i], buf, 1) < 0)
        return fail (argv[i], strerror (errno));
    }
  if (i + 1 >= argc)
    return fail ("usage", "podsolve-env-exec NAME=FILE... -- COMMAND [ARG...]");
  execvp (argv[i + 1], &argv[i + 1]);
  return fail (argv[i + 1], strerror (errno));
}
