/* multipart.h — a streaming multipart/form-data parser (RFC 7578 over
 * RFC 2046 §5.1) for request bodies from untrusted clients.
 *
 * Bytes are fed as they arrive, in chunks of any size; each part is
 * reported as begin (its headers parsed), data (in pieces, never a byte of
 * a delimiter) and end.  Memory is bounded by the part-header limit and the
 * delimiter length, whatever the body's size.  Delimiters are CRLF "--"
 * boundary; like Go's mime/multipart, a "--boundary" followed by anything
 * but "--", blanks or a line end is part data, not a delimiter.  The
 * preamble and epilogue are ignored.  Every error is a 400 or 413 naming
 * the problem. */
#ifndef PS_MULTIPART_H
#define PS_MULTIPART_H

#include "common/ps.h"

/* Part headers: a client sends Content-Disposition and maybe Content-Type,
   about 200 bytes; more than this is not a form. */
#define PS_MULTIPART_MAX_HEADER_BYTES (8 * 1024)

/* RFC 2046: a boundary is 1 to 70 characters. */
#define PS_MULTIPART_MAX_BOUNDARY 70

/* What a part says about itself.  Strings are valid during on_begin only. */
struct ps_multipart_part
{
  const char *name;         /* Content-Disposition name= (never NULL: a part without one is an error) */
  const char *filename;     /* filename=, or NULL */
  const char *content_type; /* the part's Content-Type, or NULL */
  size_t index;             /* 0 for the first part */
};

/* The callbacks; each returns 0, or -1 with *err to stop the parse (the
   error is what ps_multipart_feed then returns).  `data` is valid during
   the call only. */
struct ps_multipart_callbacks
{
  int (*on_begin) (void *ud, const struct ps_multipart_part *part, ps_error **err);
  int (*on_data) (void *ud, const char *data, size_t len, ps_error **err);
  int (*on_end) (void *ud, ps_error **err);
};

typedef struct ps_multipart ps_multipart;

/* The boundary parameter of a Content-Type value such as
   `multipart/form-data; boundary="abc"` (malloc'd), or NULL with a 400
   naming what is wrong (no boundary, an empty or over-long one). */
char *ps_multipart_boundary (const char *content_type, ps_error **err);

ps_multipart *ps_multipart_new (const char *boundary, const struct ps_multipart_callbacks *cb, void *ud);

/* Consume a chunk.  0, or -1 with *err (malformed body, a callback's
   error); after an error the parser accepts nothing more. */
int ps_multipart_feed (ps_multipart *mp, const void *data, size_t len, ps_error **err);

/* The body is complete: 0 when its closing delimiter was seen, else -1
   with a 400 saying where it ended. */
int ps_multipart_finish (ps_multipart *mp, ps_error **err);

void ps_multipart_free (ps_multipart *mp);

#endif
