/* cmd_build.c — `podsolve build`: the command line into cli_build_opts,
 * then cli_build_run (build.c). */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/build.h"
#include "client/cli.h"

static void
usage (FILE *out)
{
  fprintf (
      out,
      "Usage: podsolve build [OPTIONS] CONTEXT\n\n"
      "Build CONTEXT (a directory) with its Dockerfile on podsolved.\n\n"
      "Options:\n"
      "  -f, --file FILE          the Dockerfile (default CONTEXT/Dockerfile or CONTEXT/Containerfile;\n"
      "                           - reads it from stdin)\n"
      "  -t, --tag NAME           name the image (repeatable)\n"
      "      --build-arg K=V      set a build argument (K alone: take V from the environment)\n"
      "      --label K=V          set an image label\n"
      "      --target STAGE       build up to this stage\n"
      "      --platform P         target platform(s), e.g. linux/amd64\n"
      "      --no-cache           do not use the build cache\n"
      "  -o, --output SPEC        type=local,dest=DIR | type=tar,dest=FILE|- | type=oci|docker,dest=FILE[,name=N]\n"
      "                           | type=image,name=N[,push=true] | type=cacheonly\n"
      "                           | type=store,endpoint=unix:///S|https://H,name=N[:T]\n"
      "                           | type=s3,bucket=B,region=R[,endpoint_url=U],name=N[:T] (repeatable)\n"
      "      --progress MODE      auto, tty, plain, rawjson or quiet (default auto)\n"
      "      --ref REF            name the solve (for podsolve status/cancel)\n"
      "      --add-host HOST:IP   an /etc/hosts entry for RUN (repeatable)\n"
      "      --network MODE       RUN's network: default, none or host (host asks for network.host)\n"
      "      --pull               always pull the base images\n"
      "      --cache-from SPEC    import a cache: type=registry,ref=R | type=local,src=DIR (on the daemon) | REF\n"
      "      --cache-to SPEC      export one: type=registry,ref=R[,mode=max] | type=local,dest=DIR\n"
      "      --allow ENTITLEMENT  network.host or security.insecure (RUN --network=host / --security=insecure)\n"
      "      --iidfile FILE       write the image id (sha256:...) to FILE\n"
      "      --metadata-file FILE write the build's result metadata (exporter response) to FILE as JSON\n"
      "      --secret SPEC        a secret for RUN --mount=type=secret (repeatable):\n"
      "                           id=ID[,src=FILE][,env=VAR][,type=file|env]; id=ID alone: $ID if set, else file ID\n"
      "      --ssh ID[=PATH]      an SSH agent for RUN --mount=type=ssh (repeatable): PATH an agent socket\n"
      "                           (default $SSH_AUTH_SOCK) or private key files (comma-separated)\n"
      "      --host ADDRESS       daemon address (see podsolve --help)\n");
}

static void
add_attr (struct cli_build_opts *o, const char *key, const char *value)
{
  ps_strv_push (&o->frontend_attrs, key);
  ps_strv_push (&o->frontend_attrs, value);
}

/* --build-arg / --label: K=V; a build arg K alone takes $K (and is left out
   when $K is unset), as docker build does. */
static int
add_kv (struct cli_build_opts *o, const char *prefix, const char *arg, bool from_env, ps_error **err)
{
  const char *eq = strchr (arg, '=');
  if (eq == arg || *arg == '\0')
    return ps_error_set (err, 0, "--%s %s: expected KEY=VALUE", strcmp (prefix, "label:") == 0 ? "label" : "build-arg",
                         arg);
  cleanup_free char *key = eq ? xstrndup (arg, (size_t) (eq - arg)) : xstrdup (arg);
  cleanup_free char *attr = xasprintf ("%s%s", prefix, key);
  const char *value = eq ? eq + 1 : from_env ? getenv (key) : "";
  if (value)
    add_attr (o, attr, value);
  return 0;
}

enum
{
  OPT_BUILD_ARG = 0x100,
  OPT_LABEL,
  OPT_TARGET,
  OPT_PLATFORM,
  OPT_NO_CACHE,
  OPT_PROGRESS,
  OPT_REF,
  OPT_ADD_HOST,
  OPT_NETWORK,
  OPT_PULL,
  OPT_CACHE_FROM,
  OPT_CACHE_TO,
  OPT_ALLOW,
  OPT_IIDFILE,
  OPT_METADATA_FILE,
  OPT_SECRET,
  OPT_SSH,
};

/* Returns 0 to build, 1 when --help was answered, -1 on a usage error. */
static int
parse_args (struct cli_global *g, int argc, char **argv, struct cli_build_opts *o, ps_error **err)
{
  static const struct option longopts[] = {
    { "file", required_argument, NULL, 'f' },
    { "tag", required_argument, NULL, 't' },
    { "build-arg", required_argument, NULL, OPT_BUILD_ARG },
    { "label", required_argument, NULL, OPT_LABEL },
    { "target", required_argument, NULL, OPT_TARGET },
    { "platform", required_argument, NULL, OPT_PLATFORM },
    { "no-cache", no_argument, NULL, OPT_NO_CACHE },
    { "output", required_argument, NULL, 'o' },
    { "progress", required_argument, NULL, OPT_PROGRESS },
    { "ref", required_argument, NULL, OPT_REF },
    { "add-host", required_argument, NULL, OPT_ADD_HOST },
    { "network", required_argument, NULL, OPT_NETWORK },
    { "pull", no_argument, NULL, OPT_PULL },
    { "cache-from", required_argument, NULL, OPT_CACHE_FROM },
    { "cache-to", required_argument, NULL, OPT_CACHE_TO },
    { "allow", required_argument, NULL, OPT_ALLOW },
    { "iidfile", required_argument, NULL, OPT_IIDFILE },
    { "metadata-file", required_argument, NULL, OPT_METADATA_FILE },
    { "secret", required_argument, NULL, OPT_SECRET },
    { "ssh", required_argument, NULL, OPT_SSH },
    { "host", required_argument, NULL, CLI_OPT_HOST },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  int c;
  while ((c = getopt_long (argc, argv, "f:t:o:h", longopts, NULL)) != -1)
    {
      int r = 0;
      switch (c)
        {
        case 'f':
          o->file = optarg;
          break;
        case 't':
          ps_strv_push (&o->tags, optarg);
          break;
        case OPT_BUILD_ARG:
          r = add_kv (o, "build-arg:", optarg, true, err);
          break;
        case OPT_LABEL:
          r = add_kv (o, "label:", optarg, false, err);
          break;
        case OPT_TARGET:
          add_attr (o, "target", optarg);
          break;
        case OPT_PLATFORM:
          add_attr (o, "platform", optarg);
          break;
        case OPT_NO_CACHE:
          add_attr (o, "no-cache", "");
          break;
        case 'o':
          o->outputs = xrealloc (o->outputs, (o->n_outputs + 1) * sizeof *o->outputs);
          r = cli_output_parse (optarg, &o->outputs[o->n_outputs], err);
          if (r == 0)
            o->n_outputs++;
          break;
        case OPT_PROGRESS:
          r = cli_progress_parse_mode (optarg, &o->progress, err);
          break;
        case OPT_REF:
          o->ref = optarg;
          break;
        case OPT_ADD_HOST:
          {
            /* docker's HOST:IP, BuildKit's HOST=IP on the wire */
            const char *sep = strchr (optarg, ':');
            if (sep == NULL || sep == optarg || sep[1] == '\0')
              r = ps_error_set (err, 0, "--add-host %s: expected HOST:IP", optarg);
            else
              ps_strv_pushf (&o->add_hosts, "%.*s=%s", (int) (sep - optarg), optarg, sep + 1);
            break;
          }
        case OPT_NETWORK:
          if (strcmp (optarg, "default") == 0)
            add_attr (o, "force-network-mode", "sandbox");
          else if (strcmp (optarg, "none") == 0 || strcmp (optarg, "host") == 0)
            {
              add_attr (o, "force-network-mode", optarg);
              if (strcmp (optarg, "host") == 0)
                ps_strv_push (&o->entitlements, "network.host");
            }
          else
            r = ps_error_set (err, 0, "--network %s: use default, none or host", optarg);
          break;
        case OPT_PULL:
          add_attr (o, "image-resolve-mode", "pull");
          break;
        case OPT_CACHE_FROM:
          ps_strv_push (&o->cache_from, optarg);
          break;
        case OPT_CACHE_TO:
          ps_strv_push (&o->cache_to, optarg);
          break;
        case OPT_ALLOW:
          ps_strv_push (&o->entitlements, optarg);
          break;
        case OPT_IIDFILE:
          o->iidfile = optarg;
          break;
        case OPT_METADATA_FILE:
          o->metadata_file = optarg;
          break;
        case OPT_SECRET:
          o->secrets = xrealloc (o->secrets, (o->n_secrets + 1) * sizeof *o->secrets);
          r = cli_secret_parse (optarg, &o->secrets[o->n_secrets], err);
          if (r == 0)
            o->n_secrets++;
          break;
        case OPT_SSH:
          o->ssh = xrealloc (o->ssh, (o->n_ssh + 1) * sizeof *o->ssh);
          r = cli_ssh_parse (optarg, &o->ssh[o->n_ssh], err);
          if (r == 0)
            o->n_ssh++;
          break;
        case CLI_OPT_HOST:
          g->host = optarg;
          break;
        case 'h':
          usage (stdout);
          return 1;
        default:
          return ps_error_set (err, 0, "see 'podsolve build --help'");
        }
      if (r < 0)
        return -1;
    }
  if (optind + 1 != argc)
    return ps_error_set (err, 0, "build takes exactly one CONTEXT directory (see 'podsolve build --help')");
  o->context = argv[optind];
  size_t to_stdout = 0;
  for (size_t i = 0; i < o->n_outputs; i++)
    to_stdout += o->outputs[i].dest && strcmp (o->outputs[i].dest, "-") == 0;
  if (to_stdout > 1)
    return ps_error_set (err, 0, "only one --output can write to stdout");
  if (to_stdout && isatty (STDOUT_FILENO))
    return ps_error_set (err, 0, "refusing to write a tar to the terminal: redirect stdout, or give dest=FILE");
  return 0;
}

int
cmd_build (struct cli_global *g, int argc, char **argv)
{
  struct cli_build_opts o = { .progress = CLI_PROGRESS_AUTO };
  cleanup_error ps_error *err = NULL;
  int r = parse_args (g, argc, argv, &o, &err);
  if (r != 0)
    {
      cli_build_opts_free (&o);
      if (r > 0)
        return CLI_EXIT_OK;
      cli_print_error (err);
      return CLI_EXIT_USAGE;
    }
  cli_http *h = cli_http_new (g->host, &err);
  int code = CLI_EXIT_FAILED;
  if (h)
    code = cli_build_run (h, &o, &err);
  if (err)
    {
      ps_error_wrap (&err, "build");
      cli_print_error (err);
    }
  cli_http_free (h);
  cli_build_opts_free (&o);
  return code;
}
