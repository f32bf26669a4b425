/* fuzz_dockerignore — ignore-file text, then matching a few paths. */
#include <stdlib.h>
#include <string.h>

#include "common/dockerignore.h"

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  ps_error *err = NULL;
  ps_ignore *ig = ps_ignore_parse ((const char *) data, size, &err);
  if (ig == NULL)
    {
      if (err == NULL || err->status != 400)
        abort ();
      ps_error_free (err);
      return 0;
    }
  static const char *const paths[] = { "a", "a/b", "Dockerfile", "src/x.go", "docs/readme.md", ".git/config",
                                       "a/b/c/d/e/f/g.txt", "\xc3\xa9t\xc3\xa9/x" };
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
    (void) ps_ignore_matches (ig, paths[i]);
  ps_ignore_free (ig);
  return 0;
}
