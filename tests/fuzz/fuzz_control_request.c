/* fuzz_control_request — Control.Solve's SolveRequest from arbitrary bytes:
 * what protobuf-c decodes goes through the conversion to /solve's request
 * (schema/control_request.c) and back out as a SolveResponse; nothing may
 * crash or leak, and a refused request leaves nothing allocated. */
#include <stdlib.h>
#include <string.h>

#include "control.pb-c.h"
#include "schema/control_request.h"

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  Moby__Buildkit__V1__SolveRequest *rq = moby__buildkit__v1__solve_request__unpack (NULL, size, data);
  if (rq == NULL)
    return 0;
  struct solve_request r;
  uint8_t *def = NULL;
  size_t def_len = 0;
  bool internal = false;
  ps_error *err = NULL;
  (void) schema_control_solve_is_gateway (rq);
  if (schema_control_solve_request (rq, &r, &def, &def_len, &internal, &err) == 0)
    {
      /* the exporters' attrs as a response: every pair survives the encoder */
      for (size_t i = 0; i < r.n_exporters; i++)
        {
          size_t len = 0;
          uint8_t *resp = schema_control_solve_response (r.exporters[i].attrs.kv, &len);
          Moby__Buildkit__V1__SolveResponse *back = moby__buildkit__v1__solve_response__unpack (NULL, len, resp);
          if (back == NULL || back->n_exporterresponse != r.exporters[i].attrs.n)
            abort ();
          moby__buildkit__v1__solve_response__free_unpacked (back, NULL);
          free (resp);
        }
      schema_solve_request_free (&r);
      free (def);
    }
  else
    {
      if (def != NULL || err == NULL)
        abort ();
      ps_error_free (err);
    }
  moby__buildkit__v1__solve_request__free_unpacked (rq, NULL);
  return 0;
}
