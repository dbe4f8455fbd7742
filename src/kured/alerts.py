"""The Prometheus alert blocker: active alerts hold a reboot back.

Same question Go kured asks: an instant query of ``ALERTS`` against ``--prometheus-url``.
An alert blocks unless the filter says otherwise (see :func:`blocks`). If the question
cannot be answered — connection refused, timeout, an HTTP error, a body that is not a
Prometheus vector — the node counts as blocked: rebooting blind is the unsafe choice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    from kured.config import Config


class PrometheusQueryError(Exception):
    """The ``ALERTS`` query gave no usable answer."""


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


def _active(samples: Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, str]]:
    """(alertname, alertstate) of samples that are alerts with a non-zero value."""
    for sample in samples:
        labels = sample.get("metric", {})
        name = labels.get("alertname")
        if name is not None and float(sample["value"][1]) != 0:
            yield name, labels.get("alertstate", "")


async def query_alerts(url: str, timeout: float) -> list[Mapping[str, Any]]:  # noqa: ASYNC109
    """The raw ``ALERTS`` vector from the Prometheus at ``url`` (which may have a path)."""
    return await instant_query(url, "ALERTS", timeout)


async def instant_query(url: str, query: str, timeout: float) -> list[Mapping[str, Any]]:  # noqa: ASYNC109
    """The samples of an instant PromQL query (an empty list when nothing matches)."""
    endpoint = f"{url.rstrip('/')}/api/v1/query"
    try:
        async with asyncio.timeout(timeout), httpx2.AsyncClient(timeout=timeout) as client:
            response = await client.get(endpoint, params={"query": query})
            response.raise_for_status()
            body = response.json()
    except httpx2.HTTPStatusError as err:
        raise PrometheusQueryError(f"HTTP {err.response.status_code} from {endpoint}") from err
    except (TimeoutError, httpx2.TimeoutException) as err:
        raise PrometheusQueryError(f"no answer from {endpoint} within {timeout:g}s") from err
    except (httpx2.HTTPError, ValueError) as err:
        raise PrometheusQueryError(f"{endpoint}: {str(err) or type(err).__name__}") from err
    return _samples(body)


async def active_alerts(
    url: str,
    regex: re.Pattern[str] | None,
    match_only: bool,
    firing_only: bool,
    timeout: float,  # noqa: ASYNC109 - also sets the HTTP client's connect/read timeouts
) -> list[str]:
    """Sorted, distinct names of the alerts that block a reboot now.

    Raises PrometheusQueryError when Prometheus cannot be asked or answers nonsense.
    """
    try:
        active = set(_active(await query_alerts(url, timeout)))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise PrometheusQueryError(f"malformed sample: {err!r}") from err
    return sorted(
        {name for name, state in active if blocks(name, state, regex, match_only, firing_only)}
    )


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
    ) -> None:
        self.url = url
        self.regex = regex
        self.match_only = match_only
        self.firing_only = firing_only
        self.timeout = timeout

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
        )

    async def check(self) -> str | None:
        """A reason not to reboot, or None when no alert blocks."""
        try:
            names = await active_alerts(
                self.url, self.regex, self.match_only, self.firing_only, self.timeout
            )
        except PrometheusQueryError as err:
            return f"prometheus query failed: {err}"
        return f"alerts firing: {', '.join(names)}" if names else None
