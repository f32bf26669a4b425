/* fuzz_llb — a /solve client's definition: the input as pb.Definition
 * bytes (the wire scan, the protobuf-c decode of the Definition and of
 * every op, all validation), and the same input as the JSON "definition"
 * value (base64 string or {"def":[...],"metadata":{...}}).  A refusal
 * must be a 4xx; an accepted graph must keep the promises llb.h makes to
 * the executor (checked here, so a validation gap crashes).
 *
 * Mutating an op changes its digest, so the seeds' references break at
 * once: most inputs end as "missing input" — after every op has been
 * decoded and checked on its own, which is where the parsing risk is. */
#include <stdlib.h>
#include <string.h>

#include "solver/llb/llb.h"

static void
check_graph (const struct llb_graph *g)
{
  if (g->n_vertices == 0 || g->result < g->vertices || g->result >= g->vertices + g->n_vertices)
    abort ();
  if (g->result_index < 0 || (size_t) g->result_index >= g->result->n_outputs)
    abort ();
  for (size_t i = 0; i < g->n_vertices; i++)
    {
      const struct llb_vertex *v = &g->vertices[i];
      if (v->op == NULL || v->name == NULL || strlen (v->name) > PS_MAX_LLB_NAME || v->n_inputs != v->op->n_inputs)
        abort ();
      for (size_t k = 0; k < v->n_inputs; k++)
        if (v->inputs[k] < g->vertices || v->inputs[k] >= v /* inputs come first */
            || v->input_index[k] < 0 || (size_t) v->input_index[k] >= v->inputs[k]->n_outputs)
          abort ();
      if (v->op->op_case == PB__OP__OP_EXEC)
        for (size_t m = 0; m < v->op->exec->n_mounts; m++)
          if (v->op->exec->mounts[m]->input >= (int64_t) v->n_inputs)
            abort ();
    }
}

static void
check_result (int ret, struct llb_graph *g, ps_error *err)
{
  if (ret < 0)
    {
      if (err == NULL || err->status < 400 || err->status > 499 || g != NULL)
        abort ();
      ps_error_free (err);
      return;
    }
  check_graph (g);
  llb_graph_free (g);
}

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  struct llb_graph *g = NULL;
  ps_error *err = NULL;
  int ret = llb_graph_from_protobuf (data, size, &g, &err);
  check_result (ret, g, err);

  char *json = malloc (size + 1);
  if (json == NULL)
    return 0;
  memcpy (json, data, size);
  json[size] = '\0';
  g = NULL;
  err = NULL;
  ret = llb_graph_from_json (json, &g, &err);
  check_result (ret, g, err);
  free (json);
  return 0;
}
