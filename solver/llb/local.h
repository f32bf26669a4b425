/* llb_local.h — what a local:// source op selects from its directory.
 *
 * BuildKit's local source carries fsutil's filters as attrs:
 *   local.includepattern   JSON list (BuildKit's key, pb.AttrIncludePatterns):
 *                          only paths matching one (or inside a matching
 *                          directory) are taken, with the parent
 *                          directories that lead to them; a value that is
 *                          not a list is one pattern;
 *   local.includepatterns  the same (accepted as well);
 *   local.excludepatterns  JSON list, .dockerignore semantics ('!' re-includes);
 *   local.followpaths      JSON list of paths taken as they are (treated as
 *                          include patterns of exactly those paths).
 * The client applies them when it sends the directory over the session;
 * podsolve applies them again when it stages the directory, so a client
 * that ignores them, or a multipart tar, selects the same files. */
#ifndef SOLVER_LLB_LOCAL_H
#define SOLVER_LLB_LOCAL_H

#include "common/ps.h"
#include "schema/ops.pb-c.h"
#include "common/dockerignore.h"
#include "solver/llb/llb.h"

struct llb_local_filter
{
  ps_strv includes;    /* include patterns and follow paths, as sent */
  ps_strv excludes;    /* exclude patterns, as sent */
  ps_strv follow;      /* follow paths, as sent (also in includes) */
  ps_ignore *include;  /* matcher of `includes`, NULL when there are none */
  ps_ignore *exclude;  /* matcher of `excludes`, NULL when there are none */
};

/* Parse the filter attrs of a local source; a 400 naming the attr when one
   is not a JSON list of strings or holds a malformed pattern. */
int llb_local_filter_parse (const Pb__SourceOp *s, const char *op_digest, struct llb_local_filter *f, ps_error **err);
void llb_local_filter_free (struct llb_local_filter *f);

/* True when the filter selects everything. */
bool llb_local_filter_empty (const struct llb_local_filter *f);

/* Make `dest` (created, must not exist) a copy of what `f` selects from
   `src`: regular files are hard-linked when src and dest share a file
   system (copied otherwise), directories recreated with their modes,
   owners and times, symlinks copied as links (never followed).  Special
   files are skipped. */
int llb_local_stage (const char *src, const char *dest, const struct llb_local_filter *f, ps_error **err);

#endif
