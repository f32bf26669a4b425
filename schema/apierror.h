/* apierror.h — Podman's error body: {"cause","message","response"}. */
#ifndef SCHEMA_APIERROR_H
#define SCHEMA_APIERROR_H

#include "common/ps.h"

/* `cause` is the innermost reason, `message` the full wrapped text. */
char *schema_api_error_json (int status, const char *cause, const char *message);

#endif
