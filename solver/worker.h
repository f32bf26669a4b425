/* worker.h — the one BuildKit worker podsolved is, as Control.ListWorkers
 * describes it: a stable id, the platforms it can build for, and the
 * host facts its labels carry. */
#ifndef SOLVER_WORKER_H
#define SOLVER_WORKER_H

#include "common/ps.h"

/* The worker's id: 26 lower-case hex digits kept in <state_dir>/worker-id,
   made on first use, so it stays the same across restarts (as BuildKit's
   workerid file does).  Borrowed; the first call decides. */
const char *worker_id (const char *state_dir);

/* Go's GOARCH name of a uname machine ("x86_64" -> "amd64"), which Docker
   and BuildKit clients expect. */
const char *worker_go_arch (const char *machine);

/* The platforms builds can run for, as "os/arch[/variant]": the host's
   first, then each architecture an enabled qemu handler in
   /proc/sys/fs/binfmt_misc runs (whose interpreter is there, or was
   opened when it was registered: flag F).  Nothing else is claimed. */
void worker_platforms (ps_strv *out);

/* The address a build container reaches the host on, as containers/common
   picks host.containers.internal for a container without a bridge network
   (podsolve's RUNs use the host's network): containers.conf's
   host_containers_internal_ip when set (NULL for "none"), else the host's
   first non-loopback global IPv4 address, else its first global IPv6 one;
   NULL when it has neither.  Caller frees. */
char *worker_host_gateway_ip (void);

/* host_containers_internal_ip from the [containers] table of the given
   containers.conf files, the last one setting it winning; NULL when none
   does.  Exposed for tests. */
char *worker_conf_host_ip (const char *const *paths, size_t n);

#endif
