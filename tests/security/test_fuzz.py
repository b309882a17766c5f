"""Point 10 (fuzz): schemathesis generates requests for every operation of the OpenAPI spec,
valid ones and deliberately invalid ones ("negative" data), authenticated as a real tenant.
Pass: no 5xx ever, and every negative request is refused with a 4xx.

schemathesis draws from the spec's schemas, so it rarely makes what breaks parsers and
drivers rather than validators. Three hypothesis generators below do, on every operation
they apply to, with real ids in the path (a made-up id ends at the 404 before the input is
read): integers at and past the 64-bit limits in every integer parameter (query or header),
JSON bodies nested 10^4-10^5 levels (and just around the parser's recursion limit), and
malformed `Last-Event-ID`, `Idempotency-Key` and `Content-Type` headers. Pass: no 5xx and
no exception out of the app, ever. Each prints how many inputs it tried (`FIGURE`).

Examples per operation (and per parameter): `SEC_FUZZ_EXAMPLES` (25 in `make test`, more
with `make fuzz`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from app.db.migrate import upgrade
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import GOOD_CSV, make_tenant
from tests.doubles import RecordingJobQueue
from tests.reliability.harness import figure

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("SEC_FUZZ_EXAMPLES", "25"))
SEEN: Counter[str] = Counter()

# schemathesis needs the app when the module is collected (its lazy `from_fixture` loader does
# not work with pytest 9). Building it connects to nothing; the fixture below migrates the
# database and runs the lifespan before the first request.
_VAR = Path(tempfile.mkdtemp(prefix="sec-fuzz-")) / "var"
SETTINGS = Settings(environment="test", var_dir=_VAR, rate_limit_per_minute=1_000_000)
APP = create_app(SETTINGS, job_queue=RecordingJobQueue())
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=EXAMPLES,
    deterministic=True,  # the same inputs on every CI run
    database="none",
)


@pytest.fixture(scope="module")
def auth() -> Iterator[dict[str, str]]:
    upgrade(SETTINGS.database_url)
    engine = make_engine(SETTINGS.database_url)
    tenant = make_tenant(make_sessionmaker(engine), "fuzzer")
    engine.dispose()
    with TestClient(APP):  # runs the lifespan: database, store, serving
        yield tenant.headers
    shutil.rmtree(_VAR.parent, ignore_errors=True)
    figure(
        "schemathesis",
        examples_per_operation=EXAMPLES,
        requests=sum(v for k, v in SEEN.items() if k[0].isdigit()),
        server_errors=SEEN["5xx"],
        negative_requests=SEEN["negative"],
        negative_accepted_2xx=SEEN["negative_2xx"],
        status_classes=",".join(f"{k}:{v}" for k, v in sorted(SEEN.items()) if k[0].isdigit()),
    )


@schema.parametrize()
def test_api_never_errors_and_refuses_bad_input(
    case: schemathesis.Case, auth: dict[str, str]
) -> None:
    response = case.call(headers=auth)
    negative = case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE
    SEEN[f"{response.status_code // 100}xx"] += 1
    SEEN["negative"] += negative
    SEEN["negative_2xx"] += negative and response.status_code < 300
    if negative and response.status_code < 300 and os.environ.get("SEC_FUZZ_DEBUG"):
        print(
            "NEG2XX",
            case.method,
            case.formatted_path,
            case.query,
            case.headers,
            str(case.body)[:80],
            case.meta.components if case.meta else None,
        )
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:500]}"
    if negative:
        case.validate_response(response, checks=[negative_data_rejection])


# The generators ---------------------------------------------------------------------------

TRIED: Counter[str] = Counter()
SERVER_ERRORS: Counter[str] = Counter()
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=True,  # the same inputs on every CI run
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
OPERATIONS: list[tuple[str, str, dict[str, Any]]] = [
    (method.upper(), path, op)
    for path, ops in APP.openapi()["paths"].items()
    for method, op in ops.items()
]

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
# Integers at and past the 64-bit limits (and past 2^64), 30-digit ones, and spellings of a
# number that a parser may or may not take.
INTEGERS = st.one_of(
    st.sampled_from(
        [INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64, -1, 0, 10**29, -(10**29)]
    ).map(str),
    st.integers(INT64_MAX - 3, INT64_MAX + 3).map(str),
    st.integers(INT64_MIN - 3, INT64_MIN + 3).map(str),
    st.integers(10**29, 10**30 - 1).map(str),
    st.integers(-(10**30) + 1, -(10**29)).map(str),
    st.sampled_from(
        ["1e30", "0x7fffffffffffffff", "9" * 400, "1.0", "1.5", " 1", "+1", "-0", "1_0", "", "NaN"]
    ),
)
# Header values as they can arrive over HTTP/1.1: tab, printable ASCII and latin-1 (no CR/LF).
HEADER_CHARS = st.characters(codec="latin-1", categories=["L", "M", "N", "P", "S", "Zs"])
MALFORMED = [
    *("", " ", "\t", "-1", "9" * 30, str(INT64_MAX + 1), "x" * 10_000, "\xff\xfe", "; ="),
    *("application/json; charset=utf-16", "application/json; charset=nope"),
    *("application/json;;;", "application/json; charset=", "text/plain", "*/*"),
    *("multipart/form-data", "multipart/form-data; boundary=", "application/octet-stream"),
    *("multipart/form-data; boundary=" + "b" * 5_000, "application/x-www-form-urlencoded"),
]
HEADER_VALUES = st.one_of(st.text(HEADER_CHARS, max_size=40), st.sampled_from(MALFORMED))
FUZZED_HEADERS = ["Last-Event-ID", "Idempotency-Key", "Content-Type"]


def _integer_params() -> list[tuple[str, str, str, str]]:
    """(method, path, where, name) of every integer parameter of the spec, and `Last-Event-ID`
    on every event stream, declared or not (a browser sends it on every reconnect)."""
    found = []
    for method, path, op in OPERATIONS:
        for p in op.get("parameters", []):
            schema = p.get("schema", {})
            if any(o.get("type") == "integer" for o in schema.get("anyOf", [schema])):
                found.append((method, path, p["in"], p["name"]))
        streams = "text/event-stream" in op["responses"].get("200", {}).get("content", {})
        if streams and (method, path, "header", "Last-Event-ID") not in found:
            found.append((method, path, "header", "Last-Event-ID"))
    return found


def _json_operations() -> list[tuple[str, str]]:
    return [
        (method, path)
        for method, path, op in OPERATIONS
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]


class Target:
    """The fuzzed app with a tenant of its own and real objects for the path's ids: a job (its
    event stream ends: the job is cancelled), a dataset, a built-in model. The rest are made up."""

    def __init__(self, client: TestClient, headers: dict[str, str], ids: dict[str, str]) -> None:
        self.client = client
        self.headers = headers
        self.ids = ids

    def url(self, path: str) -> str:
        return path.format(**self.ids)

    def body(self, method: str, path: str, op: dict[str, Any]) -> dict[str, Any]:
        """A plausible body for the operation, so that what is fuzzed is what gets refused."""
        content = op.get("requestBody", {}).get("content", {})
        if "multipart/form-data" in content:
            data = GOOD_CSV if path == "/v1/datasets" else b"not an archive"
            return {"files": {"file": ("upload.csv", io.BytesIO(data), "text/csv")}}
        if "application/json" in content:
            bodies: dict[str, Any] = {
                "/v1/jobs": {"dataset": self.ids["dataset_id"], "dry_run": True},
                "/v1/keys": {"name": "fuzz"},
                "/v1/deployments": {"artifact_id": self.ids["artifact_id"]},
                "/v1/deployments/{deployment_id}/predict": {"inputs": ["a"]},
            }
            return {"json": bodies.get(path, {})}
        return {}

    def call(self, generator: str, method: str, url: str, **kwargs: Any) -> Any:
        """One input; a 5xx or an exception out of the app (an SSE stream that dies after its
        headers is one) is a server error."""
        TRIED[generator] += 1
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            r = self.client.request(method, url, headers=headers, **kwargs)
        except Exception as exc:
            SERVER_ERRORS[generator] += 1
            raise AssertionError(f"{generator}: {method} {url[:200]} raised {exc!r}") from exc
        if r.status_code >= 500:
            SERVER_ERRORS[generator] += 1
        assert r.status_code < 500, f"{generator}: {method} {url[:200]}: {r.text[:300]}"
        return r


@pytest.fixture(scope="module")
def target(auth: dict[str, str]) -> Iterator[Target]:
    engine = make_engine(SETTINGS.database_url)
    tenant = make_tenant(make_sessionmaker(engine), "hostile-inputs")
    engine.dispose()
    client = TestClient(APP)  # the lifespan is already running (the `auth` fixture)
    h = tenant.headers
    dataset = client.post("/v1/datasets", headers=h, files={"file": ("d.csv", GOOD_CSV)})
    assert dataset.status_code == 201, dataset.text
    job = client.post("/v1/jobs", headers=h, json={"dataset": dataset.json()["id"]})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=h).status_code == 200
    ids = {
        "job_id": job_id,
        "dataset_id": dataset.json()["id"],
        "model_id": "minilm-l6",
        "artifact_id": "art_" + "0" * 32,
        "deployment_id": "dep_" + "0" * 32,
        "key_id": "key_" + "0" * 32,  # never the tenant's own key: DELETE would revoke it
    }
    yield Target(client, h, ids)
    for generator in ("integer_limits", "deep_json", "malformed_headers"):
        figure(
            f"fuzz_{generator}",
            examples_per_case=EXAMPLES,
            inputs=TRIED[generator],
            server_errors=SERVER_ERRORS[generator],
        )


@pytest.mark.parametrize(
    ("method", "path", "where", "name"),
    _integer_params(),
    ids=[f"{m} {p} {n}" for m, p, _, n in _integer_params()],
)
@HYPOTHESIS
@given(value=INTEGERS, switches_on=st.booleans())
def test_integer_limits_never_error(
    target: Target, method: str, path: str, where: str, name: str, value: str, switches_on: bool
) -> None:
    # With the operation's boolean switches on too: a parameter may only be read with one
    # (`trace_after` with `live=true`).
    op = next(op for m, p, op in OPERATIONS if (m, p) == (method, path))
    params = {
        p["name"]: "true"
        for p in op.get("parameters", [])
        if switches_on and p["in"] == "query" and p.get("schema", {}).get("type") == "boolean"
    }
    if where == "header":
        target.call(
            "integer_limits", method, target.url(path), params=params, headers={name: value}
        )
    else:
        target.call("integer_limits", method, target.url(path), params={**params, name: value})


def _nested(depth: int, shape: str) -> str:
    if shape == "array":
        return "[" * depth + "]" * depth
    if shape == "object":
        return '{"a":' * depth + "null" + "}" * depth
    return '[{"a":' * depth + "0" + "}]" * depth  # alternating


@pytest.mark.parametrize(("method", "path"), _json_operations())
@HYPOTHESIS
@given(
    depth=st.one_of(st.integers(10_000, 100_000), st.integers(900, 1_100)),
    shape=st.sampled_from(["array", "object", "mixed"]),
    place=st.sampled_from(["body", "known_field", "unknown_field"]),
)
def test_deep_json_never_errors(
    target: Target, method: str, path: str, depth: int, shape: str, place: str
) -> None:
    op = next(op for m, p, op in OPERATIONS if (m, p) == (method, path))
    body = target.body(method, path, op)["json"]
    deep = _nested(depth, shape)
    if place == "body":
        raw = deep
    else:  # the body with one field (a real one, or one the model does not know) made deep
        field = next(iter(body), "x") if place == "known_field" else "unknown"
        rest = {k: v for k, v in body.items() if k != field}
        raw = json.dumps(rest)[:-1] + (", " if rest else "") + f'"{field}": {deep}}}'
    r = target.call(
        "deep_json",
        method,
        target.url(path),
        content=raw.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code >= 400, f"{path} took a {depth}-deep body: {r.status_code}"


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, _ in OPERATIONS],
    ids=[f"{m} {p}" for m, p, _ in OPERATIONS],
)
@HYPOTHESIS
@given(name=st.sampled_from(FUZZED_HEADERS), value=HEADER_VALUES)
def test_malformed_headers_never_error(
    target: Target, method: str, path: str, name: str, value: str
) -> None:
    op = next(op for m, p, op in OPERATIONS if (m, p) == (method, path))
    target.call(
        "malformed_headers",
        method,
        target.url(path),
        headers={name: value.encode("latin-1")},
        **target.body(method, path, op),
    )
