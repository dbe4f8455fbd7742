"""The Prometheus alert blocker: active alerts hold a reboot back.

Same question Go kured asks: an instant query of ``ALERTS`` against ``--prometheus-url``.
An alert blocks unless the filter says otherwise (see :func:`blocks`). If the question
cannot be answered — connection refused, timeout, an HTTP error, a body that is not a
Prometheus vector — the node counts as blocked: rebooting blind is the unsafe choice.

With ``--alertmanager-url``, an alert that an active Alertmanager silence covers does not
block (kured#499): Prometheus' ``ALERTS`` knows nothing of silences, so the silences
(API v2 ``/api/v2/silences``) are matched against each alert's labels here, the way
Alertmanager matches them. That also covers pending alerts, which Alertmanager never sees.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2

from kured.connections import Replaying

if TYPE_CHECKING:
    from kured.config import Config


class QueryError(Exception):
    """Prometheus or Alertmanager gave no usable answer."""


class PrometheusQueryError(QueryError):
    """A Prometheus query gave no usable answer."""


class AlertmanagerError(QueryError):
    """Alertmanager's silences could not be read."""


def blocks(
    name: str, state: str, regex: re.Pattern[str] | None, match_only: bool, firing_only: bool
) -> bool:
    """Whether one active alert holds the reboot back, by Go kured's rules.

    ``--alert-filter-regexp`` alone names alerts to *ignore*; with
    ``--alert-filter-match-only`` it names the *only* alerts that count.
    ``--alert-firing-only`` ignores alerts still pending.
    """
    if firing_only and state != "firing":
        return False
    return regex is None or bool(regex.search(name)) == match_only


def _samples(body: Any) -> list[Mapping[str, Any]]:
    """The vector of an instant-query response, or PrometheusQueryError."""
    try:
        if body["status"] != "success":
            raise PrometheusQueryError(f"{body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] != "vector":
            raise PrometheusQueryError(f"unexpected result type {data['resultType']!r}")
        result = data["result"]
        if not isinstance(result, list):
            raise TypeError("result is not a list")
        return result
    except (KeyError, TypeError, AttributeError) as err:
        raise PrometheusQueryError(f"malformed response: {err!r}") from err


def _active(samples: Iterable[Mapping[str, Any]]) -> Iterable[dict[str, str]]:
    """The labels of samples that are alerts with a non-zero value."""
    for sample in samples:
        labels = sample.get("metric", {})
        if labels.get("alertname") is not None and float(sample["value"][1]) != 0:
            yield dict(labels)


async def query_alerts(url: str, timeout: float) -> list[Mapping[str, Any]]:  # noqa: ASYNC109
    """The raw ``ALERTS`` vector from the Prometheus at ``url`` (which may have a path)."""
    return await instant_query(url, "ALERTS", timeout)


async def instant_query(url: str, query: str, timeout: float) -> list[Mapping[str, Any]]:  # noqa: ASYNC109
    """The samples of an instant PromQL query (an empty list when nothing matches)."""
    endpoint = f"{url.rstrip('/')}/api/v1/query"
    return _samples(await _get_json(endpoint, {"query": query}, timeout, PrometheusQueryError))


async def _get_json(
    endpoint: str,
    params: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - also sets the HTTP client's connect/read timeouts
    error: type[QueryError],
) -> Any:
    """GET a JSON body; every failure is ``error`` with a one-line reason."""
    try:
        transport = Replaying()  # a failed GET is sent once more, as for the API server
        async with (
            asyncio.timeout(timeout),
            httpx2.AsyncClient(timeout=timeout, transport=transport) as client,
        ):
            response = await client.get(endpoint, params=dict(params))
            response.raise_for_status()
            return response.json()
    except httpx2.HTTPStatusError as err:
        raise error(f"HTTP {err.response.status_code} from {endpoint}") from err
    except (TimeoutError, httpx2.TimeoutException) as err:
        raise error(f"no answer from {endpoint} within {timeout:g}s") from err
    except (httpx2.HTTPError, ValueError) as err:
        raise error(f"{endpoint}: {str(err) or type(err).__name__}") from err


@dataclass(frozen=True)
class Matcher:
    """One matcher of a silence, with Alertmanager's semantics: a regex must match the
    whole value, a missing label is the empty string, ``is_equal`` False negates."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if not self.is_regex:
            return (actual == self.value) == self.is_equal
        try:
            found = re.fullmatch(self.value, actual) is not None
        except re.error:  # Go's RE2 syntax Python cannot read: cover nothing, keep blocking
            return False
        return found == self.is_equal


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]

    def covers(self, labels: Mapping[str, str]) -> bool:
        """An alert is silenced when every matcher (there is at least one) matches its labels."""
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)


def parse_silences(body: Any) -> list[Silence]:
    """The active silences of a ``GET /api/v2/silences`` answer."""
    try:
        return [
            Silence(
                str(raw["id"]),
                tuple(
                    Matcher(
                        str(m["name"]),
                        str(m["value"]),
                        bool(m["isRegex"]),
                        m.get("isEqual", True) is not False,
                    )
                    for m in raw["matchers"]
                ),
            )
            for raw in body
            if raw["status"]["state"] == "active"
        ]
    except (KeyError, TypeError, AttributeError) as err:
        raise AlertmanagerError(f"malformed silences: {err!r}") from err


async def active_silences(url: str, timeout: float) -> list[Silence]:  # noqa: ASYNC109
    """The silences in force now at the Alertmanager at ``url`` (which may have a path)."""
    endpoint = f"{url.rstrip('/')}/api/v2/silences"
    return parse_silences(await _get_json(endpoint, {}, timeout, AlertmanagerError))


def _silenced(alert: Mapping[str, str], silences: Iterable[Silence]) -> bool:
    """Alertmanager sees an alert's labels without Prometheus' ``__name__`` and ``alertstate``."""
    labels = {k: v for k, v in alert.items() if k not in ("__name__", "alertstate")}
    return any(silence.covers(labels) for silence in silences)


async def active_alerts(
    url: str,
    regex: re.Pattern[str] | None,
    match_only: bool,
    firing_only: bool,
    timeout: float,  # noqa: ASYNC109 - also sets the HTTP client's connect/read timeouts
    *,
    alertmanager_url: str = "",
) -> list[str]:
    """Sorted, distinct names of the alerts that block a reboot now.

    Alertmanager is asked for its silences only when some alert would block. Raises
    :class:`QueryError` when either cannot be asked or answers nonsense.
    """
    try:
        active = list(_active(await query_alerts(url, timeout)))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise PrometheusQueryError(f"malformed sample: {err!r}") from err
    blocking = [
        alert
        for alert in active
        if blocks(alert["alertname"], alert.get("alertstate", ""), regex, match_only, firing_only)
    ]
    if blocking and alertmanager_url:
        silences = await active_silences(alertmanager_url, timeout)
        blocking = [alert for alert in blocking if not _silenced(alert, silences)]
    return sorted({alert["alertname"] for alert in blocking})


class PrometheusBlocker:
    """Answers "may this node reboot now?" from Prometheus alerts."""

    kind = "prometheus"

    def __init__(
        self,
        url: str,
        regex: re.Pattern[str] | None = None,
        match_only: bool = False,
        firing_only: bool = False,
        timeout: float = 10.0,
        *,
        alertmanager_url: str = "",
    ) -> None:
        self.url = url
        self.regex = regex
        self.match_only = match_only
        self.firing_only = firing_only
        self.timeout = timeout
        self.alertmanager_url = alertmanager_url

    @classmethod
    def from_config(cls, config: Config, timeout: float = 10.0) -> PrometheusBlocker | None:
        """The blocker ``--prometheus-url`` asks for, or None when it is unset."""
        if not config.prometheus_url:
            return None
        return cls(
            config.prometheus_url,
            config.alert_filter_regexp,
            config.alert_filter_match_only,
            config.alert_firing_only,
            timeout,
            alertmanager_url=config.alertmanager_url,
        )

    async def check(self) -> str | None:
        """A reason not to reboot, or None when no alert blocks."""
        try:
            names = await active_alerts(
                self.url,
                self.regex,
                self.match_only,
                self.firing_only,
                self.timeout,
                alertmanager_url=self.alertmanager_url,
            )
        except AlertmanagerError as err:
            return f"alertmanager query failed: {err}"
        except PrometheusQueryError as err:
            return f"prometheus query failed: {err}"
        return f"alerts firing: {', '.join(names)}" if names else None
