/* llb_fileutil.h — the pure pieces of LLB FileOps (solver/llb/fileop.c),
 * kept apart so the unit tests can check them without a rootfs: Go's
 * filepath.Match (copy and rm wildcards), chmod(1) symbolic modes
 * (FileActionCopy.modeStr, as BuildKit's dchapes-mode), and /etc/passwd and
 * /etc/group lookups (owner by name; never the host's NSS).
 *
 * Everything here is reentrant: no static mutable state. */
#ifndef SOLVER_LLB_FILEUTIL_H
#define SOLVER_LLB_FILEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Largest /etc/passwd or /etc/group read (BuildKit's maxUserFileBytes). */
#define LLB_MAX_USER_FILE_BYTES (10 * 1024 * 1024)

/* fsutil's containsWildcards: an unescaped '*', '?' or '[' ('\\' escapes
   the next byte). */
bool llb_has_wildcards (const char *s);

/* Go's path/filepath.Match with '/' as separator: 1 match, 0 no match,
   -1 malformed pattern (Go's ErrBadPattern). */
int llb_glob_match (const char *pattern, const char *name);

/* True when Go would never report ErrBadPattern for `pattern`. */
bool llb_glob_valid (const char *pattern);

/* A parsed chmod(1) mode: octal ("755") or symbolic ("u+rwx,go-w", "+X",
   "go=u-w"), as BSD setmode(3) with a zero umask — what BuildKit applies
   for FileActionCopy.modeStr. */
struct llb_mode_cmd
{
  char cmd;            /* '+', '-', 'X', or 'u'/'g'/'o' (copy those bits) */
  unsigned char cmd2;  /* for copies: which classes, set and/or clear */
  uint16_t bits;
};

struct llb_modeset
{
  struct llb_mode_cmd *cmds;
  size_t n;
};

/* 0, or -1 when `s` is not a valid mode (out is then empty). */
int llb_modeset_parse (const char *s, struct llb_modeset *out);
/* `mode` (st_mode: type bits kept) after the changes; 'X' looks at the
   type and the execute bits `mode` had. */
mode_t llb_modeset_apply (const struct llb_modeset *m, mode_t mode);
void llb_modeset_free (struct llb_modeset *m);

/* The first entry named `name` in passwd-format `text` (name:pw:uid:gid:...;
   blank and '#' lines skipped): 1 with *uid and *gid set, 0 when there is
   none, -1 when that entry's uid or gid is not a number. */
int llb_passwd_lookup (const char *text, size_t len, const char *name, uint32_t *uid, uint32_t *gid);

/* The same for group-format `text` (name:pw:gid:members). */
int llb_group_lookup (const char *text, size_t len, const char *name, uint32_t *gid);

#endif
