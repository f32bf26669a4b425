/* dynlib.h — a shared library loaded on first use (dlopen) instead of at
 * start, so that an idle daemon neither maps it nor what only it needs.
 *
 * One struct ps_dynlib per library names its soname, the Debian package
 * that ships it (for the error) and the symbols to resolve into `slots`.
 * ps_dynlib_load loads it once (thread-safe); a failure is remembered and
 * every later call gives the same error. */
#ifndef PS_DYNLIB_H
#define PS_DYNLIB_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "common/ps.h"

struct ps_dynlib
{
  const char *soname;       /* "libarchive.so.13" */
  const char *package;      /* "libarchive13" */
  const char *const *names; /* symbol names, n of them */
  void **slots;             /* filled in the same order */
  size_t n;
  /* state, zero-initialised (PTHREAD_MUTEX_INITIALIZER for lock) */
  pthread_mutex_t lock;
  atomic_int state; /* 0: not tried; 1: loaded; -1: failed (see error) */
  char *error;
};

/* 0 once every symbol is resolved; otherwise -1 with *err saying which
   library (or symbol) and which package to install. */
int ps_dynlib_load (struct ps_dynlib *lib, ps_error **err);

/* Whether lib is loaded (no attempt is made). */
static inline int
ps_dynlib_loaded (struct ps_dynlib *lib)
{
  return atomic_load_explicit (&lib->state, memory_order_acquire) == 1;
}

#endif
