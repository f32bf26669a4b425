/* grpc_bridge.h — moby.buildkit.v1.frontend.LLBBridge, the gateway API of
 * client-side builds (handlers/grpc_bridge.c over solver/gateway.h). */
#ifndef HANDLERS_GRPC_BRIDGE_H
#define HANDLERS_GRPC_BRIDGE_H

#include <stddef.h>

#include "session/grpc.h"

extern const struct grpc_method grpc_bridge_methods[];
extern const size_t grpc_bridge_n_methods;

#endif
