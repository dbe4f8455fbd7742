"""Start-up checks of flag values that Kubernetes or the notifier would refuse later.

Each check takes the flag's text and returns it (or raises ValueError with the reason
and the accepted form); :mod:`kured.cli` turns that into the one-line exit-2 error
naming the flag. They run before any connection, so a typo in a manifest shows up
as a crash-looping pod with a clear log line, not as a lock named ``kube-system/``, a
drain that fails at the first reboot, or a notification that silently never arrives.
"""

from __future__ import annotations

import re
from functools import cache
from urllib.parse import urlsplit

from kured.apprise_schemes import KNOWN as APPRISE_SCHEMES
from kured.k8snames import (
    DNS_LABEL_FORM,
    DNS_SUBDOMAIN_FORM,
    QUALIFIED_NAME_FORM,
    is_dns_label,
    is_dns_subdomain,
    is_qualified_name,
)
from kured.notify import SHOUTRRR_SCHEMES, translate_notify_url
from kured.selector import FORM as SELECTOR_FORM
from kured.selector import SelectorError, check_label_selector

# Plain web addresses: apprise recognises the webhook URLs of many services (Discord,
# Teams workflows, Slack …) as they are.
_WEB_SCHEMES = frozenset({"http", "https"})
_NOTIFY_FORM = (
    "use a shoutrrr URL (slack, smtp, discord, telegram, gotify, ntfy, rocketchat, generic) "
    "or an apprise URL (https://appriseit.com/services/)"
)
_FLAG_PREFIX = re.compile(r"^--notify-url:? ")


def qualified_name(text: str, what: str) -> str:
    """Label, annotation and taint keys: ``[prefix/]name``."""
    if not is_qualified_name(text):
        raise ValueError(f'"{text}" is not a valid {what}; {QUALIFIED_NAME_FORM}')
    return text


def namespace_name(text: str) -> str:
    """``--ds-namespace``: a namespace name (an RFC 1123 label)."""
    if not is_dns_label(text):
        raise ValueError(f'"{text}" is not a namespace name; use {DNS_LABEL_FORM}')
    return text


def object_name(text: str) -> str:
    """``--ds-name``: the DaemonSet's name (an RFC 1123 subdomain)."""
    if not is_dns_subdomain(text):
        raise ValueError(f'"{text}" is not a DaemonSet name; use {DNS_SUBDOMAIN_FORM}')
    return text


def label_selector(text: str) -> str:
    """Every pod-selector flag: the API server's label-selector syntax (empty = all)."""
    try:
        return check_label_selector(text)
    except SelectorError as error:
        raise ValueError(f'"{text}" is not a label selector ({error}); {SELECTOR_FORM}') from None


def notify_url(url: str) -> str:
    """A URL kured can deliver to: a shoutrrr service it translates, or apprise's own.

    Only the scheme is named in the error: the rest of a notification URL is a secret.
    Apprise itself is asked only about a scheme that is neither shoutrrr's nor in
    :data:`kured.apprise_schemes.KNOWN`, because listing its schemes loads all of its
    plugins (measured: about 1 s and 20 MiB more at start-up).
    """
    if not url:
        return url
    try:
        translate_notify_url(url)
    except ValueError as error:
        raise ValueError(_FLAG_PREFIX.sub("", str(error))) from None
    scheme = urlsplit(url).scheme.lower()
    listed = SHOUTRRR_SCHEMES | _WEB_SCHEMES | APPRISE_SCHEMES
    if scheme not in listed and scheme not in _apprise_schemes():
        raise ValueError(
            f"{scheme}:// is a scheme neither shoutrrr nor apprise knows; {_NOTIFY_FORM}"
        )
    return url


@cache
def _apprise_schemes() -> frozenset[str]:
    """What the installed apprise knows now (a newer one than the list was made from)."""
    from apprise.manager_plugins import (  # noqa: PLC0415 - heavy; see notify_url
        NotificationManager,
    )

    schemes: list[str] = NotificationManager().schemas()  # type: ignore[no-untyped-call]
    return frozenset(scheme.lower() for scheme in schemes)
