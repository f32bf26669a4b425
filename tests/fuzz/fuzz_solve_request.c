/* fuzz_solve_request — the /solve JSON body. */
#include <stdlib.h>

#include "schema/solve_request.h"

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  struct solve_request r;
  ps_error *err = NULL;
  if (schema_solve_request_parse ((const char *) data, size, size > 0 && (data[0] & 1), &r, &err) < 0)
    {
      if (err == NULL || err->status != 400)
        abort ();
      ps_error_free (err);
    }
  schema_solve_request_free (&r);
  return 0;
}
