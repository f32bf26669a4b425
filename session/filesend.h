/* filesend.h — send a build's output back to the client over
 * /moby.filesync.v1.FileSend/DiffCopy (buildkit-protocols.md §3.7).
 *
 * The client exposes FileSend only when the user asked for an output
 * (`docker build --output type=local|tar,dest=...`); it keeps `dest` to
 * itself and writes what we send there.  One RPC, two shapes:
 *
 *   a file (type=tar/oci/docker): the bytes as BytesMessage chunks, then a
 *     half-close; the client ends the call (OK) once it has written them;
 *   a tree (type=local): fsutil Packets with the daemon as the fsutil
 *     *sender* (§3.5 sender behaviour) and the client as the receiver.
 *
 * No request metadata is sent: the 20.10 CLI reads none, and newer clients
 * default `buildkit-attachable-exporter-id` to their first output.
 *
 * Both block the calling thread (a build job) until the client has the
 * whole output or the transfer failed; a client that stops reading fails
 * the call after PS_GRPC_SEND_STALL_MS, one that stops answering after
 * PS_FILESEND_IDLE_TIMEOUT_MS (defined in filesend.c with the other
 * limits of this file).  `progress` (optional) is called on the calling
 * thread after every message sent with the cumulative bytes so far: file
 * bytes for a file, packet bytes (STAT + DATA) for a tree, as BuildKit
 * counts them.  Keep it cheap. */
#ifndef SESSION_FILESEND_H
#define SESSION_FILESEND_H

#include "session/session.h"

/* The file at `path` as the client's output file.  Sent in BytesMessages
   of at most 3 MiB (PS_FILESEND_FILE_CHUNK: under the client's 4 MiB
   receive limit), as BuildKit splits them.  Errors: the client does not
   serve FileSend (it did not ask for an output over the session), the
   client declined the target (ALREADY_EXISTS, 409), a gRPC failure or a
   dropped session. */
int session_filesend_file (ps_session *s, const char *path, void (*progress) (void *ud, uint64_t bytes), void *ud,
                           ps_error **err);

/* The tree at `root` as the client's output directory.  Every entry below
   root is listed (root itself is not), symlinks are sent as links and
   never followed, sockets are left out, later names of a hard-linked
   regular file are sent as hard links to the first.  Errors as above, plus
   the receiver's ERR packet ("error from receiver: ..."), a REQ the
   listing does not allow (sent back as ERR), and entries that change while
   they are sent. */
int session_filesend_dir (ps_session *s, const char *root, void (*progress) (void *ud, uint64_t bytes), void *ud,
                          ps_error **err);

/* The same on a bare gRPC connection (no session object, no check of the
   exposed methods): for tests and tools.  `who` names the peer in error
   messages. */
int filesend_file (grpc_conn *conn, const char *who, const char *path, void (*progress) (void *ud, uint64_t bytes),
                   void *ud, ps_error **err);
int filesend_dir (grpc_conn *conn, const char *who, const char *root, void (*progress) (void *ud, uint64_t bytes),
                  void *ud, ps_error **err);

/* Go os.FileMode bits (§3.4) for a POSIX st_mode, as Go's os.Lstat
   computes them and fsutil sends them.  Exposed for tests. */
uint32_t filesend_go_mode (mode_t st_mode);

#endif
