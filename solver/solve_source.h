/* solve_source.h — a local source a /solve request sent: what the solve
 * (solve.h) and the LLB executor (llb/exec.h) both take. */
#ifndef SOLVER_SOLVE_SOURCE_H
#define SOLVER_SOLVE_SOURCE_H

#include <stdint.h>

/* A local source the client sent with the request (a multipart tar part),
   unpacked in the job's directory. */
struct solve_source
{
  char *name;
  char *dir;
  uint64_t bytes;
  char *tar; /* the stored part while `dir` is not unpacked yet (context_unpack_sources), else NULL */
};

#endif
