"""A tenant's allowed_origins: entries parsed as a browser serialises origins, matched exactly or by a
leading wildcard label, refused at load when they are not origins; absent means any origin. Pure."""

from __future__ import annotations

import re

import pytest

from pipeline import origins, tenants
from pipeline.errors import ConfigError

LISTED = [
    "https://Shop.Example:443/",
    "http://127.0.0.1:8080",
    "https://*.shop.example",
    "http://[::1]:9000",
    "https://checkout.example:8443",
]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        pytest.param("https://shop.example", True, id="default-port-and-case-normalised"),
        pytest.param("https://www.shop.example", True, id="wildcard-subdomain"),
        pytest.param("https://a.b.shop.example", True, id="wildcard-deeper-subdomain"),
        pytest.param("https://evilshop.example", False, id="wildcard-needs-a-dot"),
        pytest.param("http://www.shop.example", False, id="wildcard-keeps-its-scheme"),
        pytest.param("https://www.shop.example:8443", False, id="wildcard-keeps-its-port"),
        pytest.param("http://127.0.0.1:8080", True, id="exact-with-port"),
        pytest.param("http://127.0.0.1:8081", False, id="other-port"),
        pytest.param("http://[::1]:9000", True, id="ipv6-literal"),
        pytest.param("https://checkout.example:8443", True, id="non-default-port-kept"),
        pytest.param("https://checkout.example", False, id="port-matters"),
        pytest.param("null", False, id="opaque-origin"),
        pytest.param("HTTPS://SHOP.EXAMPLE", True, id="case-insensitive"),
    ],
)
def test_listed_origins(origin: str, allowed: bool) -> None:
    assert origins.parse(LISTED, "tenant t").allows(origin) is allowed


@pytest.mark.parametrize("listed", [None, ["*"], ["https://shop.example", "*"]])
def test_absent_or_star_allows_any_origin(listed: list[str] | None) -> None:
    policy = origins.parse(listed, "tenant t")
    assert policy.any_origin
    assert all(policy.allows(o) for o in ("https://anything.example", "null", "http://127.0.0.1:1"))


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        pytest.param([], "empty", id="empty-list"),
        pytest.param("https://shop.example", "list of origins", id="not-a-list"),
        pytest.param([42], "list of origins", id="not-strings"),
        pytest.param(["shop.example"], "http:// or https://", id="no-scheme"),
        pytest.param(["ftp://shop.example"], "http:// or https://", id="other-scheme"),
        pytest.param(["https://shop.example/cart"], "no path", id="path"),
        pytest.param(["https://shop.example/?a=1"], "no path", id="query"),
        pytest.param(["https://user@shop.example"], "needs a host", id="userinfo"),
        pytest.param(["https://shop.*.example"], "first label", id="inner-wildcard"),
        pytest.param(["https://"], "needs a host", id="no-host"),
        pytest.param(["https://shop.example:99999"], "bad port", id="bad-port"),
    ],
)
def test_what_is_not_an_origin_is_refused_at_load(value: object, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        origins.parse(value, "tenant t")


def test_the_tenants_file_carries_allowed_origins() -> None:
    directory = tenants.parse(
        '[[tenants]]\nid = "a"\nallowed_origins = ["https://shop-a.example"]\n\n[[tenants]]\nid = "b"\n',
        {},
    )
    a, b = directory.by_id("a"), directory.by_id("b")
    assert a is not None and b is not None
    assert a.allowed_origins.allows("https://shop-a.example")
    assert not a.allowed_origins.allows("https://shop-b.example")
    assert b.allowed_origins.any_origin  # the default


def test_a_bad_entry_names_its_tenant() -> None:
    with pytest.raises(ConfigError, match=re.escape("tenant a: allowed_origins entry 'shop-a.example'")):
        tenants.parse('[[tenants]]\nid = "a"\nallowed_origins = ["shop-a.example"]\n', {})
