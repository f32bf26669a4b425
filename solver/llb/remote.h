/* llb_remote.h — LLB source ops that fetch from the network: http:// and
 * https:// (one downloaded file) and git:// (a checkout of one commit),
 * with BuildKit's attrs and defaults (buildkit-protocols.md §6.3; BuildKit
 * source/http and source/git).
 *
 * A remote source runs in three steps so the executor can cache it:
 *   check        at plan time, attrs only: 400 for a bad value, 501 for
 *                what podsolve cannot do (secrets, ssh remotes, ...);
 *   resolve      what the content is now: an http file is downloaded and
 *                hashed (unless http.checksum pins it; when an earlier
 *                download left ETag/Last-Modified, the server is asked
 *                whether it changed and a 304 reuses that digest), a git
 *                ref becomes a commit sha with `git ls-remote` (no clone);
 *   materialize  only when no cached result has that identity: the file
 *                or the checkout is written into an empty scratch rootfs.
 *
 * http(s):  the file is named http.filename, else the response's
 *           Content-Disposition filename, else the URL path's last
 *           component, else "download"; mode http.perm & 0777 (default
 *           0600); owner http.uid/http.gid (default 0); mtime the
 *           Last-Modified header (else the epoch).  Redirects are followed
 *           (LLB_REMOTE_MAX_REDIRECTS, http and https only); any final
 *           status but 2xx is an error.  http.checksum ("sha256:<hex>") is
 *           verified, and a pinned source that is cached is not fetched.
 *           http.header.accept / .user-agent are sent, other headers
 *           dropped (as BuildKit).
 * git:      identifier git://HOST/PATH[#REF[:SUBDIR]]; the remote is
 *           git.fullurl when set (https:// prepended without a scheme),
 *           else https://HOST/PATH.  REF is a branch, tag, full ref or
 *           full commit sha (default: the remote's HEAD).  Remotes over
 *           http, https and git:// only.  .git is kept with
 *           git.keepgitdir=true (and no subdir); submodules are checked
 *           out unless git.skipsubmodules=true; git.checksum is a commit
 *           sha prefix the ref must resolve to.  git.authtokensecret /
 *           git.authheadersecret are optional in BuildKit and are not
 *           looked up here: remotes are fetched anonymously.
 *
 * Everything is thread-safe (no shared mutable state); long steps poll
 * solver_job_cancelled() and stop with a 499. */
#ifndef SOLVER_LLB_REMOTE_H
#define SOLVER_LLB_REMOTE_H

#include "common/ps.h"
#include "solver/job.h"
#include "solver/llb/llb.h"

/* Largest http source file: an ADD <url> bigger than the largest build
   context podsolved accepts (PS_DEFAULT_MAX_CONTEXT_BYTES) is almost
   surely a mistake, and the file is held twice on disk while it is
   copied into the image. */
#define LLB_REMOTE_MAX_HTTP_BYTES (4ULL * 1024 * 1024 * 1024)

/* Redirects followed for one download: Go's net/http default, which
   BuildKit's http source uses. */
#define LLB_REMOTE_MAX_REDIRECTS 10

/* A connection that cannot be set up in this time is an error. */
#define LLB_REMOTE_CONNECT_TIMEOUT_S 60

/* A transfer (http download, or git over http) that moves less than one
   byte per second for this long has stalled and is an error; a slow but
   live server is never cut off. */
#define LLB_REMOTE_STALL_S 300

/* How long a cancelled git gets after SIGTERM before its process group
   is killed (git removes its lock files on SIGTERM). */
#define LLB_REMOTE_CANCEL_GRACE_MS 3000

/* Output kept from one git command (ls-remote of a few patterns is
   small; this bounds what a hostile server can make us hold). */
#define LLB_REMOTE_MAX_GIT_OUTPUT (4 * 1024 * 1024)

/* True for the identifiers this file handles (http://, https://, git://). */
bool llb_remote_handles (const char *identifier);

/* Plan time, nothing fetched: 400 naming the op and the attr for a bad
   http.checksum (not "sha256:<64 hex>"), http.perm / uid / gid, URL,
   git ref or git.checksum; 501 for what podsolve does not support. */
int llb_remote_check (const struct llb_vertex *v, ps_error **err);

struct llb_remote;

/* Find out what the source holds now (see above).  `tmp_root` is an
   existing private directory: a temporary directory inside it holds the
   download or checkout until llb_remote_free.  With `state_dir`, http
   downloads are revalidated through records in CACHE_HTTP_RECORDS
   (cache_prune.h) there (NULL: always a plain GET, as for no-cache).
   SOLVER_EV_STATUS events report download progress for vertex `v`.  The remote keeps pointers
   into `v`, which must outlive it. */
int llb_remote_resolve (const struct llb_vertex *v, const char *tmp_root, const char *state_dir, solver_job *job,
                        struct llb_remote **out, ps_error **err);

/* The content identity for the vertex cache key: "http:sha256:<hex>"
   with the file name, mode and owner; "git:<sha>" with keep-git-dir,
   subdir and submodule choice. */
const char *llb_remote_key (const struct llb_remote *r);

/* Write the source into `rootfs` (a mounted, empty scratch rootfs). */
int llb_remote_materialize (struct llb_remote *r, const char *rootfs, solver_job *job, ps_error **err);

/* A scratch working container, materialize into it, commit: *image gets
   the new image id. */
int llb_remote_commit (struct llb_remote *r, solver_job *job, char **image, ps_error **err);

/* Remove the temporary directory and free (NULL is fine). */
void llb_remote_free (struct llb_remote *r);
void llb_remote_freep (struct llb_remote **r);
#define cleanup_llb_remote __attribute__ ((cleanup (llb_remote_freep)))

/* ---- pieces exposed for the unit tests ------------------------------------ */

/* The name BuildKit gives a downloaded file: `attr` (http.filename) if
   set, else the Content-Disposition filename (may be NULL), else the
   URL path's last component (percent-decoded), else "download"; always
   one safe path component. */
char *llb_remote_http_filename (const char *url, const char *attr, const char *content_disposition);

/* What a git source op asks for, as resolve reads it. */
struct llb_git_spec
{
  char *remote;      /* the URL git fetches from */
  char *ref;         /* "" = the remote's HEAD */
  char *subdir;      /* cleaned, no leading '/'; "" = the whole tree */
  char *checksum;    /* git.checksum (hex prefix), or NULL */
  bool keep_git_dir;
  bool skip_submodules;
};
int llb_remote_git_spec (const struct llb_vertex *v, struct llb_git_spec *out, ps_error **err);
void llb_git_spec_free (struct llb_git_spec *s);

#endif
