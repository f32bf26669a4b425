/* session.c — the CLI's side of POST /session (see session.h).
 *
 * One connection, opened before the /solve request: the upgrade request
 * is written by hand (libcurl has no way to hand over an upgraded socket),
 * the head of the answer read up to its blank line, and whatever followed
 * it goes to grpc_serve as the first HTTP/2 bytes.  grpc_serve runs on a
 * thread of its own and starts one handler thread per call; the daemon
 * calls while the build runs.  cli_session_close shuts the socket down:
 * the I/O loop sees the end, every call still open fails, the handlers
 * return. */
#define _GNU_SOURCE
#include "client/session.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/cli.h"
#include "common/log.h"
#include "common/process.h"
#include "schema/health.pb-c.h"
#include "schema/secrets.pb-c.h"
#include "schema/sshforward.pb-c.h"
#include "session/grpc.h"

#define SECRETS_GET "/moby.buildkit.secrets.v1.Secrets/GetSecret"
#define SSH_CHECK_AGENT "/moby.sshforward.v1.SSH/CheckAgent"
#define SSH_FORWARD_AGENT "/moby.sshforward.v1.SSH/ForwardAgent"
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"
/* sshforward.KeySSHID: the metadata naming the agent of a ForwardAgent call. */
#define SSH_ID_METADATA "buildkit.ssh.id"
#define SSH_DEFAULT_ID "default"

/* BuildKit's secrets.MaxSecretSize. */
#define CLI_MAX_SECRET (500 * 1024)
/* Bytes read from an agent per BytesMessage. */
#define CLI_SSH_CHUNK (32 * 1024)
/* Longest answer head to POST /session, and how long we wait for it. */
#define CLI_SESSION_MAX_HEAD (64 * 1024)
#define CLI_SESSION_HEAD_MS 30000
/* How long a private ssh-agent may take to make its socket. */
#define CLI_AGENT_START_MS 10000
/* After the socket is shut down, how long the handlers get to return. */
#define CLI_SESSION_DRAIN_MS 2000

/* One --ssh id as served: the agent socket its calls connect to, and the
   private agent we started for key files (pid 0: none). */
struct ssh_source
{
  char *id;
  char *sock;
  pid_t agent;
  char *agent_dir;
};

struct cli_session
{
  char uuid[33];
  int fd;
  pthread_t th;
  bool running;
  struct cli_secret *secrets; /* copies */
  size_t n_secrets;
  struct ssh_source *ssh;
  size_t n_ssh;
  struct grpc_method methods[4];
  struct grpc_service_table table;
  ps_buf extra;       /* what followed the 101: the daemon's first HTTP/2 bytes */
};

/* ---- the flags ------------------------------------------------------------------- */

/* Split one CSV record (Go's encoding/csv, as buildx reads these flags): a
   field may be "quoted", with "" for a quote inside. */
static int
csv_fields (const char *flag, const char *spec, ps_strv *out, ps_error **err)
{
  ps_buf f = { 0 };
  const char *p = spec;
  for (;;)
    {
      ps_buf_reset (&f);
      if (*p == '"')
        {
          for (p++;; p++)
            {
              if (*p == '\0')
                {
                  ps_buf_free (&f);
                  return ps_error_set (err, 0, "--%s %s: unterminated quoted field", flag, spec);
                }
              if (*p == '"' && p[1] == '"')
                p++;
              else if (*p == '"')
                break;
              ps_buf_append (&f, p, 1);
            }
          p++;
          if (*p != ',' && *p != '\0')
            {
              ps_buf_free (&f);
              return ps_error_set (err, 0, "--%s %s: extraneous text after a quoted field", flag, spec);
            }
        }
      else
        {
          size_t n = strcspn (p, ",");
          ps_buf_append (&f, p, n);
          p += n;
        }
      ps_strv_push (out, f.data ? f.data : "");
      if (*p == '\0')
        break;
      p++;
    }
  ps_buf_free (&f);
  return 0;
}

void
cli_secret_free (struct cli_secret *s)
{
  free (s->id);
  free (s->file);
  free (s->env);
  memset (s, 0, sizeof *s);
}

static int
secret_parse (const char *spec, struct cli_secret *s, ps_error **err)
{
  ps_strv fields = { 0 };
  int ret = csv_fields ("secret", spec, &fields, err);
  const char *type = NULL;
  for (size_t i = 0; ret == 0 && i < fields.n; i++)
    {
      char *field = fields.v[i];
      char *eq = strchr (field, '=');
      if (eq == NULL)
        {
          ret = ps_error_set (err, 0, "--secret %s: invalid field '%s' must be a key=value pair", spec, field);
          break;
        }
      *eq = '\0';
      const char *value = eq + 1;
      for (char *k = field; *k; k++)
        if (*k >= 'A' && *k <= 'Z')
          *k = (char) (*k - 'A' + 'a');
      char **slot = NULL;
      if (strcmp (field, "type") == 0)
        {
          if (strcmp (value, "file") != 0 && strcmp (value, "env") != 0)
            ret = ps_error_set (err, 0, "--secret %s: unsupported secret type \"%s\" (file or env)", spec, value);
          type = value;
          continue;
        }
      else if (strcmp (field, "id") == 0)
        slot = &s->id;
      else if (strcmp (field, "src") == 0 || strcmp (field, "source") == 0)
        slot = &s->file;
      else if (strcmp (field, "env") == 0)
        slot = &s->env;
      else
        {
          ret = ps_error_set (err, 0, "--secret %s: unexpected key '%s' (id, src, source, env or type)", spec, field);
          break;
        }
      free (*slot);
      *slot = xstrdup (value);
    }
  if (ret == 0 && type && strcmp (type, "env") == 0 && s->env == NULL)
    {
      /* type=env,src=NAME: the source is a variable's name */
      s->env = s->file;
      s->file = NULL;
    }
  if (ret == 0 && (s->id == NULL || s->id[0] == '\0'))
    ret = ps_error_set (err, 0, "--secret %s: no id= (the id RUN --mount=type=secret,id=ID names)", spec);
  if (ret == 0 && s->file == NULL && s->env == NULL)
    {
      /* neither: the variable named like the id when it is set, else the file */
      if (getenv (s->id))
        s->env = xstrdup (s->id);
      else
        s->file = xstrdup (s->id);
    }
  if (ret == 0 && s->file && s->env)
    ret = ps_error_set (err, 0, "--secret %s: give either a file (src=) or an environment variable (env=), not both",
                        spec);
  if (ret == 0 && s->file)
    {
      struct stat st;
      if (stat (s->file, &st) < 0)
        ret = ps_error_set_errno (err, 0, errno, "--secret %s: secret file %s", spec, s->file);
      else if (S_ISDIR (st.st_mode))
        ret = ps_error_set (err, 0, "--secret %s: %s is a directory, not a file", spec, s->file);
      else if (access (s->file, R_OK) < 0)
        ret = ps_error_set_errno (err, 0, errno, "--secret %s: secret file %s", spec, s->file);
    }
  ps_strv_free (&fields);
  return ret;
}

int
cli_secret_parse (const char *spec, struct cli_secret *out, ps_error **err)
{
  memset (out, 0, sizeof *out);
  if (secret_parse (spec, out, err) < 0)
    {
      cli_secret_free (out);
      return -1;
    }
  return 0;
}

void
cli_ssh_free (struct cli_ssh *s)
{
  free (s->id);
  ps_strv_free (&s->paths);
  memset (s, 0, sizeof *s);
}

int
cli_ssh_parse (const char *spec, struct cli_ssh *out, ps_error **err)
{
  memset (out, 0, sizeof *out);
  const char *eq = strchr (spec, '=');
  out->id = eq ? xstrndup (spec, (size_t) (eq - spec)) : xstrdup (spec);
  if (out->id[0] == '\0')
    {
      cli_ssh_free (out);
      return ps_error_set (err, 0, "--ssh %s: expected ID[=SOCKET|KEY[,KEY...]]", spec);
    }
  if (eq)
    {
      ps_strv paths = { 0 };
      if (csv_fields ("ssh", eq + 1, &paths, err) < 0)
        {
          cli_ssh_free (out);
          return -1;
        }
      for (size_t i = 0; i < paths.n; i++)
        if (paths.v[i][0] != '\0')
          ps_strv_push (&out->paths, paths.v[i]);
      ps_strv_free (&paths);
    }
  if (out->paths.n == 0)
    {
      const char *sock = getenv ("SSH_AUTH_SOCK");
      if (sock == NULL || sock[0] == '\0')
        {
          cli_ssh_free (out);
          return ps_error_set (err, 0, "--ssh %s: invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set",
                               spec);
        }
      ps_strv_push (&out->paths, sock);
    }
  for (size_t i = 0; i < out->paths.n; i++)
    {
      struct stat st;
      if (stat (out->paths.v[i], &st) < 0)
        {
          ps_error_set_errno (err, 0, errno, "--ssh %s: %s", spec, out->paths.v[i]);
          cli_ssh_free (out);
          return -1;
        }
      if (S_ISSOCK (st.st_mode) && out->paths.n != 1)
        {
          ps_error_set (err, 0, "--ssh %s: %s is an agent socket: give it alone, or key files only", spec,
                        out->paths.v[i]);
          cli_ssh_free (out);
          return -1;
        }
      if (!S_ISSOCK (st.st_mode) && !S_ISREG (st.st_mode))
        {
          ps_error_set (err, 0, "--ssh %s: %s is neither an agent socket nor a key file", spec, out->paths.v[i]);
          cli_ssh_free (out);
          return -1;
        }
    }
  return 0;
}

/* ---- private ssh-agents for key files ---------------------------------------------- */

static void
stop_agent (struct ssh_source *src)
{
  if (src->agent > 0)
    {
      kill (src->agent, SIGTERM);
      while (waitpid (src->agent, NULL, 0) < 0 && errno == EINTR)
        ;
      src->agent = 0;
    }
  if (src->agent_dir)
    {
      cleanup_error ps_error *err = NULL;
      ps_rm_rf (src->agent_dir, &err);
      free (src->agent_dir);
      src->agent_dir = NULL;
    }
}

/* fork + exec argv with `env_sock` as SSH_AUTH_SOCK; stdin and stdout on
   /dev/null, stderr ours (ssh-add says what is wrong with a key).  The
   child dies with us (an agent must not outlive the CLI). */
static pid_t
spawn (char *const argv[], const char *env_sock, ps_error **err)
{
  pid_t pid = fork ();
  if (pid < 0)
    {
      ps_error_set_errno (err, 0, errno, "start %s", argv[0]);
      return -1;
    }
  if (pid == 0)
    {
      prctl (PR_SET_PDEATHSIG, SIGTERM);
      int null = open ("/dev/null", O_RDWR);
      if (null >= 0)
        {
          dup2 (null, STDIN_FILENO);
          dup2 (null, STDOUT_FILENO);
        }
      setenv ("SSH_AUTH_SOCK", env_sock, 1);
      setenv ("SSH_ASKPASS_REQUIRE", "never", 1); /* a passphrase would be asked where nobody answers */
      signal (SIGPIPE, SIG_DFL);
      execvp (argv[0], argv);
      fprintf (stderr, "podsolve: cannot run %s: %s\n", argv[0], strerror (errno));
      _exit (127);
    }
  return pid;
}

static int
start_agent (const struct cli_ssh *ssh, struct ssh_source *src, ps_error **err)
{
  const char *tmp = getenv ("TMPDIR");
  cleanup_free char *dir = xasprintf ("%s/podsolve-ssh-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp (dir) == NULL)
    return ps_error_set_errno (err, 0, errno, "--ssh %s: a directory for the agent", ssh->id);
  src->agent_dir = xstrdup (dir);
  src->sock = xasprintf ("%s/agent.sock", dir);
  if (strlen (src->sock) >= sizeof ((struct sockaddr_un *) 0)->sun_path)
    return ps_error_set (err, 0, "--ssh %s: agent socket path %s is too long (set TMPDIR shorter)", ssh->id, src->sock);
  /* -D: the agent stays in the foreground, its pid is the one we hold */
  char *agent_argv[] = { "ssh-agent", "-D", "-a", src->sock, NULL };
  src->agent = spawn (agent_argv, src->sock, err);
  if (src->agent < 0)
    {
      src->agent = 0;
      return -1;
    }
  int64_t deadline = ps_deadline_ns_after_ms (CLI_AGENT_START_MS);
  for (;;)
    {
      struct stat st;
      if (stat (src->sock, &st) == 0 && S_ISSOCK (st.st_mode))
        break;
      int status;
      if (waitpid (src->agent, &status, WNOHANG) == src->agent)
        {
          src->agent = 0;
          return ps_error_set (err, 0,
                               "--ssh %s: ssh-agent exited before it made its socket (is openssh-client installed?)",
                               ssh->id);
        }
      if (ps_deadline_passed (deadline) || cli_interrupted)
        return ps_error_set (err, 0, "--ssh %s: ssh-agent made no socket within %d s", ssh->id,
                             CLI_AGENT_START_MS / 1000);
      struct timespec ts = { .tv_nsec = 20 * 1000 * 1000 };
      nanosleep (&ts, NULL);
    }
  ps_strv argv = { 0 };
  ps_strv_push (&argv, "ssh-add");
  ps_strv_push (&argv, "-q");
  for (size_t i = 0; i < ssh->paths.n; i++)
    ps_strv_push (&argv, ssh->paths.v[i]);
  pid_t add = spawn (argv.v, src->sock, err);
  ps_strv_free (&argv);
  if (add < 0)
    return -1;
  int status = 0;
  while (waitpid (add, &status, 0) < 0 && errno == EINTR)
    ;
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    return ps_error_set (err, 0, "--ssh %s: ssh-add could not load the key(s) into an agent (exit %d); a key with a "
                                 "passphrase needs your own ssh-agent: pass its socket (--ssh %s=$SSH_AUTH_SOCK)",
                         ssh->id, WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status), ssh->id);
  return 0;
}

/* ---- the handlers (one thread per call) -------------------------------------------- */

static const struct cli_secret *
find_secret (const cli_session *s, const char *id)
{
  for (size_t i = 0; i < s->n_secrets; i++)
    if (strcmp (s->secrets[i].id, id) == 0)
      return &s->secrets[i];
  return NULL;
}

static const struct ssh_source *
find_ssh (const cli_session *s, const char *id)
{
  for (size_t i = 0; i < s->n_ssh; i++)
    if (strcmp (s->ssh[i].id, id) == 0)
      return &s->ssh[i];
  return NULL;
}

static void
get_secret (grpc_call *call, void *ud)
{
  cli_session *s = ud;
  cleanup_error ps_error *err = NULL;
  cleanup_free void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_request (call, &msg, &len) < 0)
    return;
  Moby__Buildkit__Secrets__V1__GetSecretRequest *req
      = moby__buildkit__secrets__v1__get_secret_request__unpack (NULL, len, msg);
  if (req == NULL)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "undecodable GetSecretRequest");
      return;
    }
  const struct cli_secret *sec = find_secret (s, req->id ? req->id : "");
  char *data = NULL;
  size_t data_len = 0;
  int status = GRPC_STATUS_OK;
  cleanup_free char *why = NULL;
  if (sec == NULL)
    {
      status = GRPC_STATUS_NOT_FOUND;
      why = xasprintf ("secret %s not found", req->id ? req->id : "");
    }
  else if (sec->env)
    {
      const char *v = getenv (sec->env);
      if (v == NULL)
        {
          status = GRPC_STATUS_NOT_FOUND;
          why = xasprintf ("secret %s not found: environment variable %s is not set", sec->id, sec->env);
        }
      else if (strlen (v) > CLI_MAX_SECRET)
        {
          status = GRPC_STATUS_INVALID_ARGUMENT;
          why = xasprintf ("invalid secret size %zu (at most %d bytes)", strlen (v), CLI_MAX_SECRET);
        }
      else
        {
          data = xstrdup (v);
          data_len = strlen (v);
        }
    }
  else if (ps_read_file (sec->file, CLI_MAX_SECRET, &data, &data_len, &err) < 0)
    {
      status = err->status == 413 ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_NOT_FOUND;
      why = xasprintf ("secret %s: %s", sec->id, err->msg);
    }
  moby__buildkit__secrets__v1__get_secret_request__free_unpacked (req, NULL);
  if (status != GRPC_STATUS_OK)
    {
      grpc_call_finish (call, status, "%s", why);
      return;
    }
  Moby__Buildkit__Secrets__V1__GetSecretResponse resp = MOBY__BUILDKIT__SECRETS__V1__GET_SECRET_RESPONSE__INIT;
  resp.data.data = (uint8_t *) data;
  resp.data.len = data_len;
  size_t n = moby__buildkit__secrets__v1__get_secret_response__get_packed_size (&resp);
  uint8_t *packed = xmalloc (n + 1);
  moby__buildkit__secrets__v1__get_secret_response__pack (&resp, packed);
  if (grpc_call_send (call, packed, n, &err) < 0)
    grpc_call_finish_error (call, err);
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
  /* no copy of the secret left in freed memory */
  explicit_bzero (packed, n);
  explicit_bzero (data, data_len);
  free (packed);
  free (data);
}

static void
check_agent (grpc_call *call, void *ud)
{
  cli_session *s = ud;
  cleanup_error ps_error *err = NULL;
  cleanup_free void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_request (call, &msg, &len) < 0)
    return;
  Moby__Sshforward__V1__CheckAgentRequest *req = moby__sshforward__v1__check_agent_request__unpack (NULL, len, msg);
  if (req == NULL)
    {
      grpc_call_finish (call, GRPC_STATUS_INVALID_ARGUMENT, "undecodable CheckAgentRequest");
      return;
    }
  const char *id = req->id && req->id[0] ? req->id : SSH_DEFAULT_ID;
  bool known = find_ssh (s, id) != NULL;
  cleanup_free char *copy = xstrdup (id);
  moby__sshforward__v1__check_agent_request__free_unpacked (req, NULL);
  if (!known)
    {
      grpc_call_finish (call, GRPC_STATUS_NOT_FOUND, "unset ssh forward key %s", copy);
      return;
    }
  Moby__Sshforward__V1__CheckAgentResponse resp = MOBY__SSHFORWARD__V1__CHECK_AGENT_RESPONSE__INIT;
  uint8_t packed[8];
  size_t n = moby__sshforward__v1__check_agent_response__pack (&resp, packed);
  if (grpc_call_send (call, packed, n, &err) < 0)
    grpc_call_finish_error (call, err);
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

/* One ForwardAgent call: the handler's thread carries the daemon's bytes to
   the agent, `up` the agent's answers to the daemon. */
struct forward
{
  grpc_call *call;
  int fd;
};

/* Agent -> stream, until the agent's EOF: that ends the call, OK. */
static void *
forward_up (void *arg)
{
  struct forward *f = arg;
  uint8_t *buf = xmalloc (CLI_SSH_CHUNK);
  uint8_t *packed = xmalloc (CLI_SSH_CHUNK + 16);
  for (;;)
    {
      ssize_t n = read (f->fd, buf, CLI_SSH_CHUNK);
      if (n < 0 && errno == EINTR)
        continue;
      if (n == 0)
        {
          grpc_call_finish (f->call, GRPC_STATUS_OK, NULL);
          break;
        }
      if (n < 0)
        {
          grpc_call_finish (f->call, GRPC_STATUS_UNAVAILABLE, "reading from the ssh agent: %s", strerror (errno));
          break;
        }
      Moby__Sshforward__V1__BytesMessage m = MOBY__SSHFORWARD__V1__BYTES_MESSAGE__INIT;
      m.data.data = buf;
      m.data.len = (size_t) n;
      size_t len = moby__sshforward__v1__bytes_message__pack (&m, packed);
      cleanup_error ps_error *err = NULL;
      if (grpc_call_send (f->call, packed, len, &err) < 0)
        {
          /* the call is over (cancelled, or the session closed) */
          grpc_call_finish (f->call, GRPC_STATUS_CANCELLED, "%s", err->msg);
          break;
        }
    }
  /* the other direction stops too (its recv sees the finished call) */
  shutdown (f->fd, SHUT_RD);
  free (buf);
  free (packed);
  return NULL;
}

static void
forward_agent (grpc_call *call, void *ud)
{
  cli_session *s = ud;
  const char *id = grpc_call_metadata (call, SSH_ID_METADATA);
  if (id == NULL || id[0] == '\0')
    id = SSH_DEFAULT_ID;
  const struct ssh_source *src = find_ssh (s, id);
  if (src == NULL)
    {
      grpc_call_finish (call, GRPC_STATUS_NOT_FOUND, "unset ssh forward key %s", id);
      return;
    }
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", src->sock);
  struct forward f = { .call = call, .fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) };
  if (f.fd < 0 || connect (f.fd, (struct sockaddr *) &sa, sizeof sa) < 0)
    {
      grpc_call_finish (call, GRPC_STATUS_UNAVAILABLE, "ssh %s: connect to the agent at %s: %s", id, src->sock,
                        strerror (errno));
      if (f.fd >= 0)
        close (f.fd);
      return;
    }
  pthread_t up;
  if (ps_thread_start (&up, forward_up, &f, 0, false) != 0)
    {
      grpc_call_finish (call, GRPC_STATUS_UNAVAILABLE, "ssh %s: cannot start a thread", id);
      close (f.fd);
      return;
    }
  /* Stream -> agent. */
  for (;;)
    {
      void *msg = NULL;
      size_t len = 0;
      cleanup_error ps_error *err = NULL;
      int r = grpc_call_recv (call, &msg, &len, -1, &err);
      if (r == 0)
        {
          /* the daemon's half-close (or the agent's EOF ended the call):
             the agent reads its EOF and may still answer */
          shutdown (f.fd, SHUT_WR);
          break;
        }
      if (r < 0)
        {
          shutdown (f.fd, SHUT_RDWR);
          break;
        }
      Moby__Sshforward__V1__BytesMessage *m = moby__sshforward__v1__bytes_message__unpack (NULL, len, msg);
      free (msg);
      int w = m == NULL ? -1 : ps_send_all (f.fd, m->data.data, m->data.len);
      if (m)
        moby__sshforward__v1__bytes_message__free_unpacked (m, NULL);
      if (w < 0)
        {
          grpc_call_finish (call, m == NULL ? GRPC_STATUS_INVALID_ARGUMENT : GRPC_STATUS_UNAVAILABLE,
                            m == NULL ? "undecodable BytesMessage" : "writing to the ssh agent failed");
          shutdown (f.fd, SHUT_RDWR);
          break;
        }
    }
  pthread_join (up, NULL);
  close (f.fd);
  grpc_call_finish (call, GRPC_STATUS_OK, NULL); /* no-op when finished already */
}

static void
health_check (grpc_call *call, void *ud)
{
  (void) ud;
  cleanup_error ps_error *err = NULL;
  cleanup_free void *msg = NULL;
  size_t len = 0;
  if (grpc_call_recv_request (call, &msg, &len) < 0)
    return;
  Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  uint8_t packed[16];
  size_t n = grpc__health__v1__health_check_response__pack (&resp, packed);
  if (grpc_call_send (call, packed, n, &err) < 0)
    grpc_call_finish_error (call, err);
  else
    grpc_call_finish (call, GRPC_STATUS_OK, NULL);
}

/* ---- the connection ------------------------------------------------------------------ */

/* Connect to the daemon at `address` (what cli_http_new accepted). */
static int
dial (const char *address, ps_error **err)
{
  if (ps_str_has_prefix (address, "https://"))
    return ps_error_set (err, 0, "--secret and --ssh need a unix:// or plain tcp:// daemon address, not %s (TLS)",
                         address);
  if (ps_str_has_prefix (address, "unix://") || address[0] == '/')
    {
      const char *path = address[0] == '/' ? address : address + strlen ("unix://");
      struct sockaddr_un sa = { .sun_family = AF_UNIX };
      if (strlen (path) >= sizeof sa.sun_path)
        return ps_error_set (err, 0, "socket path %s is too long", path);
      strcpy (sa.sun_path, path);
      int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0)
        return ps_error_set_errno (err, 0, errno, "socket");
      if (connect (fd, (struct sockaddr *) &sa, sizeof sa) < 0)
        {
          ps_error_set_errno (err, 0, errno, "cannot connect to podsolved at %s", address);
          close (fd);
          return -1;
        }
      return fd;
    }
  const char *hostport = address + (ps_str_has_prefix (address, "tcp://") ? strlen ("tcp://") : strlen ("http://"));
  size_t n = strcspn (hostport, "/");
  cleanup_free char *hp = xstrndup (hostport, n);
  char *host = hp, *port = NULL;
  if (host[0] == '[')
    {
      char *close_br = strchr (host, ']');
      if (close_br == NULL)
        return ps_error_set (err, 0, "host \"%s\": unbalanced [", address);
      *close_br = '\0';
      host++;
      if (close_br[1] == ':')
        port = close_br + 2;
    }
  else if ((port = strrchr (host, ':')) != NULL)
    *port++ = '\0';
  if (port == NULL || *port == '\0')
    port = "80"; /* as libcurl does for the same address */
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
  int gai = getaddrinfo (host, port, &hints, &res);
  if (gai != 0)
    return ps_error_set (err, 0, "cannot connect to podsolved at %s: %s", address, gai_strerror (gai));
  int fd = -1, last_errno = 0;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
    {
      fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd >= 0 && connect (fd, ai->ai_addr, ai->ai_addrlen) < 0)
        {
          last_errno = errno;
          close (fd);
          fd = -1;
        }
    }
  freeaddrinfo (res);
  if (fd < 0)
    return ps_error_set_errno (err, 0, last_errno, "cannot connect to podsolved at %s", address);
  return fd;
}

/* The daemon's "message" in a refusal's JSON body, else the status line. */
static char *
refusal_reason (const char *head, const char *body, size_t body_len)
{
  const char *eol = strstr (head, "\r\n");
  cleanup_free char *status = xstrndup (head, eol ? (size_t) (eol - head) : strlen (head));
  cleanup_free char *b = xstrndup (body, body_len);
  const char *m = strstr (b, "\"message\":\"");
  if (m)
    {
      m += strlen ("\"message\":\"");
      const char *end = m;
      while (*end && *end != '"')
        end += end[0] == '\\' && end[1] ? 2 : 1;
      return xasprintf ("%s: %.*s", status, (int) (end - m), m);
    }
  return xstrdup (status);
}

/* Write the upgrade request and read the answer's head; *extra gets what
   followed it (HTTP/2 already). */
static int
upgrade (int fd, const cli_session *s, const char *address, const char *context, ps_buf *extra, ps_error **err)
{
  char key[65];
  ps_sha256_hex (context, strlen (context), key);
  ps_buf req = { 0 };
  ps_buf_printf (&req,
                 "POST /session HTTP/1.1\r\nHost: localhost\r\nUser-Agent: podsolve/%s\r\nContent-Length: 0\r\n"
                 "Connection: Upgrade\r\nUpgrade: h2c\r\nX-Docker-Expose-Session-Uuid: %s\r\n"
                 "X-Docker-Expose-Session-Name: podsolve\r\nX-Docker-Expose-Session-Sharedkey: %s\r\n",
                 PODSOLVE_VERSION, s->uuid, key);
  for (size_t i = 0; i < s->table.n; i++)
    ps_buf_printf (&req, "X-Docker-Expose-Session-Grpc-Method: %s\r\n", s->table.methods[i].path);
  ps_buf_puts (&req, "\r\n");
  int w = ps_write_all (fd, req.data, req.len);
  ps_buf_free (&req);
  if (w < 0)
    return ps_error_set_errno (err, 0, errno, "POST /session to %s", address);

  ps_buf in = { 0 };
  int64_t deadline = ps_deadline_ns_after_ms (CLI_SESSION_HEAD_MS);
  char *end = NULL;
  while ((end = in.data ? strstr (in.data, "\r\n\r\n") : NULL) == NULL)
    {
      if (in.len > CLI_SESSION_MAX_HEAD)
        {
          ps_buf_free (&in);
          return ps_error_set (err, 0, "POST /session: an answer head over %d bytes", CLI_SESSION_MAX_HEAD);
        }
      if (cli_interrupted || ps_deadline_passed (deadline))
        {
          ps_buf_free (&in);
          return ps_error_set (err, 0, cli_interrupted ? "interrupted" : "POST /session: no answer within %d s",
                               CLI_SESSION_HEAD_MS / 1000);
        }
      struct pollfd p = { .fd = fd, .events = POLLIN };
      if (poll (&p, 1, CLI_TICK_MS) <= 0)
        continue;
      char buf[4096];
      ssize_t r = read (fd, buf, sizeof buf);
      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        {
          ps_buf_free (&in);
          return ps_error_set (err, 0, "POST /session: podsolved at %s closed the connection without an answer",
                               address);
        }
      ps_buf_append (&in, buf, (size_t) r);
    }
  size_t head_len = (size_t) (end - in.data) + 4;
  int ret = 0;
  if (strncmp (in.data, "HTTP/1.1 101 ", 13) != 0 && strncmp (in.data, "HTTP/1.1 101\r", 13) != 0)
    {
      cleanup_free char *why = refusal_reason (in.data, in.data + head_len, in.len - head_len);
      ret = ps_error_set (err, 0, "POST /session: podsolved refused the session: %s", why);
    }
  else
    ps_buf_append (extra, in.data + head_len, in.len - head_len);
  ps_buf_free (&in);
  return ret;
}

static void *
serve_main (void *arg)
{
  cli_session *s = arg;
  /* How it ends does not matter here: a session that broke fails the
     build's calls, and the daemon reports those on the /solve stream. */
  cleanup_error ps_error *err = NULL;
  grpc_serve (s->fd, s->extra.data, s->extra.len, s->uuid, &s->table, &err);
  return NULL;
}

cli_session *
cli_session_start (const char *address, const char *context, const struct cli_secret *secrets, size_t n_secrets,
                   const struct cli_ssh *ssh, size_t n_ssh, ps_error **err)
{
  /* The grpc layer's own log lines are for the daemon; the CLI reports
     what matters itself. */
  ps_log_set_level (PS_LOG_ERROR);
  cli_session *s = xcalloc (1, sizeof *s);
  s->fd = -1;
  ps_random_hex (s->uuid, 16);
  s->secrets = xcalloc (n_secrets ? n_secrets : 1, sizeof *s->secrets);
  for (size_t i = 0; i < n_secrets; i++)
    {
      for (size_t j = 0; j < i; j++)
        if (strcmp (secrets[j].id, secrets[i].id) == 0)
          {
            ps_error_set (err, 0, "--secret: id %s given twice", secrets[i].id);
            goto fail;
          }
      s->secrets[i].id = xstrdup (secrets[i].id);
      s->secrets[i].file = secrets[i].file ? xstrdup (secrets[i].file) : NULL;
      s->secrets[i].env = secrets[i].env ? xstrdup (secrets[i].env) : NULL;
      s->n_secrets++;
    }
  s->ssh = xcalloc (n_ssh ? n_ssh : 1, sizeof *s->ssh);
  for (size_t i = 0; i < n_ssh; i++)
    {
      for (size_t j = 0; j < i; j++)
        if (strcmp (ssh[j].id, ssh[i].id) == 0)
          {
            ps_error_set (err, 0, "--ssh: invalid duplicate id %s", ssh[i].id);
            goto fail;
          }
      struct ssh_source *src = &s->ssh[s->n_ssh++];
      src->id = xstrdup (ssh[i].id);
      struct stat st;
      if (stat (ssh[i].paths.v[0], &st) == 0 && S_ISSOCK (st.st_mode))
        src->sock = xstrdup (ssh[i].paths.v[0]);
      else if (start_agent (&ssh[i], src, err) < 0)
        goto fail;
    }

  size_t n = 0;
  if (n_secrets)
    s->methods[n++] = (struct grpc_method){ SECRETS_GET, get_secret, s };
  if (n_ssh)
    {
      s->methods[n++] = (struct grpc_method){ SSH_CHECK_AGENT, check_agent, s };
      s->methods[n++] = (struct grpc_method){ SSH_FORWARD_AGENT, forward_agent, s };
    }
  s->methods[n++] = (struct grpc_method){ HEALTH_CHECK, health_check, s };
  s->table = (struct grpc_service_table){ s->methods, n };

  s->fd = dial (address, err);
  if (s->fd < 0)
    goto fail;
  if (upgrade (s->fd, s, address, context, &s->extra, err) < 0)
    goto fail;
  if (ps_thread_start (&s->th, serve_main, s, 0, false) != 0)
    {
      ps_error_set (err, 0, "cannot start the session's thread");
      goto fail;
    }
  s->running = true;
  return s;

fail:
  cli_session_close (s);
  return NULL;
}

const char *
cli_session_uuid (const cli_session *s)
{
  return s->uuid;
}

void
cli_session_close (cli_session *s)
{
  if (s == NULL)
    return;
  if (s->fd >= 0)
    shutdown (s->fd, SHUT_RDWR);
  if (s->running)
    pthread_join (s->th, NULL);
  if (s->fd >= 0)
    close (s->fd);
  /* The handlers read the tables below: they end once their calls fail. */
  int64_t deadline = ps_deadline_ns_after_ms (CLI_SESSION_DRAIN_MS);
  bool drained;
  while (!(drained = grpc_server_handlers_running () == 0) && !ps_deadline_passed (deadline))
    {
      struct timespec ts = { .tv_nsec = 10 * 1000 * 1000 };
      nanosleep (&ts, NULL);
    }
  for (size_t i = 0; i < s->n_ssh; i++)
    stop_agent (&s->ssh[i]);
  if (!drained)
    return; /* a handler still holds them: leave them to the exit */
  for (size_t i = 0; i < s->n_secrets; i++)
    cli_secret_free (&s->secrets[i]);
  free (s->secrets);
  for (size_t i = 0; i < s->n_ssh; i++)
    {
      free (s->ssh[i].id);
      free (s->ssh[i].sock);
    }
  free (s->ssh);
  ps_buf_free (&s->extra);
  free (s);
}
