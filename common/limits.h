/* limits.h — every limit podsolved enforces, with the reason for its value.
 * Flags override the ones an administrator would want to change. */
#ifndef PS_LIMITS_H
#define PS_LIMITS_H

/* Largest build context accepted (bytes of the uploaded body, and of the
   unpacked files): a context bigger than this is almost surely a mistake
   (a home directory without .dockerignore). --max-context-bytes. */
#define PS_DEFAULT_MAX_CONTEXT_BYTES (4ULL * 1024 * 1024 * 1024)

/* Entries in one context tar: bounds inode use and extraction time. */
#define PS_MAX_CONTEXT_ENTRIES 1000000

/* Longest path inside a context (PATH_MAX less room for our state dir). */
#define PS_MAX_CONTEXT_PATH 3072

/* Largest single query value or header we parse as JSON (buildargs,
   labels, X-Registry-Config): Docker clients send a few KiB at most. */
#define PS_MAX_PARAM_JSON (1024 * 1024)

/* Most tags in one build request. */
#define PS_MAX_TAGS 64

/* Largest Dockerfile we read ourselves (to validate it exists and is text). */
#define PS_MAX_DOCKERFILE_BYTES (16 * 1024 * 1024)

/* Largest Dockerfile-adjacent ignore file (.dockerignore,
   <Dockerfile>.dockerignore) read to filter a context: patterns are a few
   lines; a megabyte is already absurd. */
#define PS_MAX_IGNORE_FILE_BYTES (1024 * 1024)

/* Largest result-cache record read back (a bare image id, or the JSON
   record of a cached build with its inputs' digests). */
#define PS_MAX_RESULT_RECORD_BYTES (4 * 1024 * 1024)

/* Most context bytes hashed to key a whole build by content (a tar context
   before it is unpacked, or a context whose result goes to a shared cache):
   about half a second of SHA-256 here.  A larger context gets no such key,
   only buildah's per-step cache, so it never pays the read for a reuse
   that would save less than the hashing costs. */
#define PS_MAX_RESULT_KEY_CONTENT_BYTES (256ULL * 1024 * 1024)

/* Largest job record (one small JSON file per /solve job) read back at
   start-up to find the jobs a previous podsolved left unfinished. */
#define PS_MAX_JOB_RECORD_BYTES (1024 * 1024)

/* Largest registries.conf copied into the per-build one (--insecure-registry):
   a TOML file of a few KiB. */
#define PS_MAX_REGISTRIES_CONF_BYTES (1024 * 1024)

/* Most ARG steps a registry cache's podsolve-arg-steps index lists (and an
   import pulls before the build): one build's ARG instructions. */
#define PS_MAX_CACHE_ARG_STEPS 64

/* How long one look at a registry cache's manifest may take before a build
   (skopeo inspect): the build goes on without what it could not read. */
#define PS_CACHE_INSPECT_TIMEOUT_S 60

/* Largest PEM file (--tls-cert, --tls-key, --tls-ca) read at start-up: a
   CA bundle is a few hundred KiB. */
#define PS_MAX_TLS_FILE_BYTES (1024 * 1024)

/* Output of a helper command (buildah inspect, images ...) kept per stream
   by ps_run_capture; the rest is read and dropped, so a chatty command
   cannot grow the daemon without bound. */
#define PS_MAX_CAPTURE_BYTES (4 * 1024 * 1024)

/* Stack of each libmicrohttpd connection thread: handlers keep big buffers
   on the heap, so half a megabyte is ample and keeps many connections
   cheap. */
#define PS_HTTP_THREAD_STACK_BYTES (512 * 1024)

/* Concurrent HTTP connections per listener; each build holds one. */
#define PS_DEFAULT_MAX_CONNECTIONS 256

/* An idle connection — one with no request in progress: its head not yet
   complete, or kept alive between requests — is closed after this
   (--header-timeout), as nginx's client_header_timeout and Go's
   ReadHeaderTimeout: a client sending its head a byte at a time cannot hold
   a slot for ever.  Upgraded connections (/session, /grpc) are never idle. */
#define PS_DEFAULT_HEADER_TIMEOUT_S 30

/* glibc arenas per CPU (M_ARENA_MAX; glibc's own default is 8): with a
   thread per connection, a burst of connections otherwise leaves memory
   spread over many arenas that malloc_trim cannot give back whole. */
#define PS_MALLOC_ARENAS_PER_CPU 2

/* When the last connection closes and no build runs, free heap memory is
   given back to the system (malloc_trim), at most this often: after a
   burst of 200 connections the daemon returns near its idle size instead
   of keeping the burst's peak (RELIABILITY.md, "Memory under load"). */
#define PS_IDLE_TRIM_INTERVAL_MS 2000

/* One peer's share of --max-connections (a TCP address; for unix sockets,
   the peer's uid): the rest stays for others (--max-connections-per-peer). */
#define PS_PEER_SHARE_PERCENT 75

/* Connections past --max-connections that are still accepted, to be told
   503 "too many connections" instead of being closed without a word; past
   these, libmicrohttpd closes new connections at once. */
#define PS_CONNECTIONS_OVER_LIMIT_ANSWERED 64

/* How long a cancelled buildah gets to remove its working containers after
   SIGTERM before its whole process group is killed. */
#define PS_CANCEL_GRACE_MS 10000

/* How often ps_child_pump refreshes its list of what runs below a
   watched child (ps_child_watch_below).  A buildah killed from outside
   (SIGKILL, the OOM killer) leaves a RUN step's container running under
   init, and that list is all there is to find it by afterwards: a process
   started in the last interval before the kill is found only when it runs
   inside a container found (killing a container's init ends its pid
   namespace).  One look reads a few /proc files of the child's subtree. */
#define PS_CHILD_BELOW_REFRESH_MS 250

/* The most of a runc state.json read when looking for a killed buildah's
   containers (runc_state.h): one is some 35 KiB, most of it the config. */
#define RUNC_STATE_MAX_BYTES (1024 * 1024)

/* How often a streaming response wakes to check that its client is still
   connected while no event arrives. */
#define PS_STREAM_POLL_MS 200

/* Longest line of builder output kept as one event; longer lines are split. */
#define PS_MAX_LOG_LINE (64 * 1024)

/* Largest /solve JSON request: a SolveRequest is attrs and names, a few
   KiB; a megabyte leaves room for long build-arg values. */
#define PS_MAX_SOLVE_REQUEST (1024 * 1024)

/* Parts in one multipart /solve request: request + context + dockerfile
   + named contexts. */
#define PS_MAX_MULTIPART_PARTS 64

/* Longest multipart part name (it names a local source). */
#define PS_MAX_PART_NAME 64

/* Default bound on concurrently running jobs (--max-parallel): buildah
   builds are CPU- and IO-heavy; more than a few per core only thrash. */
#define PS_DEFAULT_MAX_PARALLEL 4

/* Builds waiting for a running slot (--max-queued): a client beyond this
   gets 429 at once rather than an unbounded wait. */
#define PS_DEFAULT_MAX_QUEUED 64

/* How long finished /solve jobs (and their kept outputs) stay listed and
   downloadable (--job-ttl, seconds). */
#define PS_DEFAULT_JOB_TTL_S 600

/* How long a cache prune waits for running builds to end before answering
   409: while it waits, new builds wait for it (so builds cannot starve a
   prune), and a longer wait would stall them too long. */
#define PS_PRUNE_WAIT_MS (5 * 60 * 1000)
/* Control.Status for a ref no job has yet waits this long for the job to
   appear (the client may ask before its Solve arrives), as BuildKit does. */
#define PS_STATUS_JOB_WAIT_MS 6000

/* Largest POST /solve/prune JSON body: four options and a filter map. */
#define PS_MAX_PRUNE_REQUEST (64 * 1024)
/* Largest byte count that body may give (2^53 - 1, 8 PiB): cJSON reads
   every number as a double, exact up to here; past it 2^53 + 1 and 2^53
   are one number, so a size the client did not send would be used. */
#define PS_MAX_JSON_BYTE_COUNT 9007199254740991.0

#endif
