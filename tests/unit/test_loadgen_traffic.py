"""The load generator's traffic plan, checked against the vendors' own schemas and the consumer's own
split and window: every body it plans as accepted passes `validate`, every invalid one is refused
with a 400, the consumer would give each event the identity and window verdict the plan predicts,
and the shares hold over a seeded run."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from consumers.window import WindowPolicy, verdict
from eventpipe.loadgen.traffic import SOURCES, Kind, PlannedRequest, Shares, TrafficConfig, TrafficPlan
from pipeline.formats import all_formats
from pipeline.formats.base import Rejection
from pipeline.record import RecordMeta

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TENANT = "shop-a"
SKEW = 600.0
SHARES = Shares(duplicates=0.1, late=0.05, future=0.05, invalid=0.05)
FORMATS = all_formats()


def planned(batch: int, count: int, seed: int = 3, shares: Shares = SHARES) -> list[PlannedRequest]:
    plan = TrafficPlan(TrafficConfig(tenant=TENANT, seed=seed, shares=shares, batch=batch))
    # time moves on as in a run, a few milliseconds per request
    return [plan.next(NOW + timedelta(milliseconds=3 * i)) for i in range(count)]


@pytest.fixture(scope="module", params=[1, 5, 50], ids=lambda b: f"batch{b}")
def requests(request: pytest.FixtureRequest) -> list[PlannedRequest]:
    return planned(request.param, 1500)


def test_every_vendor_and_route_is_exercised(requests: list[PlannedRequest]) -> None:
    assert {r.source for r in requests} == set(SOURCES)
    assert {e.kind for r in requests for e in r.events} == set(Kind)


def test_accepted_bodies_pass_the_vendors_validate(requests: list[PlannedRequest]) -> None:
    for request in requests:
        if not request.expect_accepted:
            continue
        accepted = FORMATS[request.source].validate(request.body, request.route, NOW, SKEW)
        assert accepted.events == len(request.events), request.body


def test_invalid_and_topsort_future_bodies_are_refused_with_400(requests: list[PlannedRequest]) -> None:
    refused = [r for r in requests if not r.expect_accepted]
    assert {r.source for r in refused} == set(SOURCES)
    for request in refused:
        fmt = FORMATS[request.source]
        with pytest.raises(Rejection) as caught:
            fmt.validate(request.body, request.route, NOW, SKEW)
        assert fmt.error(caught.value).status == 400, request.body
        kinds = {e.kind for e in request.events}
        # Topsort's receiver refuses events beyond the skew itself; elsewhere only invalid bodies are refused
        assert kinds == {Kind.INVALID} or (request.source == "topsort" and kinds == {Kind.FUTURE})


def test_the_consumer_gives_each_event_the_planned_identity_and_window_verdict(
    requests: list[PlannedRequest],
) -> None:
    policy = WindowPolicy(48.0, SKEW)
    expected_verdict = {Kind.LATE: "late", Kind.FUTURE: "future", Kind.VALID: None, Kind.DUPLICATE: None}
    for request in (r for r in requests if r.expect_accepted):
        meta = RecordMeta(request.source, request.route, TENANT, int(NOW.timestamp() * 1000), "r1")
        events = FORMATS[request.source].to_canonical(request.body, meta)
        assert Counter((e.event_type, e.event_id) for e in events) == Counter(
            (p.event_type, p.event_id) for p in request.events
        ), request.body
        verdicts = Counter(verdict(e, policy) for e in events)
        assert verdicts == Counter(expected_verdict[p.kind] for p in request.events), request.body


def test_new_events_never_collide_and_duplicates_repeat_an_earlier_event(
    requests: list[PlannedRequest],
) -> None:
    seen: set[tuple[str, str, str]] = set()
    duplicates = 0
    for request in requests:
        for event in request.events:
            key = (request.source, event.event_type, event.event_id)
            if event.kind is Kind.INVALID:
                continue
            if event.kind is Kind.DUPLICATE:
                assert key in seen
                duplicates += 1
            else:
                assert key not in seen
                seen.add(key)
    assert duplicates > 0


@pytest.mark.parametrize("batch", [1, 7])
def test_batches_hold_the_asked_number_of_events(batch: int) -> None:
    requests = planned(batch, 600)
    sizes: list[tuple[str, int]] = []
    for request in requests:
        if (
            request.source == "topsort"
            and not request.expect_accepted
            and request.events[0].kind is Kind.FUTURE
        ):
            # Topsort's future events travel in a request of their own, right after the rest of their batch
            if sizes and sizes[-1][0] == "topsort-kept":
                sizes[-1] = ("topsort", sizes[-1][1] + len(request.events))
                continue
            sizes.append(("topsort", len(request.events)))
            continue
        kept = request.source == "topsort" and request.expect_accepted
        sizes.append(("topsort-kept" if kept else request.source, len(request.events)))
    for source, size in sizes:
        assert size == (1 if source == "dfinery" else batch), source


def test_shares_hold_over_a_seeded_run() -> None:
    requests = planned(batch=5, count=12_000, seed=11)
    kinds = Counter(e.kind for r in requests for e in r.events)
    total = sum(kinds.values())
    for kind, share in [
        (Kind.DUPLICATE, SHARES.duplicates),
        (Kind.LATE, SHARES.late),
        (Kind.FUTURE, SHARES.future),
        (Kind.INVALID, SHARES.invalid),
    ]:
        # about 50,000 events: the shares' standard errors are near 0.001
        assert kinds[kind] / total == pytest.approx(share, abs=0.006), (kind, kinds)
    # each batch drawn once (Topsort's future events travel apart, in a request of their own)
    batches = [r for r in requests if r.expect_accepted or r.events[0].kind is Kind.INVALID]
    sources = Counter(r.source for r in batches)
    for source in SOURCES:
        assert sources[source] / len(batches) == pytest.approx(0.25, abs=0.02)


def test_the_same_seed_plans_the_same_traffic() -> None:
    first = [(r.path, r.body) for r in planned(5, 200, seed=9)]
    assert first == [(r.path, r.body) for r in planned(5, 200, seed=9)]
    assert first != [(r.path, r.body) for r in planned(5, 200, seed=10)]


def test_retail_rocket_single_events_use_their_method_route_and_batches_visitor_events() -> None:
    single = [r for r in planned(1, 400) if r.source == "retailrocket"]
    assert {r.route for r in single} > {"view", "categoryView"}
    assert "visitorEvents" not in {r.route for r in single}
    batched = [r for r in planned(5, 400) if r.source == "retailrocket"]
    assert {r.route for r in batched} == {"visitorEvents"}


def test_no_shares_means_only_valid_events() -> None:
    requests = planned(3, 300, shares=Shares())
    assert {e.kind for r in requests for e in r.events} == {Kind.VALID}
    assert all(r.expect_accepted for r in requests)


@pytest.mark.parametrize(
    "shares",
    [
        pytest.param({"duplicates": 1.5}, id="above-one"),
        pytest.param({"late": -0.1}, id="negative"),
        pytest.param({"duplicates": 0.6, "invalid": 0.6}, id="sum-above-one"),
    ],
)
def test_impossible_shares_are_refused(shares: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="shares"):
        Shares(**shares)
