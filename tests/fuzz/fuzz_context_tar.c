/* fuzz_context_tar — a build context body unpacked into a temporary
 * directory; afterwards nothing may exist outside that directory (its
 * parent holds only it). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "solver/context.h"

static char parent[] = "/tmp/podsolve-fuzz-tar-XXXXXX";
static char *dest;

static void
check_parent_holds_only_dest (void)
{
  DIR *d = opendir (parent);
  struct dirent *de;
  while ((de = readdir (d)) != NULL)
    if (strcmp (de->d_name, ".") && strcmp (de->d_name, "..") && strcmp (de->d_name, "ctx") && strcmp (de->d_name, "body"))
      {
        fprintf (stderr, "escaped the context: %s/%s\n", parent, de->d_name);
        abort ();
      }
  closedir (d);
}

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  if (dest == NULL)
    {
      if (mkdtemp (parent) == NULL)
        abort ();
      dest = xasprintf ("%s/ctx", parent);
    }
  ps_rm_rf (dest, NULL);
  mkdir (dest, 0700);
  cleanup_free char *body = xasprintf ("%s/body", parent);
  ps_write_file (body, data, size, 0600, NULL);
  int fd = open (body, O_RDONLY);
  struct ps_context_limits lim = { 64 * 1024 * 1024, 10000 };
  struct ps_context_stats st;
  ps_error *err = NULL;
  if (context_extract_fd (fd, dest, &lim, &st, &err) < 0)
    {
      if (err == NULL || (err->status != 400 && err->status != 413 && err->status != 500))
        abort ();
      ps_error_free (err);
    }
  close (fd);
  check_parent_holds_only_dest ();
  return 0;
}
