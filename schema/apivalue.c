/* apivalue.c — value grammars the API shares across endpoints. */
#include "schema/apivalue.h"

#include <strings.h>

#include "common/ps.h"

int
schema_api_bool (const char *value, bool *out)
{
  static const char *const truthy[] = { "1", "t", "true", "yes", "y", "on" };
  static const char *const falsy[] = { "", "0", "f", "false", "no", "n", "off", "none" };
  for (size_t i = 0; i < ARRAY_SIZE (truthy); i++)
    if (strcasecmp (value, truthy[i]) == 0)
      {
        *out = true;
        return 0;
      }
  for (size_t i = 0; i < ARRAY_SIZE (falsy); i++)
    if (strcasecmp (value, falsy[i]) == 0)
      {
        *out = false;
        return 0;
      }
  return -1;
}
