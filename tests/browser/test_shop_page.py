"""A shop page in headless Chromium, served from another origin than the receiver, reports through the
vendors' own clients: Topsort's official SDK (impressions, clicks, purchases, pageviews, with the
preflight its Authorization and JSON need); and the Retail Rocket tracking API's and the Impression API's
documented bodies posted from the page with fetch (JSON, so preflighted) and with sendBeacon (text/plain,
credentials in the query). The rows must land in the sink through the whole pipeline; a page on an
origin its tenant does not allow is refused and nothing of it is stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.tenants import mint_jwt
from producers.receiver import cors
from tests.browser import tracking
from tests.browser.chromium import Browser, Page, Request, connect, open_page
from tests.browser.shop import Shop
from tests.corpus import API_KEY, BAD_KEY, jwt_secret
from tests.integration.conftest import Pipeline, query
from tests.kafka_util import record_count
from tests.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

ROWS_SECONDS = 60.0
SDK_OK = {"result": {"ok": True, "retry": False}}


def _sink_kind(pipeline: Pipeline) -> str:
    return pipeline.settings.sink.split(":", 1)[0]


def _receiver(pipeline: Pipeline) -> str:
    return str(pipeline.client.make_url("")).rstrip("/")


async def _rows(pipeline: Pipeline, tag: str) -> list[tuple[Any, ...]]:
    return await query(
        pipeline.settings.sink,
        "SELECT source, event_type, event_id, anonymous_id, product_id, price FROM events "
        "WHERE anonymous_id LIKE $1 OR user_id LIKE $1 ORDER BY source, event_type, event_id",
        f"%-{tag}",
    )


async def _answered(page: Page, receiver: str, beacons: int, seconds: float = 30.0) -> list[Request]:
    """The page's requests to the receiver once each has its reply (or its failure). Beacons leave
    after the script has finished, so the wait is for them to have started too."""

    def done() -> bool:
        requests = _to_receiver(page.requests(), receiver)
        started = sum(r.kind == "Ping" for r in requests)
        return started >= beacons and all(r.status is not None or r.failure is not None for r in requests)

    await wait_for(done, seconds, lambda: "\n".join(r.describe() for r in page.requests()))
    return _to_receiver(page.requests(), receiver)


def _to_receiver(requests: list[Request], receiver: str) -> list[Request]:
    return [r for r in requests if r.url.startswith(receiver)]


def _report(figures: list[str], title: str, requests: list[Request], results: list[dict[str, Any]]) -> None:
    figures.append(title)
    figures.extend(f"    sent: {r.describe()}" for r in requests)
    figures.extend(f"    page saw: {r}" for r in results)


def _other_vendors(receiver: str, tag: str, now: datetime, keepalive: bool = False) -> list[Any]:
    """A page's Retail Rocket and Impression API calls: fetch with JSON, and beacons."""
    token = mint_jwt("shop-a", jwt_secret())
    impressions = tracking.corpus_body("impression-seed-sample", tag, now)
    return [
        tracking.fetch(
            "retailrocket view, fetch JSON",
            tracking.retailrocket_url(receiver, "view"),
            {"Content-Type": "application/json"},
            tracking.corpus_body("retailrocket-view", tag, now),
            keepalive=keepalive,
        ),
        tracking.beacon(
            "retailrocket addToBasket, beacon",
            tracking.retailrocket_url(receiver, "addToBasket"),
            tracking.corpus_body("retailrocket-addToBasket", tag, now),
        ),
        tracking.fetch(
            "impression imp, fetch JSON with bearer JWT",
            f"{receiver}/upload/impression",
            {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            impressions,
        ),
        tracking.beacon(
            "impression click, beacon with ?token=",
            f"{receiver}/upload/impression?token={token}",
            tracking.as_click(impressions),
        ),
    ]


async def _browser_version(browser: Browser) -> str:
    async with connect(browser) as cdp:
        version = await cdp.send("Browser.getVersion")
    return f"{browser.version} (DevTools: {version['product']})"


async def test_a_shop_page_on_another_origin_reports_through_the_vendors_clients(
    pipeline: Pipeline, shop: Shop, browser: Browser, topsort_sdk_version: str, figures: list[str]
) -> None:
    await pipeline.start_consumer()
    receiver = _receiver(pipeline)
    assert shop.origin != receiver
    tag = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    shop.plan(
        [
            tracking.topsort_sdk(
                "topsort sdk reportEvent", receiver, API_KEY, tracking.readme_event(tag, now)
            ),
            tracking.topsort_sdk(
                "topsort sdk, wrong key", receiver, BAD_KEY, tracking.readme_event(tag + "x", now)
            ),
            *_other_vendors(receiver, tag, now, keepalive=True),
        ]
    )
    expected = sorted(
        [("topsort", t) for t in ("impression", "click", "purchase", "page_view")]
        + [("retailrocket", "product_view"), ("retailrocket", "add_to_cart")]
        + [("impression", "impression")] * 2
        + [("impression", "click")] * 2
    )
    async with connect(browser) as cdp, open_page(cdp, shop.url) as page:
        results = await page.result()
        requests = await _answered(page, receiver, beacons=2)

        async def all_stored() -> bool:
            return len(await _rows(pipeline, tag)) >= len(expected)

        await wait_for(all_stored, ROWS_SECONDS, "the page's events in the sink")

    by_step = {r["step"]: r for r in results}
    assert {k: v for k, v in by_step["topsort sdk reportEvent"].items() if k != "step"} == SDK_OK
    # Topsort's 401, read by the SDK through CORS: a final error, not one to retry.
    refused = by_step["topsort sdk, wrong key"]["error"]
    assert (refused["status"], refused["body"]["errCode"], refused["retry"]) == (401, "unauthorized", False)
    assert by_step["retailrocket view, fetch JSON"]["status"] == 200
    assert by_step["retailrocket addToBasket, beacon"]["queued"] is True
    assert by_step["impression imp, fetch JSON with bearer JWT"]["status"] == 200
    assert by_step["impression click, beacon with ?token="]["queued"] is True

    rows = await _rows(pipeline, tag)
    assert sorted((source, event_type) for source, event_type, *_ in rows) == expected

    posts = [r for r in requests if r.method == "POST"]
    preflights = [r for r in requests if r.method == "OPTIONS"]
    assert all(r.status is not None and r.status < 500 for r in requests)
    assert all(r.header("Origin") == shop.origin for r in posts)
    # The SDK's Authorization and JSON need a preflight; its Max-Age lets the browser skip the second.
    topsort_posts = [r for r in posts if "/v2/events" in r.url]
    topsort_preflights = [r for r in preflights if "/v2/events" in r.url]
    assert [r.status for r in topsort_posts] == [204, 401]
    assert [r.status for r in topsort_preflights] == [204]
    # The pinned SDK, as it names itself on the wire.
    assert all(r.header("X-UA") == f"@topsort/sdk {topsort_sdk_version}" for r in topsort_posts)
    beacons = [r for r in posts if r.kind == "Ping"]
    assert len(beacons) == 2
    assert all(b.header("Content-Type") == "text/plain;charset=UTF-8" for b in beacons)
    assert all(b.status == 200 for b in beacons)

    version = await _browser_version(browser)
    sdk_ua = topsort_posts[0].header("X-UA")
    figures.append(f"browser [{_sink_kind(pipeline)}]: {version}")
    figures.append(
        f"  @topsort/sdk {topsort_sdk_version} from npm (package-lock.json); on the wire X-UA: {sdk_ua}"
    )
    _report(figures, f"  shop page {shop.origin} -> receiver {receiver}:", requests, results)
    figures.append(f"  rows stored ({len(rows)}):")
    figures.extend(f"    {row}" for row in rows)


async def test_a_page_on_an_origin_its_tenant_does_not_allow_is_refused_and_nothing_is_stored(
    pipeline: Pipeline, shop: Shop, elsewhere: Shop, browser: Browser, figures: list[str]
) -> None:
    await pipeline.start_consumer()
    receiver = _receiver(pipeline)
    tag = uuid.uuid4().hex[:12]
    now = datetime.now(UTC)
    elsewhere.plan(
        [
            tracking.topsort_sdk(
                "topsort sdk reportEvent", receiver, API_KEY, tracking.readme_event(tag, now)
            ),
            *_other_vendors(receiver, tag, now),
        ]
    )
    before = await record_count(pipeline.settings.kafka_bootstrap, pipeline.settings.raw_topic)
    async with connect(browser) as cdp, open_page(cdp, elsewhere.url) as page:
        results = await page.result()
        requests = await _answered(page, receiver, beacons=2)
    by_step = {r["step"]: r for r in results}
    # Refused on the request (Topsort's key and the bearer JWT are not in any preflight), in the
    # vendor's shape and readable, so the SDK knows the refusal is final.
    refused = by_step["topsort sdk reportEvent"]["error"]
    assert (refused["status"], refused["body"]["errCode"], refused["retry"]) == (403, "forbidden", False)
    assert by_step["impression imp, fetch JSON with bearer JWT"]["status"] == 403
    # Retail Rocket's apiKey is in the preflight's query: refused there, the browser never posts.
    assert by_step["retailrocket view, fetch JSON"]["error"]["message"] == "Failed to fetch"
    rr_view = [r for r in requests if "/1.0/view" in r.url]
    assert [(r.method, r.status) for r in rr_view] == [("OPTIONS", 403), ("POST", None)]
    assert rr_view[1].failure is not None and "Preflight" in rr_view[1].failure
    # Beacons cannot read their reply; the receiver refused them all the same.
    beacons = [r for r in requests if r.kind == "Ping"]
    assert [r.status for r in beacons] == [403, 403]
    assert all(r.response_headers.get(cors.ERROR_HEADER) == cors.ORIGIN_REFUSED for r in beacons)

    # Every refused request was answered before this point, and a refusal is never written to Kafka.
    assert await record_count(pipeline.settings.kafka_bootstrap, pipeline.settings.raw_topic) == before
    # The shop's own origin still gets through, and is stored; then none of the refused page's events are.
    shop_tag = uuid.uuid4().hex[:12]
    shop.plan(
        [
            tracking.topsort_sdk(
                "topsort sdk reportEvent", receiver, API_KEY, tracking.readme_event(shop_tag, now)
            )
        ]
    )
    async with connect(browser) as cdp, open_page(cdp, shop.url) as page:
        assert {k: v for k, v in (await page.result())[0].items() if k != "step"} == SDK_OK

        async def stored() -> bool:
            return len(await _rows(pipeline, shop_tag)) == 4

        await wait_for(stored, ROWS_SECONDS, "the allowed page's events in the sink")
    assert await _rows(pipeline, tag) == []

    figures.append(f"browser, disallowed origin [{_sink_kind(pipeline)}]: shop-a allows {shop.origin} only")
    _report(figures, f"  page {elsewhere.origin} -> receiver {receiver}:", requests, results)
    figures.append("  rows stored from it: 0; records written to Kafka for it: 0")
