/* stream.c — following a job's event log over HTTP (chunked). */
#define _GNU_SOURCE
#include "handlers/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/limits.h"
#include "common/log.h"

struct job_stream
{
  solver_job *job;
  struct job_stream_opts o;
  size_t next_event;
  ps_buf pending;
  size_t sent;
  bool ended;
  int client_fd;
};

/* Called by MHD on the connection's own thread, so blocking here only
   holds this connection, and the client fd is valid. */
static ssize_t
job_stream_read (void *cls, uint64_t pos, char *buf, size_t max)
{
  struct job_stream *st = cls;
  for (;;)
    {
      if (st->sent < st->pending.len)
        {
          /* One line per chunk, sent as it happens (old clients expect one
             record per read). */
          const char *start = st->pending.data + st->sent;
          const char *nl = memchr (start, '\n', st->pending.len - st->sent);
          size_t n = nl ? (size_t) (nl - start) + 1 : st->pending.len - st->sent;
          if (n > max)
            n = max;
          memcpy (buf, start, n);
          st->sent += n;
          return (ssize_t) n;
        }
      ps_buf_reset (&st->pending);
      st->sent = 0;
      if (st->ended)
        return HTTP_STREAM_END;

      bool done = false;
      const struct solver_event *ev = solver_job_next (st->job, st->next_event, PS_STREAM_POLL_MS, &done);
      if (ev != NULL)
        {
          st->next_event++;
          event_encoder_encode (st->o.encoder, ev, &st->pending);
          if (ev->kind == SOLVER_EV_RESULT || ev->kind == SOLVER_EV_ERROR)
            st->ended = true;
          continue;
        }
      if (done)
        return HTTP_STREAM_END;
      if (st->client_fd >= 0)
        {
          char c;
          ssize_t r = recv (st->client_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
          if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return HTTP_STREAM_ERROR;
        }
    }
}

static void
job_stream_done (void *cls)
{
  struct job_stream *st = cls;
  /* Released before the final event went out: the client left early. */
  if (!st->ended && st->o.cancel_on_disconnect)
    solver_job_cancel (st->job, "the client disconnected");
  solver_job_unref (st->job);
  event_encoder_free (st->o.encoder);
  ps_buf_free (&st->pending);
  free (st);
}

int
handler_stream_job (struct ps_request *req, solver_job *job, const struct job_stream_opts *o)
{
  struct job_stream *st = xcalloc (1, sizeof *st);
  st->job = job;
  st->o = *o;
  st->client_fd = http_request_fd (req);
  return http_respond_stream (req, 200, o->content_type, o->headers, job_stream_read, st, job_stream_done);
}

void
handler_log_job_start (const struct ps_request *req, solver_job *job, const char *what, const char *client,
                       const char *const *tags)
{
  const char *ua = client ? client : req ? http_request_header ((struct ps_request *) req, "User-Agent") : NULL;
  ps_buf t = { 0 };
  for (size_t i = 0; tags && tags[i]; i++)
    ps_buf_printf (&t, "%s%s", i ? ", " : " -> ", tags[i]);
  ps_info ("job %s: started: %s (client %s)%s", solver_job_id (job), what, ua && *ua ? ua : "unknown",
           t.data ? t.data : "");
  ps_buf_free (&t);
}
