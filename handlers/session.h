/* session.h — POST /session (and /vX.Y/session): the BuildKit session
 * upgrade (buildkit-protocols.md §2). */
#ifndef HANDLERS_SESSION_H
#define HANDLERS_SESSION_H

#include "server/http.h"

extern const struct ps_handler handler_session;

#endif
