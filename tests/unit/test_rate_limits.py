"""Rate limit configuration: per-source defaults in the settings, per-tenant overrides in the tenants
file, the errors for bad values, and the table of buckets every receiver process builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import settings as settings_mod
from pipeline import tenants
from pipeline.errors import ConfigError
from pipeline.rate_limits import LimitTable, limit_for
from pipeline.token_bucket import Limit

ROOT = Path(__file__).resolve().parents[2]

TENANTS = """
[[tenants]]
id = "shop-a"
retailrocket_partner_ids = ["p2", "p1"]
rate_limits = { dfinery = 200, retailrocket = 0 }
rate_limit_bursts = { dfinery = 400 }

[[tenants]]
id = "shop-b"
retailrocket_partner_ids = ["p3"]

[tenants.rate_limits]
topsort = 5
"""


def test_defaults_limit_retailrocket_only() -> None:
    s = settings_mod.load({})
    assert s.rate_for("retailrocket") == 50
    assert [s.rate_for(v) for v in ("topsort", "dfinery", "impression")] == [0, 0, 0]


def test_settings_are_merged_over_the_defaults() -> None:
    s = settings_mod.load(
        {"EVENTPIPE_RATE_LIMITS": "dfinery=200, impression=7.5", "EVENTPIPE_RATE_LIMIT_BURSTS": "dfinery=400"}
    )
    assert (s.rate_for("retailrocket"), s.rate_for("dfinery"), s.rate_for("impression")) == (50, 200, 7.5)
    assert s.rate_limit_bursts == {"dfinery": 400}
    assert settings_mod.load({"EVENTPIPE_RATE_LIMITS": "retailrocket=0"}).rate_for("retailrocket") == 0


def test_settings_from_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("rate_limits = { topsort = 100 }\nrate_limit_bursts = { topsort = 150 }\n")
    s = settings_mod.load({"EVENTPIPE_CONFIG": str(config)})
    assert (s.rate_for("topsort"), s.rate_limit_bursts["topsort"]) == (100, 150)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"EVENTPIPE_RATE_LIMITS": "shopify=5"}, "unknown source 'shopify'", id="unknown-source"),
        pytest.param({"EVENTPIPE_RATE_LIMITS": "dfinery=-1"}, "rate_limits.dfinery must be", id="negative"),
        pytest.param({"EVENTPIPE_RATE_LIMITS": "dfinery=inf"}, "rate_limits.dfinery must be", id="infinite"),
        pytest.param({"EVENTPIPE_RATE_LIMITS": "dfinery=lots"}, "setting rate_limits", id="not-a-number"),
        pytest.param(
            {"EVENTPIPE_RATE_LIMIT_BURSTS": "dfinery=0.5"}, "rate_limit_bursts.dfinery must be", id="burst-<1"
        ),
    ],
)
def test_bad_rate_limit_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_mod.load(env)


def test_help_lists_the_rate_limit_settings() -> None:
    text = settings_mod.describe()
    assert "EVENTPIPE_RATE_LIMITS" in text and "retailrocket=50" in text
    assert "EVENTPIPE_RATE_LIMIT_BURSTS" in text


def test_tenant_overrides_as_inline_table_or_sub_table() -> None:
    directory = tenants.parse(TENANTS, {})
    a, b = directory.tenants
    assert (a.rate_limits, a.rate_limit_bursts) == ({"dfinery": 200, "retailrocket": 0}, {"dfinery": 400})
    assert (b.rate_limits, b.rate_limit_bursts) == ({"topsort": 5}, {})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(
            'rate_limits = { dfinery = "fast" }', "rate_limits.dfinery must be a number", id="string"
        ),
        pytest.param("rate_limits = { dfinery = true }", "rate_limits.dfinery must be a number", id="bool"),
        pytest.param("rate_limits = 50", "rate_limits must be a table", id="not-a-table"),
        pytest.param("rate_limits = { shopify = 5 }", "unknown source 'shopify'", id="unknown-source"),
        pytest.param("rate_limits = { topsort = -5 }", "rate_limits.topsort must be", id="negative"),
        pytest.param(
            "rate_limit_bursts = { topsort = 0 }", "rate_limit_bursts.topsort must be", id="burst-0"
        ),
    ],
)
def test_bad_tenant_overrides_name_the_tenant_and_the_entry(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        tenants.parse(f'[[tenants]]\nid = "shop-z"\n{entry}\n', {})
    assert str(raised.value).startswith("tenant shop-z: ")


def test_the_tenant_wins_then_the_setting_then_the_default() -> None:
    s = settings_mod.load(
        {"EVENTPIPE_RATE_LIMITS": "impression=10", "EVENTPIPE_RATE_LIMIT_BURSTS": "impression=30"}
    )
    a, b = tenants.parse(TENANTS, {}).tenants
    assert limit_for(s, a, "dfinery") == Limit(200, 400)  # the tenant's rate and burst
    assert limit_for(s, a, "retailrocket") is None  # the tenant lifted the default
    assert limit_for(s, a, "impression") == Limit(10, 30)  # the setting's rate and burst
    assert limit_for(s, b, "retailrocket") == Limit(50, 50)  # the default; burst: one second's worth
    assert limit_for(s, b, "topsort") == Limit(5, 5)
    assert limit_for(s, b, "dfinery") is None  # unlimited
    assert limit_for(s.replace(rate_limits={"topsort": 0.2}), b, "topsort") == Limit(5, 5)
    assert limit_for(s.replace(rate_limits={"dfinery": 0.2}), b, "dfinery") == Limit(0.2, 1)  # at least 1


def test_the_table_has_one_bucket_per_tenant_source_and_retailrocket_site() -> None:
    s = settings_mod.load({})
    directory = tenants.parse(TENANTS, {})
    table = LimitTable.build(s, directory)
    assert table.keys == (
        ("shop-a", "dfinery", ""),
        ("shop-b", "retailrocket", "p3"),
        ("shop-b", "topsort", ""),
    )
    two_sites = tenants.Tenant(id="shop-c", retailrocket_partner_ids=frozenset({"x2", "x1"}))
    table = LimitTable.build(s, tenants.TenantDirectory((two_sites,)))
    assert table.keys == (("shop-c", "retailrocket", "x1"), ("shop-c", "retailrocket", "x2"))
    assert table.lookup(("shop-c", "retailrocket", "x2")) == (1, Limit(50, 50))
    assert table.lookup(("shop-c", "topsort", "")) is None
    # Every process builds the same table from the same inputs: slot numbers agree.
    assert LimitTable.build(s, tenants.TenantDirectory((two_sites,))) == table


def test_the_example_tenants_file_is_valid() -> None:
    directory = tenants.load(str(ROOT / "deploy" / "tenants.example.toml"), {})
    (demo,) = directory.tenants
    assert demo.rate_limits == {"retailrocket": 50, "dfinery": 200}
    assert limit_for(settings_mod.load({}), demo, "dfinery") == Limit(200, 400)
