/* apivalue.h — value grammars the API shares across endpoints (query
 * parameters of /build and /build/prune, BuildKit frontend attributes and
 * exporter attributes of /solve). */
#ifndef SCHEMA_APIVALUE_H
#define SCHEMA_APIVALUE_H

#include <stdbool.h>

/* Parse a boolean the way the API accepts them: 1/0, true/false in any
 * case, t/f, yes/no, on/off; "" is false.  Returns -1 for anything else. */
int schema_api_bool (const char *value, bool *out);

#endif
