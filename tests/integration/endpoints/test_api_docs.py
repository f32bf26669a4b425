"""The API documentation stays true.

* api-docs/openapi.yaml is a structurally valid OpenAPI 3.0 document.  Debian 12
  has no python3-openapi-spec-validator, so the structure is checked here: an
  OpenAPI 3.0 subset meta-schema (written for this test) plus the rules a
  meta-schema cannot express (path templates vs parameters, $ref targets,
  discriminator mappings, Schema Object keywords, unique operationIds,
  examples that validate against their own schemas).
* The document matches the server's wire definitions: accepted SolveRequest
  fields, exporter/cache types and attrs, entitlements, frontendAttrs, the
  SolveStatus keys the encoder writes, job keys and states, the /solve routes
  (read from schema/solve_request.c, schema/solve_status.c, handlers/solve.c,
  solver/solve.c, solver/job.c and server/router.c).
* Every example marked `<!-- example: NAME expect: KIND ... -->` in
  api-docs/guide.md runs with bash against the session's real podsolved (cwd =
  one temp dir shared by the examples, PODSOLVE_SOCK = its socket,
  PODSOLVE_SRC = this source tree), and its
  stdout is validated with jsonschema against the component schemas of the
  OpenAPI document (converted to JSON Schema draft 4: `$ref`s rewritten,
  `nullable` turned into a "null" type).

Marker grammar (shell-like tokens after "example:"):
  NAME expect: ndjson end=result|error   every line a StreamLine; the last one a
                                         result/error, every other one a status
  NAME expect: json schema=COMPONENT [field.KEY=VALUE ...]
  NAME expect: error status=NNN           (curl -i) status line NNN, ErrorResponse body
  NAME expect: text match=REGEX           stdout matches REGEX (re.M)
  needs=A,B    examples to run first (once per session, same directory)
  skip="why"   not run (only `bash -n` and the request JSON are checked)

Needs Debian's python3-yaml and python3-jsonschema; the examples use curl, tar
and jq.
"""

import base64
import binascii
import io
import json
import os
import re
import shlex
import signal
import subprocess
import tarfile
from datetime import datetime

import jsonschema
import pytest
import yaml

import podsolve_testlib as lib

REPO = lib.REPO_ROOT
DOCS = REPO / "api-docs"
OPENAPI_PATH = DOCS / "openapi.yaml"
GUIDE_PATH = DOCS / "guide.md"

EXAMPLE_TIMEOUT = lib.scaled(300)


# --------------------------------------------------------------------------
# The OpenAPI document and its schemas as JSON Schema


def load_spec():
    with open(OPENAPI_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


SPEC = load_spec()
SCHEMAS = SPEC["components"]["schemas"]

# Keywords of an OpenAPI 3.0 Schema Object with no JSON Schema draft 4 meaning.
OAS_ONLY_KEYWORDS = {"nullable", "discriminator", "example", "externalDocs", "xml", "readOnly", "writeOnly",
                     "deprecated"}


def to_json_schema(node):
    """One OpenAPI 3.0 Schema Object -> JSON Schema draft 4."""
    if isinstance(node, list):
        return [to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in OAS_ONLY_KEYWORDS or key.startswith("x-"):
            continue
        if key == "$ref":
            m = re.fullmatch(r"#/components/schemas/([A-Za-z0-9._-]+)", value)
            assert m, f"schema $ref outside components/schemas: {value}"
            out[key] = "#/definitions/" + m.group(1)
        elif key == "properties":
            out[key] = {name: to_json_schema(s) for name, s in value.items()}
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = list(out["enum"]) + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


DEFINITIONS = {name: to_json_schema(s) for name, s in SCHEMAS.items()}

FORMATS = jsonschema.FormatChecker(formats=())
TIMESTAMP_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,9})?Z$")


@FORMATS.checks("date-time", raises=ValueError)
def _check_date_time(value):
    if not isinstance(value, str):
        return True
    m = TIMESTAMP_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not RFC 3339 UTC with at most 9 fraction digits")
    datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")   # a real calendar date and time
    return True


@FORMATS.checks("byte", raises=(binascii.Error, ValueError))
def _check_byte(value):
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


def validator_for(schema):
    """A draft 4 validator for a converted schema that may $ref any component."""
    root = dict(schema)
    root["definitions"] = DEFINITIONS
    return jsonschema.Draft4Validator(root, format_checker=FORMATS)


def component_validator(name):
    assert name in SCHEMAS, f"no component schema {name!r} in {OPENAPI_PATH}"
    return validator_for({"$ref": f"#/definitions/{name}"})


def assert_valid(name, instance, where):
    errors = sorted(component_validator(name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{where}: not a valid {name}:"]
        for e in errors[:5]:
            best = jsonschema.exceptions.best_match([e])
            path = "/".join(str(p) for p in best.absolute_path) or "(top)"
            lines.append(f"  at {path}: {best.message}")
        lines.append(f"  instance: {json.dumps(instance)[:1500]}")
        pytest.fail("\n".join(lines), pytrace=False)


# --------------------------------------------------------------------------
# Structural validity of the OpenAPI document

EXT = {"pattern": "^x-"}


def _obj(required=(), props=None, extra=False):
    s = {"type": "object", "properties": props or {}, "patternProperties": {"^x-": {}}}
    if required:
        s["required"] = list(required)
    if not extra:
        s["additionalProperties"] = False
    return s


# A subset of OpenAPI 3.0.3, written for this test from the specification's
# text: the objects this document uses, with their fixed fields.  Schema
# Objects are left open here and checked by check_schema_object below.
_REF = _obj(["$ref"], {"$ref": {"type": "string"}})
_MEDIA = _obj(props={"schema": {"type": "object"}, "example": {}, "examples": {"type": "object"},
                     "encoding": {"type": "object", "additionalProperties": _obj(props={
                         "contentType": {"type": "string"}, "headers": {"type": "object"},
                         "style": {"type": "string"}, "explode": {"type": "boolean"},
                         "allowReserved": {"type": "boolean"}})}})
_HEADER = _obj(props={"description": {"type": "string"}, "required": {"type": "boolean"},
                      "deprecated": {"type": "boolean"}, "schema": {"type": "object"}, "example": {}})
_PARAM = {"oneOf": [_REF, _obj(["name", "in"], {
    "name": {"type": "string"}, "in": {"enum": ["query", "header", "path", "cookie"]},
    "description": {"type": "string"}, "required": {"type": "boolean"}, "deprecated": {"type": "boolean"},
    "allowEmptyValue": {"type": "boolean"}, "style": {"type": "string"}, "explode": {"type": "boolean"},
    "schema": {"type": "object"}, "content": {"type": "object"}, "example": {}, "examples": {"type": "object"}})]}
_RESPONSE = {"oneOf": [_REF, _obj(["description"], {
    "description": {"type": "string"},
    "headers": {"type": "object", "additionalProperties": {"oneOf": [_REF, _HEADER]}},
    "content": {"type": "object", "additionalProperties": _MEDIA}, "links": {"type": "object"}})]}
_OPERATION = _obj(["responses"], {
    "tags": {"type": "array", "items": {"type": "string"}}, "summary": {"type": "string"},
    "description": {"type": "string"}, "externalDocs": {"type": "object"},
    "operationId": {"type": "string"}, "parameters": {"type": "array", "items": _PARAM},
    "requestBody": {"oneOf": [_REF, _obj(["content"], {
        "description": {"type": "string"}, "required": {"type": "boolean"},
        "content": {"type": "object", "minProperties": 1, "additionalProperties": _MEDIA}})]},
    "responses": {"type": "object", "minProperties": 1,
                  "patternProperties": {"^([1-5][0-9]{2}|[1-5]XX|default)$": _RESPONSE, "^x-": {}},
                  "additionalProperties": False},
    "callbacks": {"type": "object"}, "deprecated": {"type": "boolean"}, "security": {"type": "array"},
    "servers": {"type": "array"}})
_METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
_PATH_ITEM = _obj(props=dict({"summary": {"type": "string"}, "description": {"type": "string"},
                              "servers": {"type": "array"}, "parameters": {"type": "array", "items": _PARAM}},
                             **{m: _OPERATION for m in _METHODS}))
_SERVER = _obj(["url"], {"url": {"type": "string"}, "description": {"type": "string"},
                         "variables": {"type": "object", "additionalProperties": _obj(["default"], {
                             "default": {"type": "string"}, "enum": {"type": "array", "items": {"type": "string"}},
                             "description": {"type": "string"}})}})
OPENAPI_30_SUBSET = _obj(["openapi", "info", "paths"], {
    "openapi": {"type": "string", "pattern": r"^3\.0\.\d+$"},
    "info": _obj(["title", "version"], {"title": {"type": "string"}, "version": {"type": "string"},
                                        "description": {"type": "string"}, "termsOfService": {"type": "string"},
                                        "contact": {"type": "object"},
                                        "license": _obj(["name"], {"name": {"type": "string"},
                                                                   "url": {"type": "string"}})}),
    "servers": {"type": "array", "items": _SERVER},
    "paths": {"type": "object", "patternProperties": {"^/": _PATH_ITEM, "^x-": {}}, "additionalProperties": False},
    "components": _obj(props={k: {"type": "object"} for k in (
        "schemas", "responses", "parameters", "examples", "requestBodies", "headers", "securitySchemes",
        "links", "callbacks")}),
    "security": {"type": "array"},
    "tags": {"type": "array", "items": _obj(["name"], {"name": {"type": "string"},
                                                      "description": {"type": "string"},
                                                      "externalDocs": {"type": "object"}})},
    "externalDocs": {"type": "object"}})

# The fixed fields of an OpenAPI 3.0 Schema Object.
SCHEMA_KEYWORDS = {"title", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
                   "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxProperties",
                   "minProperties", "required", "enum", "type", "allOf", "oneOf", "anyOf", "not", "items",
                   "properties", "additionalProperties", "description", "format", "default", "nullable",
                   "discriminator", "readOnly", "writeOnly", "xml", "externalDocs", "example", "deprecated"}
SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object"}


def resolve_pointer(doc, ref):
    assert ref.startswith("#/"), f"only local $refs are used: {ref}"
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"$ref {ref} does not resolve"
        node = node[part]
    return node


def deref(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        node = resolve_pointer(doc, node["$ref"])
    return node


def iter_refs(node, path="#"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from iter_refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_refs(v, f"{path}/{i}")


def check_schema_object(doc, schema, where, problems):
    """OpenAPI 3.0 Schema Object rules a JSON meta-schema does not catch."""
    if not isinstance(schema, dict):
        problems.append(f"{where}: a schema must be an object")
        return
    if "$ref" in schema:
        if set(schema) != {"$ref"}:
            problems.append(f"{where}: siblings of $ref are ignored in OpenAPI 3.0: {sorted(set(schema) - {'$ref'})}")
        return
    unknown = {k for k in schema if k not in SCHEMA_KEYWORDS and not k.startswith("x-")}
    if unknown:
        problems.append(f"{where}: not OpenAPI 3.0 Schema Object keywords: {sorted(unknown)}")
    t = schema.get("type")
    if t is not None and t not in SCHEMA_TYPES:
        problems.append(f"{where}: type must be one of {sorted(SCHEMA_TYPES)} (no lists in 3.0), got {t!r}")
    if t == "array" and "items" not in schema:
        problems.append(f"{where}: an array schema needs items")
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        problems.append(f"{where}: nullable must be a boolean")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        problems.append(f"{where}: enum must be a non-empty list")
    if "required" in schema:
        req = schema["required"]
        if not isinstance(req, list) or not req or len(set(req)) != len(req):
            problems.append(f"{where}: required must be a non-empty list of unique names")
        elif "properties" in schema and schema.get("additionalProperties") is False:
            missing = [r for r in req if r not in schema["properties"]]
            if missing:
                problems.append(f"{where}: required names no property: {missing}")
    if "discriminator" in schema:
        d = schema["discriminator"]
        alts = schema.get("oneOf") or schema.get("anyOf")
        if not alts:
            problems.append(f"{where}: discriminator without oneOf/anyOf")
        prop = d.get("propertyName")
        for value, target in (d.get("mapping") or {}).items():
            if not any(a.get("$ref") == target for a in alts or []):
                problems.append(f"{where}: discriminator mapping {value} -> {target} is not one of the alternatives")
            sub = deref(doc, {"$ref": target})
            enum = (sub.get("properties", {}).get(prop) or {}).get("enum", [])
            if value not in enum:
                problems.append(f"{where}: mapping {value!r} but {target} does not allow {prop}={value!r}")
    for k in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(schema.get(k, [])):
            check_schema_object(doc, sub, f"{where}/{k}/{i}", problems)
    for k in ("items", "not"):
        if k in schema:
            check_schema_object(doc, schema[k], f"{where}/{k}", problems)
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema_object(doc, schema["additionalProperties"], f"{where}/additionalProperties", problems)
    elif "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        problems.append(f"{where}: additionalProperties must be a boolean or a schema")
    for name, sub in schema.get("properties", {}).items():
        check_schema_object(doc, sub, f"{where}/properties/{name}", problems)
    if "example" in schema:
        errors = list(validator_for(to_json_schema(schema)).iter_errors(schema["example"]))
        if errors:
            problems.append(f"{where}: example does not validate: {errors[0].message}")


def iter_media_schemas(doc):
    """(where, media type object) for every request body and response."""
    def responses(op, where):
        for code, resp in op.get("responses", {}).items():
            resp = deref(doc, resp)
            for mt, media in (resp.get("content") or {}).items():
                yield f"{where}/responses/{code}/{mt}", media
    for path, item in doc["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if not op:
                continue
            where = f"paths/{path}/{method}"
            body = deref(doc, op.get("requestBody", {}))
            for mt, media in (body.get("content") or {}).items():
                yield f"{where}/requestBody/{mt}", media
            yield from responses(op, where)
    for name, resp in doc.get("components", {}).get("responses", {}).items():
        for mt, media in (resp.get("content") or {}).items():
            yield f"components/responses/{name}/{mt}", media


def test_openapi_is_structurally_valid():
    problems = []
    for e in jsonschema.Draft4Validator(OPENAPI_30_SUBSET).iter_errors(SPEC):
        problems.append(f"structure at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}")

    # Every $ref resolves.
    for where, ref in iter_refs(SPEC):
        try:
            resolve_pointer(SPEC, ref)
        except AssertionError as e:
            problems.append(f"{where}: {e}")

    # Response codes are strings (YAML would make an unquoted 200 an int).
    for path, item in SPEC["paths"].items():
        for method in _METHODS:
            op = item.get(method)
            if not op:
                continue
            for code in op.get("responses", {}):
                if not isinstance(code, str):
                    problems.append(f"{path} {method}: response code {code!r} must be a quoted string")

    # Path templates and path parameters match; operationIds are unique; tags are declared.
    op_ids = []
    declared_tags = {t["name"] for t in SPEC.get("tags", [])}
    for path, item in SPEC["paths"].items():
        templ = set(re.findall(r"\{([^}/]+)\}", path))
        common = [deref(SPEC, p) for p in item.get("parameters", [])]
        for method in _METHODS:
            op = item.get(method)
            if not op:
                continue
            params = common + [deref(SPEC, p) for p in op.get("parameters", [])]
            in_path = {p["name"] for p in params if p.get("in") == "path"}
            if in_path != templ:
                problems.append(f"{method.upper()} {path}: path parameters {sorted(in_path)} != template {sorted(templ)}")
            for p in params:
                if p.get("in") == "path" and p.get("required") is not True:
                    problems.append(f"{method.upper()} {path}: path parameter {p['name']} must be required: true")
                if ("schema" in p) == ("content" in p):
                    problems.append(f"{method.upper()} {path}: parameter {p['name']} needs exactly one of schema/content")
            seen = [(p.get("name"), p.get("in")) for p in params]
            if len(seen) != len(set(seen)):
                problems.append(f"{method.upper()} {path}: duplicate parameters")
            op_ids.append(op.get("operationId"))
            for t in op.get("tags", []):
                if t not in declared_tags:
                    problems.append(f"{method.upper()} {path}: tag {t!r} is not declared")
    dup = {i for i in op_ids if op_ids.count(i) > 1}
    if None in op_ids or dup:
        problems.append(f"operationIds must be present and unique: missing={None in op_ids} duplicated={sorted(dup, key=str)}")

    # Server URL variables are declared.
    for s in SPEC.get("servers", []):
        used = set(re.findall(r"\{([^}]+)\}", s["url"]))
        if used != set((s.get("variables") or {}).keys()):
            problems.append(f"server {s['url']}: variables {sorted(used)} not declared exactly")

    # Component names and Schema Objects.
    for kind, items in SPEC.get("components", {}).items():
        for name in items:
            if not re.fullmatch(r"[a-zA-Z0-9._-]+", name):
                problems.append(f"components/{kind}/{name}: invalid component name")
    for name, schema in SCHEMAS.items():
        check_schema_object(SPEC, schema, f"components/schemas/{name}", problems)
        try:
            jsonschema.Draft4Validator.check_schema(DEFINITIONS[name])
        except jsonschema.exceptions.SchemaError as e:
            problems.append(f"components/schemas/{name}: not a valid JSON Schema once converted: {e.message}")
    for where, media in iter_media_schemas(SPEC):
        if "schema" not in media:
            problems.append(f"{where}: media type without a schema")
            continue
        check_schema_object(SPEC, media["schema"], f"{where}/schema", problems)
        schema = to_json_schema(media["schema"])
        examples = [("example", media["example"])] if "example" in media else []
        examples += [(f"examples/{k}", deref(SPEC, v).get("value")) for k, v in (media.get("examples") or {}).items()]
        for label, value in examples:
            for e in list(validator_for(schema).iter_errors(value))[:1]:
                problems.append(f"{where}/{label}: does not validate: {e.message[:300]}")
        for part in (media.get("encoding") or {}):
            props = deref(SPEC, media["schema"]).get("properties", {})
            if part not in props:
                problems.append(f"{where}: encoding for {part!r}, which is not a property of the schema")

    # Every component is used somewhere (a stale component is a doc bug).
    used = {ref.rsplit("/", 1)[1] for _, ref in iter_refs(SPEC)}
    used |= {t.rsplit("/", 1)[1] for s in SCHEMAS.values() for t in ((s.get("discriminator") or {}).get("mapping") or {}).values()}
    for kind, items in SPEC["components"].items():
        for name in items:
            if name not in used:
                problems.append(f"components/{kind}/{name} is never referenced")
    assert not problems, "api-docs/openapi.yaml:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------
# The document matches the server's wire definitions


def c_source(rel):
    return (REPO / rel).read_text(encoding="utf-8")


def c_string_list(src, name):
    """static const char *const NAME[] = { "a", "b", NULL };"""
    m = re.search(r"\b" + re.escape(name) + r"\[\]\s*=\s*\{(.*?)\};", src, re.S)
    assert m, f"cannot find the C array {name}"
    return re.findall(r'"([^"]*)"', m.group(1))


def c_function(src, name):
    """The text of a C function definition (from its name at line start to the next one)."""
    m = re.search(r"^" + re.escape(name) + r" \(.*?^}", src, re.S | re.M)
    assert m, f"cannot find the C function {name}"
    return m.group(0)


def json_keys_written(body):
    return set(re.findall(r'(?:cJSON_Add\w+ToObject|add_time)\s*\(\s*\w+\s*,\s*"([^"]+)"', body))


def schema_enum(name, prop="type"):
    s = SCHEMAS[name]["properties"][prop]
    return set(s["enum"])


def attr_names(name):
    return set(SCHEMAS[name]["properties"]["attrs"].get("properties", {}))


def test_request_schema_matches_parser():
    src = c_source("schema/solve_request.c")
    assert set(SCHEMAS["SolveRequest"]["properties"]) == set(c_string_list(src, "top_keys"))
    assert SCHEMAS["SolveRequest"]["additionalProperties"] is False

    exporter_schemas = {"image": "ImageExporter", "oci": "ArchiveExporter", "docker": "ArchiveExporter",
                        "tar": "TarExporter", "local": "FilesystemExporter",
                        "cacheonly": "CacheOnlyExporter", "store": "StoreExporter", "s3": "S3Exporter"}
    assert set(c_string_list(src, "exporter_types")) == set(exporter_schemas)
    assert set(SCHEMAS["Exporter"]["discriminator"]["mapping"]) == set(exporter_schemas)
    documented = set()
    for t, comp in exporter_schemas.items():
        documented |= schema_enum(comp)
    assert documented == set(exporter_schemas)
    assert attr_names("ImageExporter") == set(c_string_list(src, "image_attrs"))
    assert attr_names("ArchiveExporter") == set(c_string_list(src, "archive_attrs"))
    assert attr_names("TarExporter") == set(c_string_list(src, "tar_attrs"))
    assert attr_names("FilesystemExporter") == set(c_string_list(src, "fs_attrs"))
    assert attr_names("CacheOnlyExporter") == set(c_string_list(src, "no_attrs"))
    assert attr_names("StoreExporter") == set(c_string_list(src, "store_attrs"))
    assert attr_names("S3Exporter") == set(c_string_list(src, "s3_attrs"))

    for direction, local in (("CacheImport", "LocalCacheImport"), ("CacheExport", "LocalCacheExport")):
        assert (schema_enum("RegistryCacheEntry") | schema_enum(local) | schema_enum("StoreCacheEntry")
                | schema_enum("S3CacheEntry")
                == set(c_string_list(src, "cache_types")) == set(SCHEMAS[direction]["discriminator"]["mapping"]))
    assert attr_names("StoreCacheEntry") == set(c_string_list(src, "store_cache_attrs"))
    assert attr_names("S3CacheEntry") == set(c_string_list(src, "s3_cache_attrs"))
    assert attr_names("RegistryCacheEntry") == set(c_string_list(src, "registry_cache_attrs"))
    # an import's attrs are not an export's: a schema allowing both in either
    # direction let schemathesis send {"type":"local","attrs":{"dest":...}}
    # as an import, which the parser refuses
    assert attr_names("LocalCacheImport") == set(c_string_list(src, "local_import_attrs"))
    assert attr_names("LocalCacheExport") == set(c_string_list(src, "local_export_attrs"))
    props = SCHEMAS["SolveRequest"]["properties"]
    assert set(props["entitlements"]["items"]["enum"]) == set(c_string_list(src, "entitlements"))
    assert set(c_string_list(src, "frontends")) <= set(props["frontend"]["enum"])


def test_frontend_attrs_match_solver():
    src = c_source("solver/solve.c")
    m = re.search(r'"frontendAttrs: unknown attr \\"%s\\" \(supported: ((?:[^"]|"\s*")*)\)"', src)
    assert m, "cannot find the frontendAttrs error message in solver/solve.c"
    supported = [s.strip() for s in re.sub(r'"\s*"', "", m.group(1)).split(",")]
    fa = SCHEMAS["FrontendAttrs"]
    named = {s for s in supported if not s.endswith(":*")}
    # `source` belongs to gateway.v0, whose attrs are the frontend image's own.
    assert set(fa["properties"]) - {"source"} == named
    assert 'solve_attrs_get (&p->req.frontend_attrs, "source")' in src
    for prefix in (s for s in supported if s.endswith(":*")):
        assert f"`{prefix[:-1]}NAME`" in fa["additionalProperties"]["description"], prefix


def test_stream_schema_matches_encoder():
    src = c_source("schema/solve_status.c")
    for fn, comp in (("vertex_json", "Vertex"), ("status_json", "VertexStatus"), ("log_json", "VertexLog"),
                     ("warning_json", "VertexWarning")):
        written = json_keys_written(c_function(src, fn))
        assert written and written <= set(SCHEMAS[comp]["properties"]), (fn, written)
    enc = c_function(src, "solve_encode")
    for key in ("status", "result", "error"):
        assert f'"{key}"' in enc
    assert {"vertexes", "statuses", "logs"} <= set(SCHEMAS["SolveStatus"]["properties"])
    assert json_keys_written(enc) - {"status", "result", "error", "exporterResponse"} <= (
        set(SCHEMAS["SolveStatus"]["properties"]) | set(SCHEMAS["Result"]["properties"])
        | set(SCHEMAS["StreamError"]["properties"]))
    solver = c_source("solver/solve.c")
    keys = set(re.findall(r'ps_strv_push \(&resp, "([^"]+)"\)', solver))
    assert keys and keys <= set(SCHEMAS["ExporterResponse"]["properties"]), keys


def test_job_schema_matches_handler():
    src = c_source("handlers/solve.c")
    written = json_keys_written(c_function(src, "job_json"))
    output_keys = {"index", "exporter", "type", "size", "url"}
    assert output_keys <= written
    assert written - output_keys - {"exporterResponse", "outputs"} == set(SCHEMAS["Job"]["properties"])
    assert written - output_keys == set(SCHEMAS["JobDetail"]["properties"])
    assert set(SCHEMAS["JobOutput"]["properties"]) == output_keys
    states = set(re.findall(r'return "([a-z]+)";', c_function(c_source("solver/job.c"), "solver_job_state_name")))
    assert set(SCHEMAS["JobState"]["enum"]) == states - {"unknown"}
    outcomes = set(re.findall(r'"(success|failure|cancelled|interrupted)"', c_function(src, "job_json")))
    assert set(SCHEMAS["Job"]["properties"]["outcome"]["enum"]) == outcomes


def test_every_solve_route_is_documented():
    src = c_source("server/router.c")
    routes = re.findall(r'\{\s*"([A-Z|]+)",\s*"(/(?:libpod/)?solve[^"]*)"', src)
    plain = {(m.lower(), p) for m, p in routes if not p.startswith("/libpod/")}
    libpod = {(m.lower(), p[len("/libpod"):]) for m, p in routes if p.startswith("/libpod/")}
    assert plain == libpod, "every /solve route is served under /libpod/ too (the servers list says so)"
    documented = {(m, p) for p, item in SPEC["paths"].items() for m in _METHODS if m in item}
    assert {(m, p) for m, p in documented if p.startswith("/solve")} == plain
    # The /build additions documented here are routed (and only those).
    build = {(m.lower(), p) for m, p in re.findall(r'\{\s*"([A-Z|]+)",\s*"(/build/prune|/grpc)"', src)}
    assert {(m, p) for m, p in documented if not p.startswith("/solve")} == build


# --------------------------------------------------------------------------
# The guide's examples

MARKER_RE = re.compile(r"<!--[ \t]*example:([^\n]*?)-->[ \t]*\n```sh\n(.*?)^```", re.S | re.M)
KINDS = {"ndjson", "json", "error", "text"}


class Example:
    def __init__(self, inner, script, line):
        tokens = shlex.split(inner)
        assert len(tokens) >= 3 and tokens[1] == "expect:", f"guide.md:{line}: bad marker {inner!r}"
        self.name, self.kind, self.line, self.script = tokens[0], tokens[2], line, script
        assert self.kind in KINDS, f"guide.md:{line}: unknown expect kind {self.kind!r}"
        self.opts = {}
        for tok in tokens[3:]:
            k, sep, v = tok.partition("=")
            assert sep, f"guide.md:{line}: option {tok!r} is not key=value"
            self.opts[k] = v
        self.needs = [n for n in self.opts.pop("needs", "").split(",") if n]
        self.skip = self.opts.pop("skip", None)

    def __repr__(self):
        return f"<example {self.name} (guide.md:{self.line})>"


def parse_guide():
    text = GUIDE_PATH.read_text(encoding="utf-8")
    examples = []
    for m in MARKER_RE.finditer(text):
        examples.append(Example(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1))
    return text, examples


GUIDE_TEXT, EXAMPLES = parse_guide()
BY_NAME = {e.name: e for e in EXAMPLES}


def test_guide_markers_are_complete():
    # Every ```sh block is a marked example (untested shell snippets rot).
    sh_blocks = len(re.findall(r"^```sh$", GUIDE_TEXT, re.M))
    assert sh_blocks == len(EXAMPLES), f"{sh_blocks} ```sh blocks but {len(EXAMPLES)} marked examples"
    assert len(BY_NAME) == len(EXAMPLES), "example names must be unique"
    for e in EXAMPLES:
        for n in e.needs:
            assert n in BY_NAME and EXAMPLES.index(BY_NAME[n]) < EXAMPLES.index(e), f"{e}: needs {n}"
        if e.kind == "ndjson":
            assert e.opts.get("end") in ("result", "error"), f"{e}: ndjson needs end=result|error"
        if e.kind == "json":
            assert e.opts.get("schema") in SCHEMAS, f"{e}: schema= must name a component"
        if e.kind == "error":
            assert re.fullmatch(r"[45][0-9]{2}", e.opts.get("status", "")), f"{e}: error needs status=NNN"
        if e.kind == "text":
            re.compile(e.opts["match"])
        assert "$PODSOLVE_SOCK" in e.script or e.needs, f"{e}: talks to no daemon"
    # The brief's coverage: these topics each have a runnable example.
    kinds = {(e.kind, e.opts.get("end") or e.opts.get("schema") or e.opts.get("status")) for e in EXAMPLES
             if not e.skip}
    for want in (("ndjson", "result"), ("ndjson", "error"), ("json", "JobList"), ("json", "JobDetail"),
                 ("json", "Job"), ("error", "400"), ("error", "404"), ("error", "501")):
        assert want in kinds, f"the guide has no runnable example for {want}"


def request_bodies(script):
    """JSON objects in single quotes that look like SolveRequests."""
    out = []
    for s in re.findall(r"'(?:request=)?(\{.*?\})'", script, re.S):
        try:
            obj = json.loads(s)
        except ValueError:
            continue
        if isinstance(obj, dict) and ({"frontend", "definition"} & set(obj)):
            out.append(obj)
    return out


@pytest.mark.parametrize("ex", [e for e in EXAMPLES if e.kind != "error"], ids=lambda e: e.name)
def test_example_requests_are_valid_solve_requests(ex):
    for body in request_bodies(ex.script):
        assert_valid("SolveRequest", body, f"{ex} request")
    r = subprocess.run(["bash", "-n", "-c", ex.script], capture_output=True, text=True)
    assert r.returncode == 0, f"{ex}: bash -n: {r.stderr}"


def test_guide_has_request_bodies():
    assert sum(len(request_bodies(e.script)) for e in EXAMPLES) >= 8


class GuideRunner:
    """Runs examples in one directory, each at most once, prerequisites first."""

    def __init__(self, daemon, workdir):
        self.daemon = daemon
        self.workdir = workdir
        self.done = {}

    def run(self, ex):
        if ex.name in self.done:
            result = self.done[ex.name]
            if isinstance(result, str):
                pytest.fail(f"{ex} failed earlier: {result}", pytrace=False)
            return result
        for n in ex.needs:
            need = BY_NAME[n]
            if need.name not in self.done:
                self.run(need)
            if isinstance(self.done[need.name], str):
                pytest.fail(f"{ex}: prerequisite {need} failed: {self.done[need.name]}", pytrace=False)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PODSOLVE_SOCK"] = str(self.daemon.sock)
        env["PODSOLVE_SRC"] = str(REPO)      # the frontend examples run examples/llb-frontend
        proc = subprocess.Popen(["bash", "-eu", "-c", ex.script], cwd=self.workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=EXAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self.done[ex.name] = f"timed out after {EXAMPLE_TIMEOUT}s"
            pytest.fail(f"{ex}: timed out after {EXAMPLE_TIMEOUT}s; stdout:\n{out[-3000:]!r}\nstderr:\n"
                        f"{err[-3000:]!r}\ndaemon log:\n{self.daemon.log_tail(3000)}", pytrace=False)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # leftover background jobs of the example
            except ProcessLookupError:
                pass
        if proc.returncode != 0:
            self.done[ex.name] = f"exit status {proc.returncode}"
            pytest.fail(f"{ex}: bash exited {proc.returncode}; stderr:\n{err.decode(errors='replace')[-3000:]}"
                        f"\nstdout:\n{out.decode(errors='replace')[-3000:]}", pytrace=False)
        self.done[ex.name] = out
        return out


@pytest.fixture(scope="module")
def guide(daemon, tmp_path_factory):
    # The gateway examples need both frontend images in the daemon's storage.
    images, reason = lib.make_frontend_images(daemon)
    if images is None:
        pytest.skip(reason)
    return GuideRunner(daemon, tmp_path_factory.mktemp("guide-examples"))


def check_ndjson(ex, out):
    text = out.decode("utf-8")
    assert text.endswith("\n"), f"{ex}: the stream must end with a newline"
    lines = text.split("\n")[:-1]
    assert lines, f"{ex}: no output"
    for i, line in enumerate(lines):
        where = f"{ex} line {i + 1}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            pytest.fail(f"{where}: not JSON ({e}): {line[:500]!r}", pytrace=False)
        assert_valid("StreamLine", obj, where)
        assert isinstance(obj, dict) and len(obj) == 1, f"{where}: a line has exactly one key: {line[:300]}"
        key = next(iter(obj))
        if i < len(lines) - 1:
            assert key == "status", f"{where}: only the last line may be a {key}: {line[:300]}"
        else:
            assert key == ex.opts["end"], f"{where}: the last line is a {key}, the guide says {ex.opts['end']}"
        for log in obj.get("status", {}).get("logs", []):
            base64.b64decode(log["data"], validate=True)


def check_json(ex, out):
    try:
        obj = json.loads(out)
    except ValueError as e:
        pytest.fail(f"{ex}: stdout is not one JSON document ({e}): {out[:500]!r}", pytrace=False)
    assert_valid(ex.opts["schema"], obj, str(ex))
    for k, v in ex.opts.items():
        if k.startswith("field."):
            got = obj.get(k[len("field."):])
            assert str(got) == v, f"{ex}: {k[6:]} is {got!r}, the guide says {v!r}"


def check_error(ex, out):
    want = int(ex.opts["status"])
    rest = out
    status, headers = None, {}
    while rest.startswith(b"HTTP/"):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"{ex}: unterminated header block: {out[:500]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status >= 200:
            break
    if status is not None:
        assert status == want, f"{ex}: HTTP status {status}, the guide says {want}"
        assert headers.get("content-type", "").startswith("application/json"), f"{ex}: {headers}"
    try:
        body = json.loads(rest)
    except ValueError as e:
        pytest.fail(f"{ex}: error body is not JSON ({e}): {rest[:500]!r}", pytrace=False)
    assert_valid("ErrorResponse", body, str(ex))
    assert body["response"] == want, f"{ex}: body says response {body['response']}, the guide says {want}"
    # cause is the innermost reason: the last ": "-separated segment of the
    # message, split only outside quotes and parentheses.
    assert body["cause"] and body["message"].endswith(body["cause"]), body


def check_text(ex, out):
    text = out.decode("utf-8", "replace")
    assert re.search(ex.opts["match"], text, re.M), f"{ex}: stdout does not match {ex.opts['match']!r}:\n{text[:2000]}"


CHECKS = {"ndjson": check_ndjson, "json": check_json, "error": check_error, "text": check_text}


@pytest.mark.parametrize("ex", EXAMPLES, ids=lambda e: e.name)
def test_guide_example(guide, ex):
    if ex.skip:
        pytest.skip(f"not runnable here: {ex.skip}")
    out = guide.run(ex)
    CHECKS[ex.kind](ex, out)


# --------------------------------------------------------------------------
# Documented answers to bodies that break a limit while they are read


def _multipart(parts, boundary="podsolvedocsboundary"):
    body = b""
    for name, data in parts:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.tar\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _tar_of(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


REQUEST = b'{"frontend":"dockerfile.v0"}'
BODY_LIMIT_CASES = {
    # case: (body, headers, status, message regex) -- the messages the OpenAPI document quotes
    "request-over-1MiB": (
        json.dumps({"frontend": "dockerfile.v0", "frontendAttrs": {"build-arg:PAD": "x" * (1024 * 1024 + 10)}}).encode(),
        {"Content-Type": "application/json"}, 413, r"^the solve request is larger than 1048576 bytes$"),
    "request-part-over-1MiB": _multipart([("request", b" " * (1024 * 1024 + 10) + REQUEST)]) + (
        413, r"^the solve request is larger than 1048576 bytes$"),
    "invalid-part-name": _multipart([("request", REQUEST), ("bad name", b"\0" * 1024)]) + (
        400, r'^multipart part "bad name": names are 1-64 characters of \[A-Za-z0-9._-\]$'),
    "part-sent-twice": _multipart([("request", REQUEST), ("context", b"\0" * 1024), ("context", b"\0" * 1024)]) + (
        400, r'^multipart part "context" is sent twice$'),
    "too-many-parts": _multipart([("request", REQUEST)] + [(f"p{i}", b"\0" * 16) for i in range(65)]) + (
        413, r"^more than 64 multipart parts$"),
    "body-cut-inside-a-part": (_multipart([("request", REQUEST), ("context", b"\0" * 64)])[0][:-30],
                               _multipart([])[1], 400,
                               r'^multipart/form-data body ends inside part "context" \(no closing '
                               r'--podsolvedocsboundary-- line\)$'),
    "part-headers-over-8KiB": (b"--podsolvedocsboundary\r\nX-Pad: " + b"p" * 9000 + b"\r\n\r\n",
                               _multipart([])[1], 413, r"^multipart part 1: headers larger than 8192 bytes$"),
}


def _assert_answered(d, body, headers, status, message_re, where):
    try:
        got, rh, data = d.request("POST", "/solve", body=body, headers=headers, timeout=20)
    except OSError as e:   # socket.timeout is an OSError
        pytest.fail(f"{where}: no answer within 20 s ({e!r}); daemon log:\n{d.log_tail(2000)}", pytrace=False)
    assert got == status, (where, got, data)
    err = json.loads(data)
    assert_valid("ErrorResponse", err, where)
    assert err["response"] == status and re.search(message_re, err["message"]), (where, err)


@pytest.mark.parametrize("case", sorted(BODY_LIMIT_CASES))
def test_documented_body_errors_are_answered(daemon, case):
    body, headers, status, message_re = BODY_LIMIT_CASES[case]
    _assert_answered(daemon, body, headers, status, message_re, case)


def test_documented_context_limit_is_answered(spawn_daemon):
    d = spawn_daemon("--max-context-bytes", "65536")
    big = _tar_of({"Dockerfile": b"FROM localhost/busybox:latest\n", "blob": os.urandom(200 * 1024)})
    body, headers = _multipart([("request", REQUEST), ("context", big)])
    _assert_answered(d, body, headers, 413, r"^build context exceeds --max-context-bytes \(65536 bytes\)$",
                     "context over --max-context-bytes")
