/* fuzz_build_params — /build query parameters (as the HTTP layer hands
 * them over: key/value pairs, repeats allowed) to build options.  Input:
 * lines "key=value". */
#include <stdlib.h>
#include <string.h>

#include "handlers/build_params.h"

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  char *text = xstrndup ((const char *) data, size);
  struct ps_kv kv[64];
  size_t n = 0;
  char *save = NULL;
  for (char *line = strtok_r (text, "\n", &save); line && n < 64; line = strtok_r (NULL, "\n", &save))
    {
      char *eq = strchr (line, '=');
      if (eq)
        *eq = '\0';
      kv[n].key = line;
      kv[n].value = eq ? eq + 1 : "";
      n++;
    }
  for (int libpod = 0; libpod < 2; libpod++)
    {
      struct build_request r;
      ps_error *err = NULL;
      build_request_init (&r);
      if (build_params_parse (kv, n, libpod, &r, &err) < 0)
        {
          if (err == NULL || err->status != 400)
            abort (); /* every parse failure is a 400 with a message */
          ps_error_free (err);
        }
      build_request_free (&r);
    }
  free (text);
  return 0;
}
