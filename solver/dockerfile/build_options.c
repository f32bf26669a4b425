/* build_options.c — build options to a `buildah build` argv. */
#define _GNU_SOURCE
#include "solver/dockerfile/build_options.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/utsname.h>

#include "solver/buildah.h"
#include "solver/worker.h"
#include "solver/session_io.h"

void
build_options_init (struct build_options *o)
{
  memset (o, 0, sizeof *o);
  o->rm = true;
  o->layers = true;
}

void
build_options_free (struct build_options *o)
{
  free (o->context_dir);
  free (o->remote);
  ps_strv_free (&o->dockerfiles);
  ps_strv_free (&o->tags);
  ps_strv_free (&o->client_tags);
  ps_strv_free (&o->build_args);
  ps_strv_free (&o->labels);
  free (o->target);
  ps_strv_free (&o->platforms);
  ps_strv_free (&o->cache_from);
  ps_strv_free (&o->cache_to);
  ps_strv_free (&o->cache_from_refs);
  free (o->network);
  ps_strv_free (&o->add_hosts);
  ps_strv_free (&o->ulimits);
  free (o->cpuset_cpus);
  free (o->cpuset_mems);
  free (o->cgroup_parent);
  free (o->format);
  free (o->isolation);
  ps_strv_free (&o->secrets);
  ps_strv_free (&o->ssh);
  ps_strv_free (&o->build_contexts);
  free (o->authfile);
  ps_strv_free (&o->env);
  memset (o, 0, sizeof *o);
}

static void
push_each (ps_strv *argv, const char *flag, const ps_strv *values)
{
  for (size_t i = 0; i < values->n; i++)
    ps_strv_pushf (argv, "%s=%s", flag, values->v[i]);
}

static void
push_int (ps_strv *argv, const char *flag, int64_t v)
{
  if (v != 0)
    ps_strv_pushf (argv, "%s=%" PRId64, flag, v);
}

static const char *
pull_flag (enum build_pull_policy p)
{
  /* buildah 1.28: --pull=false pulls only missing images, true pulls when
     newer, always/never as named. */
  switch (p)
    {
    case BUILD_PULL_ALWAYS:
      return "--pull=always";
    case BUILD_PULL_NEVER:
      return "--pull=never";
    case BUILD_PULL_NEWER:
      return "--pull=true";
    case BUILD_PULL_MISSING:
    default:
      return "--pull=false";
    }
}

void
build_options_to_argv (const struct build_options *o, ps_strv *argv)
{
  buildah_argv_init (argv);
  ps_strv_push (argv, "build");
  buildah_argv_isolation (argv, o->isolation);
  ps_strv_pushf (argv, "--layers=%s", o->layers ? "true" : "false");
  if (o->nocache)
    ps_strv_push (argv, "--no-cache");
  ps_strv_pushf (argv, "--rm=%s", o->rm ? "true" : "false");
  /* A failed build's working container is invisible to Docker clients and
     they have no way to remove it, so it goes too unless rm=0 asked to
     keep containers. */
  if (o->forcerm || o->rm)
    ps_strv_push (argv, "--force-rm");
  if (o->squash)
    ps_strv_push (argv, "--squash");
  ps_strv_push (argv, pull_flag (o->pull));
  ps_strv_pushf (argv, "--format=%s", o->format ? o->format : "oci");
  for (size_t i = 0; i < o->dockerfiles.n; i++)
    ps_strv_pushf (argv, "--file=%s", o->dockerfiles.v[i]);
  push_each (argv, "--tag", &o->tags);
  push_each (argv, "--build-arg", &o->build_args);
  /* buildah 1.28 defines the TARGET* args from --platform but not the
     BUILD* ones, so FROM --platform=$BUILDPLATFORM (a cross-compiling
     stage) named nothing: define them as BuildKit does. */
  {
    struct utsname u;
    uname (&u);
    const char *arch = worker_go_arch (u.machine);
    const char *const build_args[][2] = { { "BUILDPLATFORM", NULL }, { "BUILDOS", "linux" }, { "BUILDARCH", arch } };
    for (size_t i = 0; i < sizeof build_args / sizeof build_args[0]; i++)
      {
        bool set = false;
        size_t kl = strlen (build_args[i][0]);
        for (size_t j = 0; j < o->build_args.n && !set; j++)
          set = strncmp (o->build_args.v[j], build_args[i][0], kl) == 0 && o->build_args.v[j][kl] == '=';
        if (set)
          continue;
        if (build_args[i][1])
          ps_strv_pushf (argv, "--build-arg=%s=%s", build_args[i][0], build_args[i][1]);
        else
          ps_strv_pushf (argv, "--build-arg=%s=linux/%s", build_args[i][0], arch);
      }
  }
  push_each (argv, "--label", &o->labels);
  if (o->target && *o->target)
    ps_strv_pushf (argv, "--target=%s", o->target);
  push_each (argv, "--platform", &o->platforms);
  push_each (argv, "--cache-from", &o->cache_from);
  push_each (argv, "--cache-to", &o->cache_to);
  /* RUN steps use the host's network namespace unless asked otherwise, as
     Podman's builds do: no per-step netavark bridge and iptables rules
     (slower, and fragile when other tools rewrite iptables). */
  ps_strv_pushf (argv, "--network=%s", o->network ? o->network : "host");
  push_each (argv, "--add-host", &o->add_hosts);
  push_each (argv, "--ulimit", &o->ulimits);
  if (o->shm_size > 0)
    ps_strv_pushf (argv, "--shm-size=%" PRId64, o->shm_size); /* tmpfs takes bytes; a "b" suffix breaks the mount */
  if (o->memory > 0)
    ps_strv_pushf (argv, "--memory=%" PRId64 "b", o->memory);
  if (o->memswap != 0)
    ps_strv_pushf (argv, o->memswap < 0 ? "--memory-swap=%" PRId64 : "--memory-swap=%" PRId64 "b",
                   o->memswap);
  push_int (argv, "--cpu-shares", o->cpu_shares);
  push_int (argv, "--cpu-period", o->cpu_period);
  push_int (argv, "--cpu-quota", o->cpu_quota);
  if (o->cpuset_cpus && *o->cpuset_cpus)
    ps_strv_pushf (argv, "--cpuset-cpus=%s", o->cpuset_cpus);
  if (o->cpuset_mems && *o->cpuset_mems)
    ps_strv_pushf (argv, "--cpuset-mems=%s", o->cpuset_mems);
  if (o->cgroup_parent && *o->cgroup_parent)
    ps_strv_pushf (argv, "--cgroup-parent=%s", o->cgroup_parent);
  push_each (argv, "--secret", &o->secrets);
  push_each (argv, "--ssh", &o->ssh);
  push_each (argv, "--build-context", &o->build_contexts);
  if (o->authfile)
    ps_strv_pushf (argv, "--authfile=%s", o->authfile);
  /* The context comes last; "--" keeps a context named "-x" a path. */
  ps_strv_push (argv, "--");
  ps_strv_push (argv, o->remote ? o->remote : o->context_dir);
}

void
dockerfile_build_clear (struct dockerfile_build *b)
{
  build_options_free (&b->opts);
  session_sources_free (b->session);
  free (b->dockerfile_name);
  free (b->client_session);
  free (b->definition_digest);
  free (b->state_dir);
  ps_strv_free (&b->entitlements);
  ps_strv_free (&b->warnings);
  free (b->list_name);
  free (b->list_id);
  ps_strv_free (&b->platform_notes);
  ps_strv_free (&b->platform_images);
  free (b->tar_key);
  free (b->tar_shared_key);
  if (b->context_tar)
    unlink (b->context_tar); /* never unpacked */
  free (b->context_tar);
  free (b->dockerfile_bytes);
  memset (b, 0, sizeof *b);
}

void
dockerfile_build_free (struct dockerfile_build *b)
{
  if (b == NULL)
    return;
  dockerfile_build_clear (b);
  free (b);
}
