"""Checks of Kubernetes names given on the command line, with the API server's rules.

Namespaces are RFC 1123 DNS labels, and most other object names (Secrets, ServiceAccounts,
Leases) are RFC 1123 DNS subdomains. A bad name fails at start-up with a message naming the
option, instead of as a 4xx response on the first request, or as an empty listing.
"""

from __future__ import annotations

import re

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_SUBDOMAIN_LENGTH = 253


def check_namespace(option: str, name: str) -> str:
    """Return `name`, or raise ValueError naming `option` when it is not a DNS label."""
    if not DNS_LABEL.fullmatch(name):
        raise ValueError(f"{option} {name!r} is not a valid namespace name: use at most 63 "
                         "lowercase letters, digits and '-', starting and ending with a letter "
                         "or digit")
    return name


def check_object_name(option: str, name: str) -> str:
    """Return `name`, or raise ValueError naming `option` when it is not a DNS subdomain."""
    if len(name) > MAX_SUBDOMAIN_LENGTH or not DNS_SUBDOMAIN.fullmatch(name):
        raise ValueError(f"{option} {name!r}: expected a Kubernetes object name (lowercase "
                         "letters, digits, '-' and '.', starting and ending with a letter "
                         "or digit)")
    return name
