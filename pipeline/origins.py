"""A tenant's allowed browser origins (`allowed_origins` in the tenants file): parsed and checked once at
load, matched per request against the `Origin` header a browser sends."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.errors import ConfigError

ANY = "*"
# Browsers omit the scheme's default port from an origin (RFC 6454 §6.2), so the file's entries do too.
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EXAMPLE = 'allowed_origins = ["https://shop.example", "https://*.shop.example"]'


@dataclass(frozen=True, slots=True)
class AllowedOrigins:
    """Exact origins, and wildcard ones (`https://*.shop.example`: any subdomain, same scheme and port).
    `any_origin` (the default, or `"*"` in the list) allows every origin."""

    any_origin: bool = True
    exact: frozenset[str] = frozenset()
    # (scheme + "://", "." + parent domain, ":port" or "") per wildcard entry
    wildcards: tuple[tuple[str, str, str], ...] = ()

    def allows(self, origin: str) -> bool:
        if self.any_origin:
            return True
        origin = origin.lower()
        if origin in self.exact:
            return True
        for scheme, parent, port in self.wildcards:
            if not origin.startswith(scheme):
                continue
            host, _, rest = origin[len(scheme) :].partition(":")
            if host.endswith(parent) and (":" + rest if rest else "") == port:
                return True
        return False


ALLOW_ANY = AllowedOrigins()


def parse(values: object, where: str) -> AllowedOrigins:
    """The `allowed_origins` entry of a tenant: absent means any origin."""
    if values is None:
        return ALLOW_ANY
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: allowed_origins must be a list of origins, e.g. {_EXAMPLE}")
    if not values:
        # An empty list would refuse every browser: more likely a slip than an intent, so say so.
        raise ConfigError(f"{where}: allowed_origins is empty; leave it out to allow any origin")
    return _compile(_normalize(value, where) for value in values)


def _compile(entries: Iterable[str]) -> AllowedOrigins:
    exact: set[str] = set()
    wildcards: list[tuple[str, str, str]] = []
    for entry in entries:
        if entry == ANY:
            return ALLOW_ANY
        scheme, _, authority = entry.partition("://")
        if authority.startswith("*."):
            host, colon, port = authority[1:].partition(":")
            wildcards.append((scheme + "://", host, colon + port))
        else:
            exact.add(entry)
    return AllowedOrigins(any_origin=False, exact=frozenset(exact), wildcards=tuple(wildcards))


def _normalize(value: str, where: str) -> str:
    """An origin as a browser serialises it: lower case, no default port, no path."""
    text = value.strip().lower()
    if text == ANY:
        return ANY
    wildcard = "://*." in text
    parsed = urlsplit(text.replace("://*.", "://wildcard.", 1) if wildcard else text)
    problem = None
    if parsed.scheme not in _DEFAULT_PORTS:
        problem = "must start with http:// or https://"
    elif not parsed.hostname or parsed.username is not None or "*" in parsed.netloc:
        problem = "needs a host (a wildcard only as its first label: https://*.shop.example)"
    elif parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        problem = "is an origin: scheme, host and port only, no path"
    if problem is not None:
        raise ConfigError(f"{where}: allowed_origins entry {value!r} {problem}; e.g. {_EXAMPLE}")
    try:
        port = parsed.port
    except ValueError as exc:
        raise ConfigError(f"{where}: allowed_origins entry {value!r} has a bad port") from exc
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets in an origin
    if wildcard:
        host = "*." + host.removeprefix("wildcard.")
    suffix = f":{port}" if port is not None and port != _DEFAULT_PORTS[parsed.scheme] else ""
    return f"{parsed.scheme}://{host}{suffix}"
