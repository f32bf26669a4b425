/* fuzz_ctrfilter — containerd filter expressions as gRPC clients send them
 * (Control.DiskUsage, Prune, ListWorkers): the input split at NUL bytes is
 * the list of filter strings, then matched against a fixed object. */
#include <stdlib.h>
#include <string.h>

#include "schema/ctrfilter.h"

static bool
field (void *obj, const char *const *path, size_t n, const char **value)
{
  if (n == 0)
    abort ();
  if (strcmp (path[0], "id") == 0)
    return (*value = "0123abcd"), true;
  if (strcmp (path[0], "type") == 0)
    return (*value = "llb.result"), true;
  if (strcmp (path[0], "mutable") == 0)
    return (*value = ""), true;
  return false;
}

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  char *text = malloc (size + 1);
  memcpy (text, data, size);
  text[size] = '\0';
  char *exprs[16];
  size_t n = 0;
  for (char *p = text; n < 16 && p <= text + size; p += strlen (p) + 1)
    exprs[n++] = p;
  ctr_filter *f = NULL;
  ps_error *err = NULL;
  if (schema_ctr_filter_parse (exprs, n, &f, &err) < 0)
    {
      if (err == NULL || err->status != 400 || f != NULL)
        abort ();
      ps_error_free (err);
    }
  else
    {
      (void) schema_ctr_filter_match (f, field, NULL);
      schema_ctr_filter_free (f);
    }
  free (text);
  return 0;
}
