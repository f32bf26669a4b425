/* test_control_request.c — Control.Solve's protobuf SolveRequest as the
 * /solve request: exporters as buildx sends them, the deprecated fields,
 * sessions, definitions, and the INVALID_ARGUMENT cases. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "schema/control_request.h"
#include "tests/unit/unit.h"

typedef Moby__Buildkit__V1__Exporter__AttrsEntry attr_entry;

struct fixture
{
  Moby__Buildkit__V1__SolveRequest rq;
  Moby__Buildkit__V1__SolveRequest__FrontendAttrsEntry fa[8], *fap[8];
  Moby__Buildkit__V1__Exporter ex[4], *exp[4];
  attr_entry ea[8], *eap[8];
  size_t n_ea;
};

static void
fixture_init (struct fixture *f)
{
  memset (f, 0, sizeof *f);
  moby__buildkit__v1__solve_request__init (&f->rq);
  f->rq.frontendattrs = f->fap;
  f->rq.exporters = f->exp;
}

static void
add_attr (struct fixture *f, const char *k, const char *v)
{
  size_t i = f->rq.n_frontendattrs++;
  moby__buildkit__v1__solve_request__frontend_attrs_entry__init (&f->fa[i]);
  f->fa[i].key = (char *) k;
  f->fa[i].value = (char *) v;
  f->fap[i] = &f->fa[i];
}

/* An exporter with attrs k1, v1, k2, v2, ..., NULL. */
static void
add_exporter (struct fixture *f, const char *type, ...)
{
  size_t i = f->rq.n_exporters++;
  moby__buildkit__v1__exporter__init (&f->ex[i]);
  f->ex[i].type = (char *) type;
  f->ex[i].attrs = &f->eap[f->n_ea];
  va_list ap;
  va_start (ap, type);
  for (const char *k; (k = va_arg (ap, const char *));)
    {
      attr_entry *a = &f->ea[f->n_ea];
      moby__buildkit__v1__exporter__attrs_entry__init (a);
      a->key = (char *) k;
      a->value = va_arg (ap, char *);
      f->eap[f->n_ea++] = a;
      f->ex[i].n_attrs++;
    }
  va_end (ap);
  f->exp[i] = &f->ex[i];
}

static int
convert (struct fixture *f, struct solve_request *out, ps_error **err)
{
  uint8_t *def = NULL;
  size_t def_len = 0;
  bool internal = false;
  int r = schema_control_solve_request (&f->rq, out, &def, &def_len, &internal, err);
  free (def);
  return r;
}

START_TEST (moby_exporter_is_the_image_exporter)
{
  struct fixture f;
  fixture_init (&f);
  f.rq.ref = (char *) "abc123";
  f.rq.frontend = (char *) "dockerfile.v0";
  f.rq.session = (char *) "sess1";
  add_attr (&f, "filename", "Dockerfile");
  add_attr (&f, "frontend.caps", "moby.buildkit.frontend.inputs");
  add_attr (&f, "attest:provenance", "mode=min");
  add_attr (&f, "build-arg:A", "1");
  add_exporter (&f, "moby", "name", "docker.io/library/x:latest,y:1", "prefer-image-digest", "true", NULL);
  struct solve_request r;
  ps_error *err = NULL;
  ck_assert_int_eq (convert (&f, &r, &err), 0);
  ck_assert_str_eq (r.ref, "abc123");
  ck_assert_str_eq (r.frontend, "dockerfile.v0");
  ck_assert_str_eq (r.session, "sess1");
  ck_assert_ptr_null (r.source_session);
  ck_assert_uint_eq (r.frontend_attrs.n, 2);
  ck_assert_str_eq (solve_attrs_get (&r.frontend_attrs, "build-arg:A"), "1");
  ck_assert_ptr_null (solve_attrs_get (&r.frontend_attrs, "frontend.caps"));
  ck_assert_uint_eq (r.n_exporters, 1);
  ck_assert_str_eq (r.exporters[0].type, "image");
  ck_assert_str_eq (solve_attrs_get (&r.exporters[0].attrs, "name"), "docker.io/library/x:latest,y:1");
  ck_assert_ptr_null (solve_attrs_get (&r.exporters[0].attrs, "prefer-image-digest"));
  ck_assert (!r.exporters[0].to_client);
  schema_solve_request_free (&r);
}
END_TEST

START_TEST (local_and_tar_go_to_the_session)
{
  struct fixture f;
  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  f.rq.session = (char *) "sess1";
  add_attr (&f, "local-sessionid:context", "shared2");
  add_attr (&f, "local-sessionid:dockerfile", "shared2");
  add_exporter (&f, "local", NULL);
  add_exporter (&f, "tar", NULL);
  add_exporter (&f, "image", "name", "x", "push", "true", "unpack", "false", NULL);
  struct solve_request r;
  ps_error *err = NULL;
  ck_assert_int_eq (convert (&f, &r, &err), 0);
  ck_assert_uint_eq (r.n_exporters, 3);
  ck_assert (r.exporters[0].to_client);
  ck_assert (r.exporters[1].to_client);
  ck_assert (!r.exporters[2].to_client);
  ck_assert_str_eq (solve_attrs_get (&r.exporters[2].attrs, "push"), "true");
  ck_assert_str_eq (r.source_session, "shared2");
  ck_assert_uint_eq (r.frontend_attrs.n, 0);
  schema_solve_request_free (&r);

  /* without a session there is nowhere to send them */
  f.rq.session = (char *) "";
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "Session is empty"));
  ps_error_free (err);
}
END_TEST

START_TEST (deprecated_exporter_when_13_is_empty)
{
  struct fixture f;
  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  f.rq.exporterdeprecated = (char *) "image";
  Moby__Buildkit__V1__SolveRequest__ExporterAttrsDeprecatedEntry a, *ap = &a;
  moby__buildkit__v1__solve_request__exporter_attrs_deprecated_entry__init (&a);
  a.key = (char *) "name";
  a.value = (char *) "old:1";
  f.rq.n_exporterattrsdeprecated = 1;
  f.rq.exporterattrsdeprecated = &ap;
  struct solve_request r;
  ps_error *err = NULL;
  ck_assert_int_eq (convert (&f, &r, &err), 0);
  ck_assert_uint_eq (r.n_exporters, 1);
  ck_assert_str_eq (r.exporters[0].type, "image");
  ck_assert_str_eq (solve_attrs_get (&r.exporters[0].attrs, "name"), "old:1");
  schema_solve_request_free (&r);

  /* field 13 wins */
  add_exporter (&f, "cacheonly", NULL);
  ck_assert_int_eq (convert (&f, &r, &err), 0);
  ck_assert_uint_eq (r.n_exporters, 1);
  ck_assert_str_eq (r.exporters[0].type, "cacheonly");
  schema_solve_request_free (&r);
}
END_TEST

START_TEST (cache_and_entitlements)
{
  struct fixture f;
  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  Moby__Buildkit__V1__CacheOptions c = MOBY__BUILDKIT__V1__CACHE_OPTIONS__INIT;
  Moby__Buildkit__V1__CacheOptionsEntry e = MOBY__BUILDKIT__V1__CACHE_OPTIONS_ENTRY__INIT, *ep = &e;
  Moby__Buildkit__V1__CacheOptionsEntry__AttrsEntry ca = MOBY__BUILDKIT__V1__CACHE_OPTIONS_ENTRY__ATTRS_ENTRY__INIT,
                                                    *cap = &ca;
  e.type = (char *) "registry";
  ca.key = (char *) "ref";
  ca.value = (char *) "reg.example/cache:x";
  e.n_attrs = 1;
  e.attrs = &cap;
  c.n_imports = 1;
  c.imports = &ep;
  char *old[] = { (char *) "reg.example/old" };
  c.n_importrefsdeprecated = 1;
  c.importrefsdeprecated = old;
  f.rq.cache = &c;
  char *ents[] = { (char *) "network.host" };
  f.rq.n_entitlements = 1;
  f.rq.entitlements = ents;
  struct solve_request r;
  ps_error *err = NULL;
  ck_assert_int_eq (convert (&f, &r, &err), 0);
  ck_assert_uint_eq (r.n_cache_imports, 2);
  ck_assert_str_eq (r.cache_imports[0].type, "registry");
  ck_assert_str_eq (solve_attrs_get (&r.cache_imports[1].attrs, "ref"), "reg.example/old");
  ck_assert_uint_eq (r.entitlements.n, 1);
  schema_solve_request_free (&r);

  ents[0] = (char *) "device";
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ps_error_free (err);
}
END_TEST

START_TEST (definition_is_packed_and_gateway_detected)
{
  struct fixture f;
  fixture_init (&f);
  ck_assert (schema_control_solve_is_gateway (&f.rq));
  Pb__Definition d = PB__DEFINITION__INIT;
  ProtobufCBinaryData op = { .len = 3, .data = (uint8_t *) "\x0a\x01x" };
  d.n_def = 1;
  d.def = &op;
  f.rq.definition = &d;
  ck_assert (!schema_control_solve_is_gateway (&f.rq));
  struct solve_request r;
  ps_error *err = NULL;
  uint8_t *def = NULL;
  size_t len = 0;
  bool internal = true;
  ck_assert_int_eq (schema_control_solve_request (&f.rq, &r, &def, &len, &internal, &err), 0);
  ck_assert (!internal);
  ck_assert (r.has_definition);
  ck_assert_ptr_null (r.frontend);
  Pb__Definition *back = pb__definition__unpack (NULL, len, def);
  ck_assert_ptr_nonnull (back);
  ck_assert_uint_eq (back->n_def, 1);
  ck_assert_mem_eq (back->def[0].data, "\x0a\x01x", 3);
  pb__definition__free_unpacked (back, NULL);
  free (def);
  schema_solve_request_free (&r);

  /* a frontend and a definition at once */
  f.rq.frontend = (char *) "dockerfile.v0";
  ck_assert_int_eq (schema_control_solve_request (&f.rq, &r, &def, &len, &internal, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_null (def);
  ps_error_free (err);
}
END_TEST

START_TEST (gateway_mode_keeps_exporters_not_attrs)
{
  struct fixture f;
  fixture_init (&f);
  f.rq.ref = (char *) "build1";
  add_attr (&f, "filename", "Dockerfile");
  add_attr (&f, "anything:the-client-frontend-reads", "x");
  add_exporter (&f, "moby", "name", "gw:1", NULL);
  ck_assert (schema_control_solve_is_gateway (&f.rq));
  struct solve_request r;
  ps_error *err = NULL;
  ck_assert_int_eq (convert (&f, &r, &err), 0);
  ck_assert_ptr_null (r.frontend);
  ck_assert (!r.has_definition);
  ck_assert_uint_eq (r.frontend_attrs.n, 0);
  ck_assert_uint_eq (r.n_exporters, 1);
  ck_assert_str_eq (r.exporters[0].type, "image");
  schema_solve_request_free (&r);

  f.rq.ref = (char *) "";
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_int_eq (err->status, 400);
  ck_assert_ptr_nonnull (strstr (err->msg, "Ref"));
  ps_error_free (err);
}
END_TEST

START_TEST (bad_requests_are_400s)
{
  struct fixture f;
  ps_error *err = NULL;
  struct solve_request r;
  const char *bad_frontends[] = { "gateway.v0", "\xff" };
  for (size_t i = 0; i < 2; i++)
    {
      fixture_init (&f);
      f.rq.frontend = (char *) bad_frontends[i];
      ck_assert_int_eq (convert (&f, &r, &err), -1);
      ck_assert_int_eq (err->status, 400);
      ps_error_free (err);
      err = NULL;
    }
  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  f.rq.ref = (char *) "../x";
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "ref"));
  ps_error_free (err);
  err = NULL;

  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  f.rq.enablesessionexporter = true;
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_int_eq (err->status, 501);
  ps_error_free (err);
  err = NULL;

  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  add_exporter (&f, "bogus", NULL);
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "bogus"));
  ps_error_free (err);
  err = NULL;

  fixture_init (&f);
  f.rq.frontend = (char *) "dockerfile.v0";
  add_exporter (&f, "moby", "weird", "1", NULL);
  ck_assert_int_eq (convert (&f, &r, &err), -1);
  ck_assert_ptr_nonnull (strstr (err->msg, "weird"));
  ps_error_free (err);
}
END_TEST

START_TEST (response_round_trips)
{
  char *resp[] = { (char *) "containerimage.digest", (char *) "sha256:aa", (char *) "image.name", (char *) "x",
                   NULL };
  size_t len = 0;
  uint8_t *b = schema_control_solve_response (resp, &len);
  Moby__Buildkit__V1__SolveResponse *r = moby__buildkit__v1__solve_response__unpack (NULL, len, b);
  ck_assert_ptr_nonnull (r);
  ck_assert_uint_eq (r->n_exporterresponse, 2);
  ck_assert_str_eq (r->exporterresponse[1]->key, "image.name");
  ck_assert_str_eq (r->exporterresponse[1]->value, "x");
  moby__buildkit__v1__solve_response__free_unpacked (r, NULL);
  free (b);
  b = schema_control_solve_response (NULL, &len);
  ck_assert_uint_eq (len, 0);
  free (b);
}
END_TEST

PS_TEST_SUITE (control_request)
{
  Suite *s = suite_create ("control_request");
  TCase *tc = tcase_create ("convert");
  tcase_add_test (tc, moby_exporter_is_the_image_exporter);
  tcase_add_test (tc, local_and_tar_go_to_the_session);
  tcase_add_test (tc, deprecated_exporter_when_13_is_empty);
  tcase_add_test (tc, cache_and_entitlements);
  tcase_add_test (tc, definition_is_packed_and_gateway_detected);
  tcase_add_test (tc, gateway_mode_keeps_exporters_not_attrs);
  tcase_add_test (tc, bad_requests_are_400s);
  tcase_add_test (tc, response_round_trips);
  suite_add_tcase (s, tc);
  return s;
}
