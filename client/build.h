/* build.h — one `podsolve build`: its options as data, and the run that
 * sends them to POST /solve (build.c).  cmd_build.c fills the options from
 * the command line. */
#ifndef CLIENT_BUILD_H
#define CLIENT_BUILD_H

#include "client/http.h"
#include "client/outputs.h"
#include "client/progress.h"
#include "client/session.h"
#include "common/ps.h"

struct cli_build_opts
{
  const char *context;
  const char *file;       /* -f as given (relative to the working directory); "-" = stdin; NULL = default */
  ps_strv tags;           /* -t, each a name for the image exporter */
  ps_strv frontend_attrs; /* key, value, key, value ...; a later key wins */
  const char *ref;        /* --ref, or NULL */
  enum cli_progress_mode progress;
  struct cli_output *outputs;
  size_t n_outputs;
  ps_strv add_hosts;      /* --add-host HOST:IP, sent as add-hosts=HOST=IP,... */
  ps_strv cache_from;     /* --cache-from SPEC (CSV as buildx takes it, or a plain ref) */
  ps_strv cache_to;       /* --cache-to SPEC */
  ps_strv entitlements;   /* --network host: network.host; --allow ENTITLEMENT */
  const char *iidfile;    /* --iidfile FILE: the image id (sha256:...) */
  const char *metadata_file; /* --metadata-file FILE: the exporter response as JSON */
  struct cli_secret *secrets; /* --secret: served on a session the request names */
  size_t n_secrets;
  struct cli_ssh *ssh; /* --ssh */
  size_t n_ssh;
};

void cli_build_opts_free (struct cli_build_opts *o);

/* Tar the context, send the request, render the stream, download the
   outputs.  Returns an enum cli_exit.  Problems met before the stream or
   after it (writing outputs) are left in *err for the caller to print;
   what the stream itself reports is printed as it is rendered. */
int cli_build_run (cli_http *h, struct cli_build_opts *o, ps_error **err);

#endif
