/* main.c — podsolve, the command-line client of podsolved's /solve API:
 * global options, the command table, signals. */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cli.h"

volatile sig_atomic_t cli_interrupted;

struct command
{
  const char *name;
  int (*run) (struct cli_global *g, int argc, char **argv);
  const char *summary;
};

static const struct command commands[] = {
  { "build", cmd_build, "build an image from a Dockerfile and a context directory" },
  { "ls", cmd_ls, "list recent solves" },
  { "status", cmd_status, "show the progress of a solve (replayed from its start)" },
  { "cancel", cmd_cancel, "cancel a running solve" },
};

void
cli_print_error (const ps_error *err)
{
  fprintf (stderr, "podsolve: %s\n", err && err->msg ? err->msg : "unknown error");
}

static void
usage (FILE *out)
{
  fprintf (out, "Usage: podsolve [--host ADDRESS] COMMAND [OPTIONS]\n\nCommands:\n");
  for (size_t i = 0; i < ARRAY_SIZE (commands); i++)
    fprintf (out, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf (out,
           "\nGlobal options:\n"
           "  --host ADDRESS  daemon address: unix:///path, tcp://host:port, http(s)://host:port\n"
           "                  (default: $PODSOLVE_HOST, a unix:// $DOCKER_HOST, or %s)\n"
           "  --version       print the version\n"
           "\nRun 'podsolve COMMAND --help' for the options of a command.\n",
           CLI_DEFAULT_HOST);
}

/* The first signal asks for an orderly stop (transfers end at their next
   tick, the daemon sees the connection close); a second one kills. */
static void
on_interrupt (int sig)
{
  cli_interrupted = 1;
  signal (sig, SIG_DFL);
}

static void
install_signal_handlers (void)
{
  struct sigaction sa;
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  /* A closed stdout (podsolve build -o - | head) is an EPIPE error, not a
     silent death. */
  signal (SIGPIPE, SIG_IGN);
}

int
main (int argc, char **argv)
{
  struct cli_global g = { 0 };
  static const struct option longopts[] = {
    { "host", required_argument, NULL, CLI_OPT_HOST },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
  };
  /* '+': stop at the command name; its options are its own. */
  int c;
  while ((c = getopt_long (argc, argv, "+hH:", longopts, NULL)) != -1)
    switch (c)
      {
      case CLI_OPT_HOST:
      case 'H':
        g.host = optarg;
        break;
      case 'h':
        usage (stdout);
        return CLI_EXIT_OK;
      case 'V':
        printf ("podsolve %s\n", PODSOLVE_VERSION);
        return CLI_EXIT_OK;
      default:
        usage (stderr);
        return CLI_EXIT_USAGE;
      }
  if (optind >= argc)
    {
      usage (stderr);
      return CLI_EXIT_USAGE;
    }
  const char *name = argv[optind];
  for (size_t i = 0; i < ARRAY_SIZE (commands); i++)
    if (strcmp (commands[i].name, name) == 0)
      {
        if (curl_global_init (CURL_GLOBAL_DEFAULT) != CURLE_OK)
          {
            fprintf (stderr, "podsolve: cannot initialize libcurl\n");
            return CLI_EXIT_FAILED;
          }
        install_signal_handlers ();
        int argc_cmd = argc - optind;
        char **argv_cmd = argv + optind;
        optind = 0; /* reset getopt for the command's own options */
        int ret = commands[i].run (&g, argc_cmd, argv_cmd);
        curl_global_cleanup ();
        return ret;
      }
  fprintf (stderr, "podsolve: unknown command \"%s\"\n\n", name);
  usage (stderr);
  return CLI_EXIT_USAGE;
}
