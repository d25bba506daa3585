"""CORS on the browser-facing routes (Topsort, Retail Rocket, the Impression API): the preflight's
answer, the headers every reply carries, and each tenant's allowed origins. Topsort's SDK and tracking
script and the Impression API are called from shoppers' browsers on the shop's own origin, and shops
post Retail Rocket's tracking methods from pages too (its documents would keep the apiKey off pages:
README). DFINERY's S2S API is called from servers only and gets none of it: without CORS a browser
cannot send its bearer token cross-origin, which keeps a server token out of web pages."""

from __future__ import annotations

from typing import Final

from pipeline.formats.base import Problem, Rejection, Reply, VendorFormat
from pipeline.tenants import Tenant

BROWSER_SOURCES: Final = frozenset({"topsort", "retailrocket", "impression"})
# The routes whose credentials travel in the query (Retail Rocket's apiKey and partnerId, the Impression
# API's ?token=), which a preflight carries too: only there can a preflight name its tenant. A preflight
# never carries Authorization (Topsort, the Impression API's bearer JWT).
QUERY_CREDENTIAL_SOURCES: Final = frozenset({"retailrocket", "impression"})

# The route label of preflights in eventpipe_receiver_requests_total, and the rejection reason of a
# refused origin in eventpipe_receiver_rejections_total.
PREFLIGHT_ROUTE: Final = "preflight"
ORIGIN_REASON: Final = "origin"

ALLOW_METHODS: Final = "POST"
# What the SDKs send beyond the CORS-safelisted headers: Topsort's @topsort/sdk and analytics.js send
# Authorization, Content-Type: application/json, Accept and X-UA (in place of User-Agent, which a page
# cannot set); a page may compress its body or name its request. Listed, not "*": "*" never covers
# Authorization.
ALLOW_HEADERS: Final = "Authorization, Content-Type, Content-Encoding, Accept, X-UA, X-Request-Id"
# Response headers a page may read beyond the safelisted ones: Retry-After on 429 and 503, so an SDK can
# back off; the request id and eventpipe's detail of a refusal, for the shop's developers.
EXPOSE_HEADERS: Final = "Retry-After, X-Request-Id, X-Eventpipe-Error"
# Chromium caps a preflight's cache at 2 hours (Firefox at 24): more would buy nothing in Chrome.
MAX_AGE_SECONDS: Final = 7200

ERROR_HEADER: Final = "X-Eventpipe-Error"
ORIGIN_REFUSED: Final = "origin not allowed for this tenant"


class OriginRefused(Rejection):
    """A request from an origin its tenant does not allow: 403 in the vendor's shape. The vendors'
    bodies name no origin (their 403 message speaks of keys), so the reason travels in ERROR_HEADER."""

    def __init__(self) -> None:
        super().__init__(Problem.FORBIDDEN, ORIGIN_REFUSED, "Origin")


def browser_facing(source: str) -> bool:
    return source in BROWSER_SOURCES


def check_origin(tenant: Tenant | None, origin: str | None) -> None:
    """Refuse a request whose tenant does not allow its origin. A request without Origin is not from a
    browser page (browsers send it on every cross-origin request and every POST) and is not refused:
    allowed_origins keeps other sites' pages from using a tenant's public key, it is not authentication,
    and any other client can send whatever Origin it likes."""
    if origin is not None and tenant is not None and not tenant.allowed_origins.allows(origin):
        raise OriginRefused


def reply_headers(origin: str | None, rejection: Rejection | None) -> dict[str, str]:
    """The CORS headers of a reply to an actual request, errors included, so an SDK can read the status
    and body and tell a final refusal from one to retry. A refused origin is answered with its own
    Access-Control-Allow-Origin too: without it the browser reports a network error, which Topsort's
    analytics.js retries as if the request never arrived; with it the 403 is seen, and is final."""
    headers = {"Vary": "Origin"}
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if isinstance(rejection, OriginRefused):
        headers[ERROR_HEADER] = ORIGIN_REFUSED
    return headers


def preflight(fmt: VendorFormat, origin: str | None, tenant: Tenant | None) -> Reply:
    """The answer to OPTIONS on a browser-facing route. It costs no Kafka write and no body. `tenant` is
    the one its query credentials name, when they do and are valid; a preflight from an origin that
    tenant does not allow is refused in the vendor's shape and without Access-Control-Allow-Origin, so
    the browser never sends the request. Every other preflight is allowed: its tenant is unknown, and
    the request itself is checked once its credentials say whose it is."""
    if origin is None:
        # Not a CORS preflight (browsers always send Origin with one): say what the route takes.
        return Reply(204, b"", None, {"Allow": "OPTIONS, POST"})
    if tenant is not None and not tenant.allowed_origins.allows(origin):
        refusal = fmt.error(OriginRefused())
        headers = {**refusal.headers, "Vary": "Origin", ERROR_HEADER: ORIGIN_REFUSED}
        return Reply(refusal.status, refusal.body, refusal.content_type, headers)
    return Reply(
        204,
        b"",
        None,
        {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
            "Vary": "Origin",
        },
    )
