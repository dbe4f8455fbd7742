"""Kubernetes' naming rules (k8s.io/apimachinery validation), as pure checks.

Kured refuses a bad name at start-up instead of sending it to the API server, whose
answer would only come at the first reboot (a label, taint or selector) or as an
unexplained 404/422 (the DaemonSet's name and namespace). Each check returns a bool;
the callers word the error for the flag at hand.
"""

from __future__ import annotations

import re

_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

LABEL_NAME_FORM = (
    'up to 63 letters, digits, "-", "_", "." starting and ending with a letter or digit'
)
QUALIFIED_NAME_FORM = (
    "use [prefix/]name: a DNS prefix like example.com "
    'and a name of up to 63 letters, digits, "-", "_", "."'
)
DNS_LABEL_FORM = (
    'up to 63 lower-case letters, digits and "-", starting and ending with a letter or digit'
)
DNS_SUBDOMAIN_FORM = (
    'up to 253 lower-case letters, digits, "-" and ".", starting and ending with a letter or digit'
)


def is_label_value(text: str) -> bool:
    """A label value (also a qualified name's name part, there non-empty): empty allowed."""
    return len(text) <= 63 and _LABEL_NAME.fullmatch(text) is not None


def is_qualified_name(text: str) -> bool:
    """Label, annotation and taint keys: ``[prefix/]name``, the prefix a DNS subdomain."""
    prefix, slash, name = text.rpartition("/")
    if not name or not is_label_value(name):
        return False
    return not slash or is_dns_subdomain(prefix)


def is_dns_label(text: str) -> bool:
    """RFC 1123 label: namespace names."""
    return len(text) <= 63 and _DNS_LABEL.fullmatch(text) is not None


def is_dns_subdomain(text: str) -> bool:
    """RFC 1123 subdomain: most object names (DaemonSets, Leases) and key prefixes."""
    return len(text) <= 253 and _DNS_SUBDOMAIN.fullmatch(text) is not None
