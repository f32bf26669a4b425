/* diffcopy.h — pull a directory the client exposes (the build context, the
 * Dockerfile directory) with /moby.filesync.v1.FileSync/DiffCopy, as the
 * fsutil *receiver* (buildkit-protocols.md §3.5, checklist §10.2).
 *
 * The destination is a cache directory kept between builds: only files
 * whose size or modification time changed since the last transfer are
 * requested, entries the client no longer lists are removed, and a file
 * being received is written under a temporary name and renamed into place
 * only when complete. */
#ifndef SESSION_DIFFCOPY_H
#define SESSION_DIFFCOPY_H

#include "session/session.h"

struct diffcopy_opts
{
  /* Which directory of the client: "context" or "dockerfile" (the names
     the docker CLI exposes); sent as metadata dir-name. */
  const char *dir_name;
  /* Sent as include-patterns / exclude-patterns / followpaths metadata
     (one header per value; values must be printable text).  The client
     applies them; we also drop non-directory entries that match an exclude
     pattern, so a client that ignores the metadata cannot bring excluded
     files into the build.  Include patterns and followpaths are left to
     the client. */
  const char *const *include_patterns;
  size_t n_include;
  const char *const *exclude_patterns;
  size_t n_exclude;
  const char *const *follow_paths;
  size_t n_follow;
  /* Called on the calling thread after every packet with the cumulative
     bytes of packets received (what BuildKit shows as "transferring
     context: N"); keep it cheap.  Optional. */
  void (*progress) (void *ud, uint64_t bytes_so_far);
  void *progress_ud;

  /* Optional, zero = default. */
  uint64_t max_bytes;  /* file bytes accepted; PS_DEFAULT_MAX_CONTEXT_BYTES */
  size_t max_entries;  /* entries listed; PS_MAX_CONTEXT_ENTRIES */
  int idle_timeout_ms; /* longest silence; diffcopy_set_idle_timeout's */
  /* Polled a few times a second; returning true abandons the transfer
     (the build was cancelled).  Optional. */
  bool (*cancelled) (void *ud);
  void *cancel_ud;
};

struct diffcopy_stats
{
  uint64_t bytes;         /* protobuf bytes received (packets) */
  uint64_t file_bytes;    /* file contents received */
  size_t files_requested; /* REQs sent: new or changed regular files */
  size_t entries;         /* entries the client listed */
  size_t removed;         /* entries of dest_dir not listed any more, removed */
};

/* Synchronise `dest_dir` (created if missing) with the client's directory.
   The caller picks dest_dir per (session shared key, dir name) and
   serialises access to it.  Returns 0, or -1 with *err: the client's ERR
   packet, a protocol violation (bad path, entries out of order, DATA for a
   file not requested...), a gRPC failure, a dropped session, a timeout or
   cancellation.  On failure no temporary file is left behind and no file
   in dest_dir is half written; dest_dir may hold a mix of old and new
   complete files, which the next transfer reconciles.  `st` is optional. */
int session_diffcopy (ps_session *s, const char *dest_dir, const struct diffcopy_opts *o, struct diffcopy_stats *st,
                      ps_error **err);

/* The same on a bare gRPC connection (no session object): for tests and
   tools.  `who` names the peer in error messages. */
int diffcopy_receive (grpc_conn *conn, const char *who, const char *dest_dir, const struct diffcopy_opts *o,
                      struct diffcopy_stats *st, ps_error **err);

/* The receiver without its transport, packet by packet: what
   diffcopy_receive runs on a gRPC call, and what tests/fuzz/fuzz_diffcopy.c
   drives directly.  Same contract for dest_dir as above. */
typedef struct diffcopy_receiver diffcopy_receiver;

/* How the receiver answers the sender (REQ, FIN, and ERR on failure):
   `packet` is one packed fsutil Packet, valid during the call only.
   `final` marks the ERR of a failing transfer, the last packet: the
   transport sends it without waiting on a peer that reads nothing, then
   ends the call.  Returns 0, or -1 with *err (the transfer fails). */
typedef int (*diffcopy_send_fn) (void *ud, const void *packet, size_t len, bool final, ps_error **err);

/* Create dest_dir if missing and open it.  `o` (dir_name, exclude patterns,
   max_bytes) must outlive the receiver; its transport fields (progress,
   idle_timeout_ms, cancelled) are for diffcopy_receive.  NULL with *err. */
diffcopy_receiver *diffcopy_receiver_new (const char *who, const char *dest_dir, const struct diffcopy_opts *o,
                                          diffcopy_send_fn send, void *send_ud, ps_error **err);
/* One packet from the sender (a gRPC message's bytes).  0, or -1 with *err:
   the transfer has failed, call diffcopy_receiver_fail. */
int diffcopy_receiver_packet (diffcopy_receiver *r, const void *msg, size_t len, ps_error **err);
/* The sender ended the call with grpc-status 0: 0 when the transfer was
   complete (it echoed our FIN), else -1 with *err (then _fail). */
int diffcopy_receiver_end (diffcopy_receiver *r, ps_error **err);
/* Abandon the transfer (§3.5 step 7): remove every temporary, and send ERR
   `why` (final) unless the transfer had failed already. */
void diffcopy_receiver_fail (diffcopy_receiver *r, const char *why);
void diffcopy_receiver_stats (const diffcopy_receiver *r, struct diffcopy_stats *st);
void diffcopy_receiver_free (diffcopy_receiver *r);

/* Path validation of §3.4/§3.5, exposed for tests and fuzzing: 0 when
   `path` is relative, clean, without "." or ".." elements, not empty and
   within PS_MAX_CONTEXT_PATH; -1 with a 400 error naming the problem. */
int diffcopy_check_path (const char *path, ps_error **err);

/* The longest silence of a transfer whose options give none
   (--session-transfer-timeout); set once at start-up.  Default
   PS_DIFFCOPY_IDLE_TIMEOUT_MS. */
void diffcopy_set_idle_timeout (int ms);

#endif
