/* test_ctrfilter.c — containerd filter expressions as buildx and buildctl
 * send them (buildx prune: "id~=abc,type==regular"; an empty string when
 * no filter was given). */
#define _GNU_SOURCE
#include <string.h>

#include "schema/ctrfilter.h"
#include "tests/unit/unit.h"

struct obj
{
  const char *id, *type;
  bool mutable_;
};

static bool
field (void *p, const char *const *path, size_t n, const char **value)
{
  const struct obj *o = p;
  if (n == 1 && strcmp (path[0], "id") == 0)
    return (*value = o->id), true;
  if (n == 1 && strcmp (path[0], "type") == 0)
    return (*value = o->type), true;
  if (n == 1 && strcmp (path[0], "mutable") == 0)
    return (*value = ""), o->mutable_;
  if (n == 2 && strcmp (path[0], "labels") == 0 && strcmp (path[1], "a.b") == 0)
    return (*value = "x y"), true;
  return false;
}

static bool
matches (const char *expr, const struct obj *o)
{
  char *v[] = { (char *) expr };
  ctr_filter *f = NULL;
  ps_error *err = NULL;
  ck_assert_msg (schema_ctr_filter_parse (v, 1, &f, &err) == 0, "%s: %s", expr, err ? err->msg : "");
  bool m = schema_ctr_filter_match (f, field, (void *) o);
  schema_ctr_filter_free (f);
  return m;
}

START_TEST (selectors_and_operators)
{
  struct obj o = { .id = "abc123", .type = "llb.result", .mutable_ = false };
  ck_assert (matches ("", &o));
  ck_assert (matches ("id==abc123", &o));
  ck_assert (!matches ("id==abc", &o));
  ck_assert (matches ("id~=abc", &o));
  ck_assert (matches ("id~=^abc[0-9]+$", &o));
  ck_assert (!matches ("id~=^bc", &o));
  ck_assert (matches ("id~=abc,type==llb.result", &o));
  ck_assert (!matches ("id~=abc,type==exec.cachemount", &o));
  ck_assert (matches ("type!=exec.cachemount", &o));
  ck_assert (matches ("nosuch!=x", &o));
  ck_assert (!matches ("nosuch==", &o));
  ck_assert (!matches ("mutable", &o));
  ck_assert (matches (" id == \"abc123\" ", &o));
  ck_assert (matches ("labels.\"a.b\"==\"x y\"", &o));
  o.mutable_ = true;
  ck_assert (matches ("mutable", &o));
}
END_TEST

START_TEST (any_string_may_match)
{
  struct obj o = { .id = "abc123", .type = "llb.result" };
  char *v[] = { (char *) "id==zzz", (char *) "type==llb.result" };
  ctr_filter *f = NULL;
  ps_error *err = NULL;
  ck_assert_int_eq (schema_ctr_filter_parse (v, 2, &f, &err), 0);
  ck_assert (schema_ctr_filter_match (f, field, &o));
  schema_ctr_filter_free (f);
  /* only empty strings: no filter at all */
  char *e[] = { (char *) "", (char *) "  " };
  ck_assert_int_eq (schema_ctr_filter_parse (e, 2, &f, &err), 0);
  ck_assert_ptr_null (f);
}
END_TEST

START_TEST (syntax_errors_are_400)
{
  const char *bad[] = { "==x", "id=x", "id==\"open", "id~=(", "id==a b", ",", "id,", "a..b" };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++)
    {
      char *v[] = { (char *) bad[i] };
      ctr_filter *f = NULL;
      ps_error *err = NULL;
      ck_assert_msg (schema_ctr_filter_parse (v, 1, &f, &err) < 0, "accepted %s", bad[i]);
      ck_assert_int_eq (err->status, 400);
      ck_assert (strstr (err->msg, bad[i]) != NULL);
      ps_error_free (err);
    }
}
END_TEST

PS_TEST_SUITE (ctrfilter)
{
  Suite *s = suite_create ("ctrfilter");
  TCase *tc = tcase_create ("parse");
  tcase_add_test (tc, selectors_and_operators);
  tcase_add_test (tc, any_string_may_match);
  tcase_add_test (tc, syntax_errors_are_400);
  suite_add_tcase (s, tc);
  return s;
}
