/* cli.h — what the commands of the podsolve CLI share: exit statuses, the
 * daemon address, the interrupt flag and the limits the client enforces.
 * Each command is one file (cmd_build.c, cmd_jobs.c) that parses its
 * options and drives the helpers in http.c, context_tar.c, progress*.c
 * and outputs.c. */
#ifndef CLIENT_CLI_H
#define CLIENT_CLI_H

#include <signal.h>

#include "common/ps.h"

#ifndef PODSOLVE_VERSION
#define PODSOLVE_VERSION "unknown"
#endif

/* Exit statuses, as the man page lists them. */
enum cli_exit
{
  CLI_EXIT_OK = 0,
  CLI_EXIT_FAILED = 1,        /* the build failed, or the daemon refused the request */
  CLI_EXIT_USAGE = 2,         /* bad command line */
  CLI_EXIT_INTERRUPTED = 130, /* SIGINT/SIGTERM: 128 + SIGINT, as shells report it */
};

/* Where the daemon listens when neither --host, $PODSOLVE_HOST nor a
   unix:// $DOCKER_HOST says otherwise. */
#define CLI_DEFAULT_HOST "unix:///run/podsolve/podsolve.sock"

/* How often a transfer wakes to redraw the tty display and look at the
   interrupt flag while no byte arrives: 10 redraws a second keeps the
   timers smooth without burning CPU. */
#define CLI_TICK_MS 100

/* Largest JSON answer read whole (GET /solve lists at most a few hundred
   jobs of a few hundred bytes each). */
#define CLI_MAX_JSON_BODY (16 * 1024 * 1024)

/* Longest NDJSON line accepted from the daemon: a log event carries at most
   64 KiB of output, base64-encoded, plus its keys. */
#define CLI_MAX_STREAM_LINE (1024 * 1024)

/* Largest error body kept to show the daemon's message. */
#define CLI_MAX_ERROR_BODY (64 * 1024)

/* Lines of output remembered per vertex, shown when that vertex fails. */
#define CLI_LOG_TAIL_LINES 10

/* Options every command understands (before or after the command name). */
struct cli_global
{
  const char *host; /* --host: unix:///path, tcp://host:port, http(s)://...;
                       NULL = $PODSOLVE_HOST, unix:// $DOCKER_HOST, default */
};

/* The getopt value of --host, which every command accepts too. */
#define CLI_OPT_HOST 0x1000

/* Set by SIGINT and SIGTERM.  Transfers look at it every CLI_TICK_MS and
   stop; closing the /solve connection makes the daemon cancel the build. */
extern volatile sig_atomic_t cli_interrupted;

/* Print "podsolve: <msg>" on stderr. */
void cli_print_error (const ps_error *err);

/* Commands: argv[0] is the command name; they return an enum cli_exit. */
int cmd_build (struct cli_global *g, int argc, char **argv);
int cmd_ls (struct cli_global *g, int argc, char **argv);
int cmd_status (struct cli_global *g, int argc, char **argv);
int cmd_cancel (struct cli_global *g, int argc, char **argv);

#endif
