"""Schemathesis against ``/api/v1/openapi.json``: every documented operation, fuzzed.

The admin role of the real app runs on localhost (a thread of its own with its event
loop, real Redis, a SQLite file, the shipped model), a key holding every API scope
calls it, and each operation gets a bounded number of generated requests — valid and
invalid.  No answer may be a 5xx, have a status or content type its operation does not
document, or a body that violates its documented schema; every error body is the house
one (``{"error": {"code", "message", "field"}}``).  Offline: the schema is read from the
running app, nothing is fetched from anywhere else.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import make_settings

# Examples per operation: enough to reach every documented refusal, few enough that the
# whole run stays around a minute on a shared two-core machine.
EXAMPLES = 12


@dataclass
class LiveApi:
    base: str
    headers: dict[str, str]


def _serve(data_dir: Path, redis_url: str, ready: dict[str, Any], stop: threading.Event) -> None:
    """Run the admin role in this thread's own loop until ``stop`` is set."""

    async def main() -> None:
        from admin import flows as admin_flows
        from admin.permissions import load_table
        from core.appkit import KEYRING
        from core.audit import Actor
        from core.server import start_site
        from siyu.app import create_app
        from tests.admin import review_seed as seed
        from tests.bot.conftest import InThreadAnalyzer

        settings = make_settings(
            data_dir, database_url=f"sqlite://{data_dir / 'api.sqlite3'}", redis_url=redis_url
        )
        app = create_app(settings, ("admin",), auto_migrate=True, analyzer=InThreadAnalyzer())
        runner, port = await start_site(app, "127.0.0.1", 0)
        try:
            table = load_table()
            key = await admin_flows.do_create_api_key(
                actor=Actor("system", "test", "schemathesis"),
                source="test",
                name="every-scope",
                scopes=list(table.scopes),
                table=table,
            )
            # Something to find: a customer with a conversation and an open case.
            await seed.conversation(
                keyring=app[KEYRING],
                advisor_row=await seed.advisor("adv-zhao", "赵经理"),
                customer_row=await seed.customer("wmCust0001", "周先生"),
                turns=[("customer", "能保本吗"), ("advisor", "保本保收益，放心")],
                start=datetime.now(UTC) - timedelta(hours=1),
            )
            ready["live"] = LiveApi(
                base=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {key.plaintext}"},
            )
        except BaseException as exc:
            ready["error"] = exc
            raise
        finally:
            ready["event"].set()
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    asyncio.run(main())


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LiveApi]:
    ready: dict[str, Any] = {"event": threading.Event()}
    stop = threading.Event()
    thread = threading.Thread(
        target=_serve,
        args=(tmp_path_factory.mktemp("schemathesis"), redis_url, ready, stop),
        daemon=True,
    )
    thread.start()
    assert ready["event"].wait(120), "the app did not start"
    if "error" in ready:
        raise ready["error"]
    yield ready["live"]
    stop.set()
    thread.join(30)


@pytest.fixture(scope="module")
def api_schema(live_api: LiveApi) -> Any:
    request = urllib.request.Request(
        live_api.base + "/api/v1/openapi.json", headers=live_api.headers
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        document = json.load(answer)
    return schemathesis.openapi.from_dict(document)


def house_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx the API answers is ``{"error": {"code", "message", "field"}}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not {"code", "message", "field"} <= set(error):
        raise AssertionError(f"not the house error body: {body!r}")
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    house_error_body,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_document(live_api: LiveApi, api_schema: Any, mode: Any) -> None:
    """Each operation in turn, driven by its own Hypothesis strategy (schemathesis builds
    it from the document); a failure is reported with the request that caused it."""
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10  # the document is read whole, not an empty shell

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            response = case.call(base_url=live_api.base, headers=live_api.headers, timeout=60)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - reported together
            failures.append(f"{operation.label}: {exc}")
    assert failures == [], "\n\n".join(failures)
