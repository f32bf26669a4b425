/* dynlib.c — shared libraries loaded on first use. */
#define _GNU_SOURCE
#include "common/dynlib.h"

#include <dlfcn.h>
#include <stdlib.h>

static char *
try_load (struct ps_dynlib *lib)
{
  /* RTLD_LOCAL: the library's symbols stay out of the global scope, so
     nothing loaded later binds to them by accident. */
  void *h = dlopen (lib->soname, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return xasprintf ("%s cannot be loaded (%s); install the package %s", lib->soname, dlerror (), lib->package);
  for (size_t i = 0; i < lib->n; i++)
    {
      dlerror ();
      lib->slots[i] = dlsym (h, lib->names[i]);
      if (lib->slots[i] == NULL)
        {
          char *msg = xasprintf ("%s has no %s (%s); the package %s is too old or damaged", lib->soname,
                                 lib->names[i], dlerror (), lib->package);
          dlclose (h);
          return msg;
        }
    }
  /* Kept loaded for the life of the process. */
  return NULL;
}

int
ps_dynlib_load (struct ps_dynlib *lib, ps_error **err)
{
  if (ps_dynlib_loaded (lib))
    return 0;
  pthread_mutex_lock (&lib->lock);
  if (atomic_load (&lib->state) == 0)
    {
      lib->error = try_load (lib);
      atomic_store_explicit (&lib->state, lib->error ? -1 : 1, memory_order_release);
    }
  pthread_mutex_unlock (&lib->lock);
  if (atomic_load (&lib->state) == 1)
    return 0;
  return ps_error_set (err, 500, "%s", lib->error);
}
