/* session.h — POST /session (and /vX.Y/session): the BuildKit session
 * upgrade (buildkit-protocols.md §2). */
#ifndef HANDLERS_SESSION_H
#define HANDLERS_SESSION_H

#include "server/http.h"

extern const struct ps_handler handler_session;

/* The checks (and moby's 400 messages) of a POST that upgrades to h2c
   (/session, /grpc): 0, or -1 with *err.  `endpoint` names it ("/grpc"). */
int handlers_check_h2c_upgrade (struct ps_request *req, const char *endpoint, ps_error **err);

#endif
