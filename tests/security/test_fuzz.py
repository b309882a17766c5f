"""Point 10 (fuzz): schemathesis generates requests for every operation of the OpenAPI spec,
valid ones and deliberately invalid ones ("negative" data), authenticated as a real tenant.
Pass: no 5xx ever, and every negative request is refused with a 4xx.

Examples per operation: `SEC_FUZZ_EXAMPLES` (25 in `make test`, more with `make fuzz`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from app.db.migrate import upgrade
from app.db.session import make_engine, make_sessionmaker
from app.main import create_app
from app.queue import RecordingJobQueue
from app.settings import Settings
from tests.app.conftest import make_tenant
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
