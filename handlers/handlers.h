/* handlers.h — one handler per endpoint family.  Handlers parse and
 * validate, then call solver/; they hold no build logic. */
#ifndef HANDLERS_HANDLERS_H
#define HANDLERS_HANDLERS_H

#include "server/http.h"

extern const struct ps_handler handler_ping;
extern const struct ps_handler handler_version;
extern const struct ps_handler handler_info;
extern const struct ps_handler handler_system_df;
extern const struct ps_handler handler_build;
extern const struct ps_handler handler_build_cancel;
extern const struct ps_handler handler_prune; /* /build/prune and /solve/prune */
extern const struct ps_handler handler_solve;
extern const struct ps_handler handler_solve_list;
extern const struct ps_handler handler_solve_inspect;
extern const struct ps_handler handler_solve_status;
extern const struct ps_handler handler_solve_cancel;
extern const struct ps_handler handler_solve_output;

#endif
