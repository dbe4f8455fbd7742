"""Go kured's alert filter semantics, and "any query error counts as blocked"."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kured.alerts import (
    AlertmanagerError,
    Matcher,
    PrometheusBlocker,
    PrometheusQueryError,
    Silence,
    active_alerts,
    blocks,
    parse_silences,
)
from kured.blockers import QueryBlocker
from kured.config import Config

MAINT = re.compile(r"^Maintenance")


@pytest.mark.parametrize(
    ("name", "state", "regex", "match_only", "firing_only", "expected"),
    [
        # No filter: every active alert blocks, pending too unless --alert-firing-only.
        ("NodeDown", "firing", None, False, False, True),
        ("NodeDown", "pending", None, False, False, True),
        ("NodeDown", "pending", None, False, True, False),
        ("NodeDown", "firing", None, False, True, True),
        # --alert-filter-regexp alone: matching alerts are ignored.
        ("MaintenanceWindow", "firing", MAINT, False, False, False),
        ("NodeDown", "firing", MAINT, False, False, True),
        # ... with --alert-filter-match-only: only matching alerts count.
        ("MaintenanceWindow", "firing", MAINT, True, False, True),
        ("NodeDown", "firing", MAINT, True, False, False),
        ("MaintenanceWindow", "pending", MAINT, True, True, False),
        # search, not fullmatch (Go's MatchString finds a match anywhere).
        ("DiskMaintenanceDue", "firing", re.compile("Maintenance"), True, False, True),
    ],
)
def test_filter_table(
    *,
    name: str,
    state: str,
    regex: re.Pattern[str] | None,
    match_only: bool,
    firing_only: bool,
    expected: bool,
) -> None:
    assert blocks(name, state, regex, match_only, firing_only) is expected


names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh_", min_size=1, max_size=12)


@given(names, st.sampled_from(["firing", "pending"]), st.booleans(), st.booleans())
def test_match_only_partitions_alerts(
    name: str, state: str, firing_only: bool, with_regex: bool
) -> None:
    """A filter splits alerts in two: exactly one of the two modes lets each one block."""
    regex = re.compile("^[A-M]") if with_regex else None
    ignoring = blocks(name, state, regex, False, firing_only)
    only = blocks(name, state, regex, True, firing_only)
    counted = state == "firing" or not firing_only
    if regex is None:
        assert ignoring == only == counted
    else:
        assert ignoring != only or not counted
        assert (ignoring or only) == counted


def vector(*alerts_: tuple[str, str], value: str = "1") -> dict[str, Any]:
    result = [
        {
            "metric": {"__name__": "ALERTS", "alertname": n, "alertstate": s},
            "value": [1.0, value],
        }
        for n, s in alerts_
    ]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


Handler = Callable[[httpx2.Request], httpx2.Response]


@pytest.fixture
def prometheus(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx2.Request]]:
    """Route the module's HTTP client to an in-process handler; returns the requests seen."""

    def install(handler: Handler) -> list[httpx2.Request]:
        seen: list[httpx2.Request] = []

        def record(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return handler(request)

        real = httpx2.AsyncClient

        def client(**kwargs: Any) -> httpx2.AsyncClient:
            return real(**{**kwargs, "transport": httpx2.MockTransport(record)})

        monkeypatch.setattr(httpx2, "AsyncClient", client)
        return seen

    return install


def json_response(body: Any, status: int = 200) -> Handler:
    return lambda _request: httpx2.Response(status, content=json.dumps(body).encode())


async def test_query_shape_and_result(
    prometheus: Callable[[Handler], list[httpx2.Request]],
) -> None:
    seen = prometheus(
        json_response(
            vector(("NodeDown", "firing"), ("DiskFull", "pending"), ("NodeDown", "firing"))
        )
    )
    names = await active_alerts("http://prom:9090/sub/", None, False, False, timeout=5)
    assert names == ["DiskFull", "NodeDown"]
    assert str(seen[0].url) == "http://prom:9090/sub/api/v1/query?query=ALERTS"


async def test_zero_valued_and_nameless_samples_do_not_block(
    prometheus: Callable[[Handler], list[httpx2.Request]],
) -> None:
    body = vector(("Silent", "firing"), value="0")
    body["data"]["result"].append({"metric": {"__name__": "up"}, "value": [1.0, "1"]})
    prometheus(json_response(body))
    assert await active_alerts("http://prom", None, False, False, timeout=5) == []


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (
            json_response({"status": "error", "errorType": "bad_data", "error": "x"}, 400),
            "HTTP 400",
        ),
        (lambda _r: httpx2.Response(200, content=b"<html>"), "api/v1/query"),
        (json_response({"status": "error", "errorType": "timeout", "error": "slow"}), "timeout"),
        (
            json_response({"status": "success", "data": {"resultType": "matrix", "result": []}}),
            "matrix",
        ),
        (json_response({"status": "success"}), "malformed response"),
        (
            json_response(
                {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {"alertname": "X"}}]},
                }
            ),
            "malformed sample",
        ),
        (json_response([1, 2]), "malformed response"),
    ],
)
async def test_bad_answers_raise(
    prometheus: Callable[[Handler], list[httpx2.Request]], handler: Handler, reason: str
) -> None:
    prometheus(handler)
    with pytest.raises(PrometheusQueryError, match=reason):
        await active_alerts("http://prom", None, False, False, timeout=5)


async def test_blocker_reasons(prometheus: Callable[[Handler], list[httpx2.Request]]) -> None:
    prometheus(json_response(vector(("NodeDown", "firing"), ("DiskFull", "firing"))))
    assert await PrometheusBlocker("http://prom").check() == "alerts firing: DiskFull, NodeDown"
    assert await PrometheusBlocker("http://prom", re.compile("Node|Disk")).check() is None


async def test_connection_refused_blocks(unused_tcp_port: int) -> None:
    reason = await PrometheusBlocker(f"http://127.0.0.1:{unused_tcp_port}", timeout=2).check()
    assert reason is not None
    assert reason.startswith("prometheus query failed: ")


async def test_timeout_blocks() -> None:
    """A Prometheus that accepts but never answers is bounded by the timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        blocker = PrometheusBlocker(f"http://127.0.0.1:{port}", timeout=0.3)
        reason = await asyncio.wait_for(blocker.check(), 5)
    finally:
        server.close()
    assert reason is not None
    assert "within 0.3s" in reason


def test_from_config() -> None:
    assert PrometheusBlocker.from_config(Config(node_id="n1")) is None
    config = Config(
        node_id="n1",
        prometheus_url="http://prom",
        alert_filter_regexp=MAINT,
        alert_filter_match_only=True,
        alert_firing_only=True,
    )
    blocker = PrometheusBlocker.from_config(config)
    assert blocker is not None
    assert (blocker.regex, blocker.match_only, blocker.firing_only) == (MAINT, True, True)


# --- Alertmanager silences (--alertmanager-url) and --blocking-query -----------------------


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        (Matcher("alertname", "NodeDown"), {"alertname": "NodeDown"}, True),
        (Matcher("alertname", "Node"), {"alertname": "NodeDown"}, False),
        (Matcher("alertname", "Node.*", is_regex=True), {"alertname": "NodeDown"}, True),
        (Matcher("alertname", "Down", is_regex=True), {"alertname": "NodeDown"}, False),
        (Matcher("alertname", "NodeDown", is_equal=False), {"alertname": "NodeDown"}, False),
        (Matcher("severity", "", is_regex=False), {"alertname": "X"}, True),
        (Matcher("team", "db|web", is_regex=True, is_equal=False), {"team": "ops"}, True),
        (Matcher("alertname", "(", is_regex=True), {"alertname": "("}, False),
    ],
)
def test_matchers_match_as_alertmanager_does(
    matcher: Matcher, labels: dict[str, str], expected: bool
) -> None:
    assert matcher.matches(labels) is expected


def test_a_silence_needs_every_matcher_and_at_least_one() -> None:
    silence = Silence("s", (Matcher("alertname", "X"), Matcher("node", "n1")))
    assert silence.covers({"alertname": "X", "node": "n1"})
    assert not silence.covers({"alertname": "X", "node": "n2"})
    assert not Silence("empty", ()).covers({"alertname": "X"})


def silence(ident: str, state: str, *matchers: dict[str, Any]) -> dict[str, Any]:
    """One entry of GET /api/v2/silences."""
    return {
        "id": ident,
        "status": {"state": state},
        "matchers": list(matchers),
        "startsAt": "2026-11-22T00:00:00Z",
        "endsAt": "2026-11-23T00:00:00Z",
        "updatedAt": "2026-11-22T00:00:00Z",
        "createdBy": "ops",
        "comment": "maintenance",
    }


def test_only_active_silences_count() -> None:
    body = [
        silence("a", "active", {"name": "alertname", "value": "X", "isRegex": False}),
        silence("b", "expired", {"name": "alertname", "value": "Y", "isRegex": False}),
        silence("c", "pending", {"name": "alertname", "value": "Z", "isRegex": False}),
    ]
    assert parse_silences(body) == [Silence("a", (Matcher("alertname", "X"),))]


@pytest.mark.parametrize("body", [{"silences": []}, [{"id": "a"}], [None]])
def test_malformed_silences_raise(body: Any) -> None:
    with pytest.raises(AlertmanagerError, match="malformed silences"):
        parse_silences(body)


def by_host(answers: dict[str, Handler]) -> Handler:
    return lambda request: answers[request.url.host](request)


async def test_silenced_alerts_do_not_block(
    prometheus: Callable[[Handler], list[httpx2.Request]],
) -> None:
    alerts = vector(("NodeDown", "firing"), ("DiskFull", "pending"), ("Watchdog", "firing"))
    silences = [
        silence("a", "active", {"name": "alertname", "value": "Disk.*|Watchdog", "isRegex": True}),
        silence("b", "expired", {"name": "alertname", "value": "NodeDown", "isRegex": False}),
    ]
    seen = prometheus(by_host({"prom": json_response(alerts), "am": json_response(silences)}))
    names = await active_alerts(
        "http://prom", None, False, False, 5, alertmanager_url="http://am/x/"
    )
    assert names == ["NodeDown"]
    assert str(seen[1].url) == "http://am/x/api/v2/silences"


async def test_alertmanager_is_not_asked_when_nothing_blocks(
    prometheus: Callable[[Handler], list[httpx2.Request]],
) -> None:
    seen = prometheus(json_response(vector()))
    assert (
        await active_alerts("http://prom", None, False, False, 5, alertmanager_url="http://am")
        == []
    )
    assert len(seen) == 1


async def test_alertmanager_failure_blocks(
    prometheus: Callable[[Handler], list[httpx2.Request]],
) -> None:
    prometheus(
        by_host(
            {
                "prom": json_response(vector(("NodeDown", "firing"))),
                "am": json_response("gone", 503),
            }
        )
    )
    reason = await PrometheusBlocker("http://prom", alertmanager_url="http://am").check()
    assert reason == "alertmanager query failed: HTTP 503 from http://am/api/v2/silences"


async def test_blocking_queries_block_on_any_sample(
    prometheus: Callable[[Handler], list[httpx2.Request]],
) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        query = request.url.params["query"]
        samples = [{"metric": {}, "value": [1.0, "1"]}] * (2 if query == "busy" else 0)
        body = {"status": "success", "data": {"resultType": "vector", "result": samples}}
        return httpx2.Response(200, content=json.dumps(body).encode())

    prometheus(answer)
    assert await QueryBlocker("http://prom", ["idle"]).check() is None
    blocker = QueryBlocker("http://prom", ["idle", "busy"])
    assert await blocker.check() == "blocking query returned 2 series: busy"


async def test_a_failing_blocking_query_blocks(unused_tcp_port: int) -> None:
    reason = await QueryBlocker(f"http://127.0.0.1:{unused_tcp_port}", ["up"], timeout=2).check()
    assert reason is not None
    assert reason.startswith("blocking query failed (up): ")


def test_alertmanager_url_from_config() -> None:
    config = Config(node_id="n1", prometheus_url="http://prom", alertmanager_url="http://am")
    blocker = PrometheusBlocker.from_config(config)
    assert blocker is not None
    assert blocker.alertmanager_url == "http://am"
