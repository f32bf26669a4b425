/* session_limits.h — every limit of the /session layer, with its reason.
 * (Kept next to the code that enforces them; common/limits.h holds the
 * daemon-wide ones such as PS_MAX_CONTEXT_PATH, which we use too.) */
#ifndef SESSION_SESSION_LIMITS_H
#define SESSION_SESSION_LIMITS_H

/* Largest gRPC message we accept from the client.  grpc-go's default
   receive limit is 4 MiB and the docker CLI's session server keeps it, so
   no well-behaved client sends more (BuildKit splits FileSend chunks at
   3 MiB for the same reason); a bigger length prefix is a broken or hostile
   peer, and we refuse before buffering a byte of it. */
#define PS_GRPC_MAX_MESSAGE (4 * 1024 * 1024)

/* Largest message we send: the peer enforces the same 4 MiB default. */
#define PS_GRPC_MAX_SEND_MESSAGE (4 * 1024 * 1024)

/* HTTP/2 stream receive window we advertise.  Received bytes are handed
   back to the peer (WINDOW_UPDATE) only when the calling thread takes a
   message, so this bounds the memory one slow call can pin.  It must exceed
   one maximal message plus its 5-byte prefix, or a call whose consumer is
   waiting for that message could never receive it. */
#define PS_GRPC_STREAM_WINDOW (PS_GRPC_MAX_MESSAGE + 4 * 1024 * 1024)

/* HTTP/2 connection receive window.  Connection-level credit is returned
   as soon as bytes are read, so one slow call never stalls the others; the
   size only needs to keep a fast link busy. */
#define PS_GRPC_CONNECTION_WINDOW (16 * 1024 * 1024)

/* HTTP/2 concurrent streams: on /session we are the client, so the limit
   that applies is the one the peer sends (SETTINGS_MAX_CONCURRENT_STREAMS).
   nghttp2 honours it by holding calls beyond it until a stream closes (no
   RST_STREAM REFUSED_STREAM from a well-behaved peer; a refused call fails
   as UNAVAILABLE naming it), and their own timeouts bound the wait.  We
   send ENABLE_PUSH 0, so the peer may open no stream towards us: one it
   opens anyway is a protocol error that ends the session. */

/* The server side (POST /grpc, --buildkit-listen): BuildKit's daemon
   takes and sends messages up to 16 MiB (defaultMaxRecvMsgSize), and
   buildx relies on it (a big Definition, a ReadFile answer); beyond it is
   RESOURCE_EXHAUSTED, refused before a byte of the payload is buffered. */
#define PS_GRPC_SERVER_MAX_MESSAGE (16 * 1024 * 1024)

/* Server stream receive window: one maximal message plus room to keep
   the next one coming (see PS_GRPC_STREAM_WINDOW). */
#define PS_GRPC_SERVER_STREAM_WINDOW (PS_GRPC_SERVER_MAX_MESSAGE + 4 * 1024 * 1024)

/* Concurrent streams one client connection may open (each call runs on a
   thread of its own); nghttp2 refuses the ones beyond (REFUSED_STREAM). */
#define PS_GRPC_SERVER_MAX_STREAMS 256

/* Request metadata one call may carry (bytes of keys and values): the
   stream is reset beyond. */
#define PS_GRPC_MAX_METADATA_BYTES (64 * 1024)

/* Bytes a call may queue for sending before grpc_call_send blocks: keeps a
   fast producer (an export) from buffering a whole file in memory. */
#define PS_GRPC_SEND_BUFFER (1024 * 1024)

/* How long grpc_call_send waits for room in a full send buffer before it
   fails: a client that reads nothing for this long is stuck, and the
   build must not hang on it. */
#define PS_GRPC_SEND_STALL_MS (120 * 1000)

/* Encoded HTTP/2 output kept ready for the socket before the I/O thread
   stops pulling more from nghttp2 and waits for the socket to drain. */
#define PS_GRPC_OUTPUT_HIGH_WATER (256 * 1024)

/* How long a TLS client (--buildkit-listen tcp://) has for its handshake:
   a peer that connects and says nothing (or dribbles) holds a connection
   slot and a thread only this long.  A real client needs a round trip or
   two; Go's gRPC server allows 120 s, which is long for a slot. */
#define PS_GRPC_TLS_HANDSHAKE_MS (10 * 1000)

/* After refusing a TLS handshake, how long we keep reading (and
   dropping) what the client still sends, so that it reads our alert
   before the close resets the connection. */
#define PS_GRPC_TLS_LINGER_MS 1000

/* Longest grpc-message we keep (the rest is cut): it ends up in an error
   line shown to a user. */
#define PS_GRPC_MAX_STATUS_MESSAGE (16 * 1024)

/* How long /build waits for the session it names to appear: clients open
   /session and /build concurrently; BuildKit waits 5 s as well. */
#define PS_SESSION_WAIT_MS 5000

/* Methods one client may expose in X-Docker-Expose-Session-Grpc-Method:
   BuildKit clients expose about 20; the cap bounds a hostile header list. */
#define PS_SESSION_MAX_METHODS 256

/* DiffCopy: how long the transfer may see no packet at all before it is
   abandoned (--session-transfer-timeout, seconds).  The docker CLI sends
   its listing as it walks, so even a huge context produces a packet at
   least every few milliseconds; a silent peer for this long is stuck (a
   frozen client, a laptop suspended mid-build) and holds its build's slot. */
#define PS_DIFFCOPY_IDLE_TIMEOUT_MS (120 * 1000)

/* Largest --session-transfer-timeout accepted (a day, in seconds): the
   value becomes milliseconds in an int; a transfer silent longer than a
   day is not coming back. */
#define PS_MAX_SESSION_TRANSFER_TIMEOUT_S (24 * 3600)

/* DiffCopy: temporary files kept open at once.  fsutil's sender streams 4
   files at a time, so a handful suffice; past this we close the least
   recently written one and reopen it on its next chunk. */
#define PS_DIFFCOPY_MAX_OPEN_FILES 32

/* A session that no build names and that has no call open is closed
   after this long (--session-idle-timeout, seconds; 0 = never).  Each
   session holds a thread and a socket, and a client could otherwise open
   sessions and never build.  A build names its session from its request to
   its end (queued, running a long RUN, exporting), so a session in use is
   never idle; the docker CLI closes its session when its build ends.
   Silence inside a call has its own bounds (PS_DIFFCOPY_IDLE_TIMEOUT_MS,
   PS_SESSION_UNARY_TIMEOUT_MS). */
#define PS_DEFAULT_SESSION_IDLE_TIMEOUT_S 600

/* Largest --session-idle-timeout accepted (a week, in seconds): the value
   becomes milliseconds in an int, and a longer one is surely a typo. */
#define PS_MAX_SESSION_IDLE_TIMEOUT_S (7 * 24 * 3600)

/* At shutdown, how long podsolved waits for open /session connections to
   end after telling them GOAWAY, before stopping the HTTP daemons anyway. */
#define PS_SESSION_SHUTDOWN_GRACE_MS 5000

/* Unary session calls (Auth, Secrets, Health): the client answers from
   memory or a credential helper; a helper that prompts can take a while. */
#define PS_SESSION_UNARY_TIMEOUT_MS (60 * 1000)

/* SSH agent forwarding (sshforward.c): bytes read from a connection to the
   forwarded socket per BytesMessage, BuildKit's copy.go chunk.  Agent
   messages are small (a signature, a key list); this only bounds a buffer. */
#define PS_SSH_CHUNK (32 * 1024)

/* Connections one forwarded socket serves at once: each holds two threads
   and a stream on the session; ssh and git open one or two per command, so
   more is a runaway process in the build, refused (closed) until some end. */
#define PS_SSH_MAX_CONNECTIONS 64

#endif
