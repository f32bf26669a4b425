/* fuzz_grpc_reassembly — gRPC messages (flag | length | payload) from a
 * session peer, cut into DATA chunks at arbitrary points, through the
 * reassembly the connection uses.  Checked against a one-pass reading of
 * the same bytes: the same messages in the same order, the same refusal
 * (compressed flag, length over 4 MiB) at the same prefix, and every byte
 * accounted for (delivered, pending or dropped), since stream flow-control
 * credit is returned from exactly those counts.
 *
 * Input: n (1 byte), then n chunk sizes (1 byte each, cycled; 0 = an empty
 * chunk), then the stream. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session/grpc.h"
#include "session/session_limits.h"

static void
check (bool ok, const char *what)
{
  if (!ok)
    {
      fprintf (stderr, "reassembly mismatch: %s\n", what);
      abort ();
    }
}

/* The reference: one pass over the whole stream. */
struct expect
{
  size_t n;
  size_t *off; /* each message's payload offset in the stream */
  size_t *len;
  int code;          /* 0, or the status of the refused prefix */
  size_t bad_prefix; /* its offset */
  size_t pending;    /* bytes of an incomplete message at the end */
};

static void
reference (const uint8_t *b, size_t n, struct expect *e)
{
  size_t i = 0;
  while (i < n)
    {
      if (n - i < 5)
        {
          e->pending = n - i;
          return;
        }
      uint32_t len = (uint32_t) b[i + 1] << 24 | (uint32_t) b[i + 2] << 16 | (uint32_t) b[i + 3] << 8 | b[i + 4];
      if (b[i] != 0 || len > PS_GRPC_MAX_MESSAGE)
        {
          e->code = b[i] != 0 ? GRPC_STATUS_INTERNAL : GRPC_STATUS_RESOURCE_EXHAUSTED;
          e->bad_prefix = i;
          return;
        }
      if (n - i - 5 < len)
        {
          e->pending = n - i;
          return;
        }
      e->off[e->n] = i + 5;
      e->len[e->n] = len;
      e->n++;
      i += 5 + len;
    }
}

/* What the reassembly delivered so far. */
struct seen
{
  const struct expect *e;
  const uint8_t *stream;
  size_t n;
  size_t wire; /* prefix + payload bytes of the delivered messages */
};

/* The buffer is only valid during the call: compare at once. */
static void
on_message (void *ud, const void *msg, size_t len)
{
  struct seen *s = ud;
  check (s->n < s->e->n, "more messages than in the stream");
  check (len == s->e->len[s->n], "message length");
  check (len == 0 || memcmp (msg, s->stream + s->e->off[s->n], len) == 0, "message bytes");
  s->n++;
  s->wire += 5 + len;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  size_t ncuts = data[0];
  if (size < 1 + ncuts || ncuts == 0)
    return 0;
  const uint8_t *cuts = data + 1;
  const uint8_t *stream = data + 1 + ncuts;
  size_t n = size - 1 - ncuts;

  bool any = false;
  for (size_t i = 0; i < ncuts; i++)
    any |= cuts[i] != 0;
  if (!any)
    return 0;

  struct expect e = { 0 };
  e.off = malloc ((n / 5 + 1) * sizeof *e.off);
  e.len = malloc ((n / 5 + 1) * sizeof *e.len);
  reference (stream, n, &e);
  struct seen s = { .e = &e, .stream = stream };

  struct grpc_reassembly r = { 0 };
  size_t fed = 0, k = 0, dropped = 0;
  int code = GRPC_STATUS_OK;
  while (fed < n)
    {
      size_t chunk = cuts[k++ % ncuts];
      if (chunk > n - fed)
        chunk = n - fed;
      ps_error *err = NULL;
      code = grpc_reassemble (&r, stream + fed, chunk, on_message, &s, &dropped, &err);
      fed += chunk;
      if (code != GRPC_STATUS_OK)
        {
          check (err != NULL && err->status == grpc_status_http (code), "an error with the status");
          ps_error_free (err);
          break;
        }
      check (err == NULL, "no error on success");
    }

  check (s.n == e.n, "number of messages");
  check (code == e.code, "refusal status");
  if (code != GRPC_STATUS_OK)
    {
      /* Credit: the refused message's bytes up to the end of its chunk. */
      check (dropped == fed - e.bad_prefix, "dropped bytes");
      check (grpc_reassembly_pending (&r) == 0, "emptied after a refusal");
      check (s.wire + dropped == fed, "every byte accounted for");
    }
  else
    {
      check (grpc_reassembly_pending (&r) == e.pending, "pending bytes");
      check (s.wire + e.pending == n, "every byte accounted for");
    }
  grpc_reassembly_free (&r);
  free (e.off);
  free (e.len);
  return 0;
}
