"""Schemathesis hooks for podsolve's api-docs/openapi.yaml (loaded with
SCHEMATHESIS_HOOKS=<this file>, by test_schemathesis.py and by hand).

POST /solve and GET /solve/{ref}/status answer `application/x-ndjson`: one
JSON object per line, which Schemathesis cannot read on its own (it knows
JSON and server-sent events).  OpenAPI 3.0 has no way to say "each line is
a StreamLine", so openapi.yaml gives StreamLine as the media type's schema
and says in words that it describes one line.  Here:

  * the deserializer hands Schemathesis' own response_schema_conformance
    the stream's last line, which must be a `result` or an `error`;
  * the check `ndjson_stream_conformance` validates every line against the
    same schema, with the validator Schemathesis built for it, and checks
    the promises the spec makes in words: at least one line, the last one
    a `result` or an `error`, nothing of either kind before it.

Written against schemathesis 4.32.5 (the version scripts/install-deps
pins): `operation.responses.find_by_status_code`, `get_schema` and
`get_validator` are what its own validation calls."""

import json

import schemathesis
from hypothesis.internal import lambda_sources

NDJSON = "application/x-ndjson"


# Debian 12's Python 3.11.2 has CPython's bug gh-106905: ast.parse, called
# deep in the stack, may raise "SystemError: AST constructor recursion
# depth mismatch".  Hypothesis calls it only to name a lambda in a
# strategy's repr (while validating a recursive strategy, for schemas that
# admit any JSON value), and the run then died with a Runtime Error now and
# then, for nothing the daemon did.  The name is cosmetic: fall back to the
# one Hypothesis itself uses when it cannot find the source.
_describe_lambda = lambda_sources._lambda_description


def _lambda_description_despite_gh_106905(f):
    try:
        return _describe_lambda(f)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _lambda_description_despite_gh_106905


def _lines(content):
    """The stream's objects, in order; a line that is not JSON raises."""
    out = []
    for i, raw in enumerate(content.split(b"\n")):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except ValueError as e:
            raise AssertionError(f"NDJSON line {i + 1} is not JSON ({e}): {raw[:200]!r}") from None
    return out


def _is_ndjson(response):
    ctype = response.headers.get("content-type") or response.headers.get("Content-Type") or [""]
    if isinstance(ctype, list):
        ctype = ctype[0] if ctype else ""
    return ctype.split(";")[0].strip().lower() == NDJSON


@schemathesis.deserializer(NDJSON)
def deserialize_ndjson(ctx, response):
    lines = _lines(response.content)
    if not lines:
        raise ValueError("empty NDJSON stream: the spec promises a final `result` or `error` line")
    return lines[-1]


@schemathesis.check
def ndjson_stream_conformance(ctx, response, case):
    """Every line of an application/x-ndjson answer is a StreamLine; the
    last is the only `result` or `error` line."""
    if not _is_ndjson(response):
        return None
    lines = _lines(response.content)
    assert lines, "empty NDJSON stream: the spec promises a final `result` or `error` line"
    last = lines[-1]
    assert isinstance(last, dict) and set(last) & {"result", "error"}, \
        f"the stream's last line is not a `result` or `error`: {json.dumps(last)[:300]}"
    for i, line in enumerate(lines[:-1]):
        assert not (isinstance(line, dict) and set(line) & {"result", "error"}), \
            f"line {i + 1} of {len(lines)} is a `result`/`error` line but not the last"
    definition = case.operation.responses.find_by_status_code(response.status_code)
    if definition is None:
        return None  # an undocumented status: status_code_conformance reports it
    resolved = definition.get_schema(NDJSON)
    if resolved.schema is None:
        return None
    validator = definition.get_validator(resolved.media_type, resolved.schema)
    for i, line in enumerate(lines):
        errors = [e.message for e in validator.iter_errors(line)]
        assert not errors, f"NDJSON line {i + 1} of {len(lines)} breaks StreamLine: {errors[:3]}: " \
                           f"{json.dumps(line)[:300]}"
    return None
