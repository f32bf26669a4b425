/* test_bridge_request.c — LLBBridge requests as the gateway takes them
 * (schema/bridge_request.c): Solve's conversion and its refusals, the ref
 * and image config a Return names, Warn's text.  The messages are built
 * as protobuf-c decodes them: an absent bytes field has no data. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "schema/bridge_request.h"
#include "tests/unit/unit.h"

#define F(x) MOBY__BUILDKIT__V1__FRONTEND__##x

START_TEST (solve_refusals_leave_nothing)
{
  static const struct bridge_solve zero;
  Moby__Buildkit__V1__Frontend__SolveRequest rq = F (SOLVE_REQUEST__INIT);
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendInputsEntry in = F (SOLVE_REQUEST__FRONTEND_INPUTS_ENTRY__INIT);
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendInputsEntry *inv[] = { &in };
  Moby__Buildkit__V1__Sourcepolicy__Policy pol;
  moby__buildkit__v1__sourcepolicy__policy__init (&pol);
  Moby__Buildkit__V1__Sourcepolicy__Policy *polv[] = { &pol };
  in.key = (char *) "context";
  struct bridge_solve s;
  ps_error *err = NULL;

  rq.frontend = (char *) "dockerfile.v0"; /* inputs are gateway.v0's only */
  rq.n_frontendinputs = 1;
  rq.frontendinputs = inv;
  ck_assert_int_eq (schema_bridge_solve (&rq, &s, &err), -1);
  ck_assert_int_eq (err->status, 501);
  ck_assert_mem_eq (&s, &zero, sizeof s);
  ps_error_free (err), err = NULL;

  rq.frontend = (char *) "gateway.v0";
  rq.final = true;
  ck_assert_int_eq (schema_bridge_solve (&rq, &s, &err), -1);
  ck_assert_int_eq (err->status, 501);
  ck_assert (strstr (err->msg, "Final") != NULL);
  ck_assert_mem_eq (&s, &zero, sizeof s);
  ps_error_free (err), err = NULL;

  rq.final = false;
  rq.n_sourcepolicies = 1;
  rq.sourcepolicies = polv;
  ck_assert_int_eq (schema_bridge_solve (&rq, &s, &err), -1);
  ck_assert_int_eq (err->status, 501);
  ck_assert_mem_eq (&s, &zero, sizeof s);
  ps_error_free (err);
}
END_TEST

START_TEST (solve_copies_the_request_and_keeps_op_bytes)
{
  /* ops as a client marshalled them (not canonical protobuf): kept */
  ProtobufCBinaryData ops[] = { { 4, (uint8_t *) "\x0a\x00\x0a\x00" }, { 1, (uint8_t *) "\x00" } };
  Pb__Definition def = PB__DEFINITION__INIT;
  def.n_def = 2;
  def.def = ops;
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendOptEntry o1 = F (SOLVE_REQUEST__FRONTEND_OPT_ENTRY__INIT);
  o1.key = (char *) "source";
  o1.value = (char *) "docker/dockerfile:1";
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendOptEntry *ov[] = { &o1 };
  Moby__Buildkit__V1__Frontend__CacheOptionsEntry__AttrsEntry a1 = F (CACHE_OPTIONS_ENTRY__ATTRS_ENTRY__INIT);
  a1.key = (char *) "ref";
  a1.value = (char *) "registry.example/cache";
  Moby__Buildkit__V1__Frontend__CacheOptionsEntry__AttrsEntry *av[] = { &a1 };
  Moby__Buildkit__V1__Frontend__CacheOptionsEntry c1 = F (CACHE_OPTIONS_ENTRY__INIT);
  c1.type = (char *) "registry";
  c1.n_attrs = 1;
  c1.attrs = av;
  Moby__Buildkit__V1__Frontend__CacheOptionsEntry *cv[] = { &c1 };
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendInputsEntry i1 = F (SOLVE_REQUEST__FRONTEND_INPUTS_ENTRY__INIT);
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendInputsEntry i2 = F (SOLVE_REQUEST__FRONTEND_INPUTS_ENTRY__INIT);
  i1.key = (char *) "context";
  i1.value = &def;
  i2.key = (char *) "dockerfile"; /* no value: an empty definition */
  Moby__Buildkit__V1__Frontend__SolveRequest__FrontendInputsEntry *iv[] = { &i1, &i2 };
  Moby__Buildkit__V1__Frontend__SolveRequest rq = F (SOLVE_REQUEST__INIT);
  rq.frontend = (char *) "gateway.v0";
  rq.n_frontendopt = 1;
  rq.frontendopt = ov;
  rq.n_cacheimports = 1;
  rq.cacheimports = cv;
  rq.n_frontendinputs = 2;
  rq.frontendinputs = iv;
  rq.definition = &def;

  struct bridge_solve s;
  ps_error *err = NULL;
  ck_assert_int_eq (schema_bridge_solve (&rq, &s, &err), 0);
  ck_assert_str_eq (s.frontend, "gateway.v0");
  ck_assert_uint_eq (s.frontend_opt.n, 1);
  ck_assert_str_eq (solve_attrs_get (&s.frontend_opt, "source"), "docker/dockerfile:1");
  ck_assert_uint_eq (s.n_cache_imports, 1);
  ck_assert_str_eq (s.cache_imports[0].type, "registry");
  ck_assert_str_eq (solve_attrs_get (&s.cache_imports[0].attrs, "ref"), "registry.example/cache");
  ck_assert_uint_eq (s.n_inputs, 2);
  ck_assert_str_eq (s.inputs[0].name, "context");
  ck_assert_uint_eq (s.inputs[1].len, 0);
  ck_assert_ptr_nonnull (s.definition);
  Pb__Definition *back = pb__definition__unpack (NULL, s.definition_len, s.definition);
  ck_assert_ptr_nonnull (back);
  ck_assert_uint_eq (back->n_def, 2);
  ck_assert_mem_eq (back->def[0].data, "\x0a\x00\x0a\x00", 4);
  ck_assert_uint_eq (back->def[1].len, 1);
  pb__definition__free_unpacked (back, NULL);
  ck_assert_uint_eq (s.inputs[0].len, s.definition_len);
  ck_assert_mem_eq (s.inputs[0].definition, s.definition, s.definition_len);
  schema_bridge_solve_free (&s);

  /* a definition without ops is no definition */
  def.n_def = 0;
  rq.n_frontendinputs = 0;
  ck_assert_int_eq (schema_bridge_solve (&rq, &s, &err), 0);
  ck_assert_ptr_null (s.definition);
  schema_bridge_solve_free (&s);
}
END_TEST

START_TEST (result_names_one_ref)
{
  const char *id = "x";
  ps_error *err = NULL;
  ck_assert_int_eq (schema_bridge_result_ref (NULL, &id, &err), 0);
  ck_assert_ptr_null (id);

  Moby__Buildkit__V1__Frontend__Result res = F (RESULT__INIT);
  res.result_case = F (RESULT__RESULT_REF_DEPRECATED);
  res.refdeprecated = (char *) "old";
  ck_assert_int_eq (schema_bridge_result_ref (&res, &id, &err), 0);
  ck_assert_str_eq (id, "old");

  Moby__Buildkit__V1__Frontend__Ref ref = F (REF__INIT);
  ref.id = (char *) "r1";
  Moby__Buildkit__V1__Frontend__RefMap__RefsEntry e1 = F (REF_MAP__REFS_ENTRY__INIT), e2 = F (REF_MAP__REFS_ENTRY__INIT);
  e1.key = (char *) "linux/amd64";
  e1.value = &ref;
  e2.key = (char *) "linux/arm64"; /* no value */
  Moby__Buildkit__V1__Frontend__RefMap__RefsEntry *ev[] = { &e1, &e2 };
  Moby__Buildkit__V1__Frontend__RefMap map = F (REF_MAP__INIT);
  map.n_refs = 1;
  map.refs = ev;
  res.result_case = F (RESULT__RESULT_REFS);
  res.refs = &map;
  ck_assert_int_eq (schema_bridge_result_ref (&res, &id, &err), 0);
  ck_assert_str_eq (id, "r1");
  map.refs = ev + 1;
  ck_assert_int_eq (schema_bridge_result_ref (&res, &id, &err), 0);
  ck_assert_ptr_null (id);
  map.refs = ev;
  map.n_refs = 2;
  ck_assert_int_eq (schema_bridge_result_ref (&res, &id, &err), -1);
  ck_assert_int_eq (err->status, 501);
  ck_assert (strstr (err->msg, "2 refs") != NULL);
  ps_error_free (err);
}
END_TEST

/* Found by fuzz_bridge_request: an empty bytes field (a Warn without a
   short message, an empty config in a Return's metadata) has data NULL,
   and xstrndup passed that to strndup (declared nonnull: undefined
   behaviour, reported by UBSan under scripts/test-sanitizers). */
START_TEST (empty_byte_fields_are_empty_text)
{
  Moby__Buildkit__V1__Frontend__WarnRequest w = F (WARN_REQUEST__INIT);
  char *short_msg = NULL;
  char **details = NULL;
  schema_bridge_warn_text (&w, &short_msg, &details);
  ck_assert_str_eq (short_msg, "");
  ck_assert_ptr_null (details[0]);
  free (short_msg);
  ps_strv_free_raw (details);

  ProtobufCBinaryData dv[] = { { 0, NULL }, { 5, (uint8_t *) "a\0bcd" } };
  w.short_.len = 3;
  w.short_.data = (uint8_t *) "Hey";
  w.n_detail = 2;
  w.detail = dv;
  schema_bridge_warn_text (&w, &short_msg, &details);
  ck_assert_str_eq (short_msg, "Hey");
  ck_assert_str_eq (details[0], "");
  ck_assert_str_eq (details[1], "a"); /* cut at the NUL */
  ck_assert_ptr_null (details[2]);
  free (short_msg);
  ps_strv_free_raw (details);

  Moby__Buildkit__V1__Frontend__Result__MetadataEntry m1 = F (RESULT__METADATA_ENTRY__INIT);
  Moby__Buildkit__V1__Frontend__Result__MetadataEntry m2 = F (RESULT__METADATA_ENTRY__INIT);
  m1.key = (char *) "containerimage.buildinfo";
  m1.value.len = 2;
  m1.value.data = (uint8_t *) "{}";
  m2.key = (char *) "containerimage.config/linux/amd64"; /* empty value */
  Moby__Buildkit__V1__Frontend__Result__MetadataEntry *mv[] = { &m1, &m2 };
  Moby__Buildkit__V1__Frontend__Result res = F (RESULT__INIT);
  ck_assert_ptr_null (schema_bridge_result_image_config (&res));
  res.n_metadata = 2;
  res.metadata = mv;
  char *config = schema_bridge_result_image_config (&res);
  ck_assert_str_eq (config, "");
  free (config);
  m2.value.len = 4;
  m2.value.data = (uint8_t *) "{\"a\"";
  config = schema_bridge_result_image_config (&res);
  ck_assert_str_eq (config, "{\"a\"");
  free (config);

  char *s = xstrndup (NULL, 0);
  ck_assert_str_eq (s, "");
  free (s);
}
END_TEST

PS_TEST_SUITE (bridge_request)
{
  Suite *s = suite_create ("bridge_request");
  TCase *tc = tcase_create ("convert");
  tcase_add_test (tc, solve_refusals_leave_nothing);
  tcase_add_test (tc, solve_copies_the_request_and_keeps_op_bytes);
  tcase_add_test (tc, result_names_one_ref);
  tcase_add_test (tc, empty_byte_fields_are_empty_text);
  suite_add_tcase (s, tc);
  return s;
}
