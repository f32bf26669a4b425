/* fuzz_fsutil — fsutil Packet/Stat bytes from a session peer: the
 * protobuf decoder and the DiffCopy path validation. */
#include <stdlib.h>
#include <string.h>

#include "fsutil.pb-c.h"
#include "session/diffcopy.h"

int
LLVMFuzzerTestOneInput (const unsigned char *data, size_t size)
{
  Fsutil__Types__Packet *p = fsutil__types__packet__unpack (NULL, size, data);
  if (p == NULL)
    return 0;
  if (p->stat && p->stat->path)
    {
      ps_error *err = NULL;
      if (diffcopy_check_path (p->stat->path, &err) < 0)
        {
          if (err == NULL || err->status != 400)
            abort ();
          ps_error_free (err);
        }
    }
  fsutil__types__packet__free_unpacked (p, NULL);
  return 0;
}
