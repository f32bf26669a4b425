/* ctrfilter.h — containerd's filter syntax, as BuildKit's DiskUsage,
 * Prune and ListWorkers requests carry it: each string is selectors
 * joined by ",", all of which must match; an object matches the list when
 * any string matches.  A selector is a field path ("id", "labels.\"a.b\"")
 * with nothing (the field is present), or "==" / "!=" / "~=" (a Go
 * regexp, unanchored) and a value, bare or double-quoted. */
#ifndef SCHEMA_CTRFILTER_H
#define SCHEMA_CTRFILTER_H

#include "common/ps.h"

typedef struct ctr_filter ctr_filter;

/* Parse `n` filter strings; empty ones are skipped.  *out is NULL when
   none is left (everything matches).  A syntax error or a bad regexp is a
   400 quoting the string. */
int schema_ctr_filter_parse (char *const *exprs, size_t n, ctr_filter **out, ps_error **err);

/* How a filter reads an object: true when the field at `path` (n
   components) is present, with *value its text ("" for a flag). */
typedef bool (*ctr_filter_field_fn) (void *obj, const char *const *path, size_t n, const char **value);

/* NULL matches everything. */
bool schema_ctr_filter_match (const ctr_filter *f, ctr_filter_field_fn field, void *obj);

void schema_ctr_filter_free (ctr_filter *f);

#endif
