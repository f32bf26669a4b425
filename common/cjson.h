/* cjson.h — cJSON helpers: a cleanup attribute for parsed or built trees. */
#ifndef COMMON_CJSON_H
#define COMMON_CJSON_H

#include <cjson/cJSON.h>

/* cJSON_Delete () on scope exit (NULL is fine). */
static inline void
ps_cjson_deletep (cJSON **p)
{
  cJSON_Delete (*p);
}
#define cleanup_cjson __attribute__ ((cleanup (ps_cjson_deletep)))

#endif
