/* listen.h — listening sockets: unix (mode 0660, stale file replaced, live
 * one refused), tcp, and systemd socket activation (LISTEN_FDS). */
#ifndef SERVER_LISTEN_H
#define SERVER_LISTEN_H

#include "common/ps.h"

struct ps_listener
{
  int fd;
  char *uri;       /* for logs */
  char *unix_path; /* unlinked at exit; NULL for tcp and inherited fds */
  bool tcp;        /* opened from a tcp:// URI */
};

/* Open every --listen URI plus inherited systemd sockets.  Unix sockets
   are mode 0660, owned by `group` when given (NULL: the daemon's group). */
int listeners_open (const ps_strv *uris, const char *group, struct ps_listener **out, size_t *n,
                       ps_error **err);
/* The same for `uris` alone (no systemd sockets; none is no error). */
int listeners_open_uris (const ps_strv *uris, const char *group, struct ps_listener **out, size_t *n,
                         ps_error **err);
void listeners_close (struct ps_listener *l, size_t n);

#endif
