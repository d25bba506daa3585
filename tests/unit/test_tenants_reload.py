"""Reloading the tenants file, the pure parts: which files replace the served one and which are
refused (and that a refusal never quotes a key), the sequence of requests a receiver process judges,
the copies the parent hands its workers, the receiver's record, and how the reload command reads
every worker's generation from /metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.settings import Settings
from pipeline.tenants import key_digest, parse
from producers.receiver import pidfile
from producers.receiver.reload_command import describe, worker_generations
from producers.receiver.reloading import Coordinator, Record
from producers.receiver.snapshots import Snapshots
from producers.receiver.tenants_reload import Counts, ReloadRefused, ServedTenants, judge, read_file

SETTINGS = Settings()
ENV = {"SHOP_A_JWT": "jwt-secret-of-shop-a-0123456789abcdef"}
OLD_KEY, NEW_KEY = "ep_old_key_0001", "ep_new_key_0002"
PARTNER, OTHER_PARTNER = "608423a9b126ac6ab3f8f0a5", "5e3b1c2d4f6a7b8c9d0e1f2a"


def tenants_file(*keys: str, partners: tuple[str, ...] = (PARTNER,), extra: str = "") -> bytes:
    digests = ", ".join(f'"{key_digest(k)}"' for k in keys)
    partner_ids = ", ".join(f'"{p}"' for p in partners)
    return (
        f'[[tenants]]\nid = "shop-a"\napi_keys = [{digests}]\nretailrocket_partner_ids = [{partner_ids}]\n'
        f'jwt_secrets = ["env:SHOP_A_JWT"]\n{extra}'
    ).encode()


SERVED = parse(tenants_file(OLD_KEY).decode(), ENV)


def test_a_rotated_key_replaces_the_old_one() -> None:
    directory = judge(SERVED, tenants_file(NEW_KEY), SETTINGS, ENV)
    assert directory.by_key(NEW_KEY) is not None
    assert directory.by_key(OLD_KEY) is None
    both = judge(SERVED, tenants_file(OLD_KEY, NEW_KEY), SETTINGS, ENV)
    assert both.by_key(OLD_KEY) is not None and both.by_key(NEW_KEY) is not None


def test_a_tenant_without_limited_sources_may_come_and_go() -> None:
    # DFINERY and Topsort are unlimited by default: a tenant of only those has no bucket.
    newcomer = '[[tenants]]\nid = "shop-c"\napi_keys = ["' + key_digest("ep_shop_c_key") + '"]\n'
    directory = judge(SERVED, tenants_file(OLD_KEY, extra=newcomer), SETTINGS, ENV)
    assert [t.id for t in directory.tenants] == ["shop-a", "shop-c"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(tenants_file(NEW_KEY) + b"x = [\n", "tenants file is not TOML", id="toml-error"),
        pytest.param(
            tenants_file(NEW_KEY) + b'id = "shop-b"\n', "tenants file is not TOML", id="duplicated-toml-key"
        ),
        pytest.param(
            tenants_file(
                NEW_KEY, extra=f'[[tenants]]\nid = "shop-b"\napi_keys = ["{key_digest(NEW_KEY)}"]\n'
            ),
            "an API key is shared by shop-a and shop-b",
            id="key-shared-by-two-tenants",
        ),
        pytest.param(
            tenants_file(NEW_KEY, extra='[[tenants]]\nid = "shop-a"\n'),
            "tenant ids must be unique",
            id="duplicated-tenant",
        ),
        pytest.param(
            tenants_file(NEW_KEY).replace(key_digest(NEW_KEY).encode(), NEW_KEY.encode()),
            "api_keys hold 'sha256:<64 hex>' digests",
            id="key-in-clear",
        ),
        pytest.param(b"\xff\xfe[[tenants]]", "not UTF-8", id="not-utf8"),
        pytest.param(
            tenants_file(NEW_KEY, partners=(PARTNER, OTHER_PARTNER)),
            "rate limits would change (new buckets for shop-a)",
            id="partner-id-added",
        ),
        pytest.param(
            tenants_file(NEW_KEY, partners=()),
            "rate limits would change (buckets gone for shop-a)",
            id="site-gone",
        ),
        pytest.param(
            tenants_file(NEW_KEY, extra="rate_limits = { retailrocket = 10 }\n"),
            "rate limits would change (other limits for shop-a)",
            id="limit-changed",
        ),
    ],
)
def test_refused_files_say_why_without_quoting_a_key(content: bytes, reason: str) -> None:
    with pytest.raises(ReloadRefused) as refused:
        judge(SERVED, content, SETTINGS, ENV)
    message = str(refused.value)
    assert reason in message
    assert NEW_KEY not in message and key_digest(NEW_KEY) not in message
    assert ENV["SHOP_A_JWT"] not in message


def test_a_limit_change_names_the_restart() -> None:
    with pytest.raises(ReloadRefused, match="needs a restart of the receiver"):
        judge(SERVED, tenants_file(OLD_KEY, partners=()), SETTINGS, ENV)


def test_requests_are_judged_in_turn_and_a_refusal_keeps_the_generation() -> None:
    served = ServedTenants(SETTINGS, ENV, SERVED)
    first = served.judge(1, tenants_file(OLD_KEY, NEW_KEY))
    assert (first.reloaded, first.generation, first.counts) == (True, 1, Counts(1, 2, 1))
    refused = served.judge(2, b"x = [")
    assert (refused.reloaded, refused.generation, served.seq) == (False, 1, 2)
    assert refused.reason is not None and refused.reason.startswith("tenants file is not TOML")
    assert refused.counts == Counts(1, 2, 1)  # what is still served
    unreadable = served.judge(3, ReloadRefused("cannot read tenants file t.toml: Permission denied"))
    assert unreadable.reason == "cannot read tenants file t.toml: Permission denied"
    last = served.judge(4, tenants_file(NEW_KEY))
    assert (last.generation, served.generation, served.seq) == (4, 4, 4)
    assert served.directory.by_key(OLD_KEY) is None


def test_read_file_reports_what_it_cannot_read(tmp_path: Path) -> None:
    assert str(read_file("")) == "no tenants file is configured (EVENTPIPE_TENANTS)"
    missing = read_file(str(tmp_path / "absent.toml"))
    assert isinstance(missing, ReloadRefused)
    assert "No such file or directory" in str(missing)
    (tmp_path / "t.toml").write_bytes(b"[[tenants]]\n")
    assert read_file(str(tmp_path / "t.toml")) == b"[[tenants]]\n"


def test_snapshots_come_back_in_order_after_a_request(tmp_path: Path) -> None:
    snapshots = Snapshots(tmp_path)
    snapshots.write(2, b"second")
    snapshots.write(1, b"first")
    snapshots.write(3, ReloadRefused("cannot read tenants file: gone"))
    (tmp_path / ".tenants-00000004.toml").write_bytes(b"half written")  # a copy being written
    found = [(seq, str(c) if isinstance(c, ReloadRefused) else c) for seq, c in snapshots.after(0)]
    assert found == [(1, b"first"), (2, b"second"), (3, "cannot read tenants file: gone")]
    assert [seq for seq, _ in snapshots.after(2)] == [3]
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.glob("tenants-*")} == {"0o600"}


def record(pid: int, started: int, workers: int = 2) -> pidfile.ReceiverRecord:
    return pidfile.ReceiverRecord(pid, started, "127.0.0.1", 8080, False, workers, "/etc/t.toml")


def test_the_record_names_a_live_process_only_while_it_runs(tmp_path: Path) -> None:
    path = pidfile.path_for(tmp_path, 8080)
    assert path == tmp_path / "receiver-8080.json"
    assert pidfile.read(path) is None
    started = pidfile.process_started(os.getpid())
    assert started is not None
    mine = record(os.getpid(), started)
    pidfile.write(path, mine)
    assert pidfile.read(path) == mine
    assert pidfile.alive(mine)
    assert not pidfile.alive(record(os.getpid(), started + 1))  # a later process with a reused pid
    pidfile.remove(path, os.getpid() + 1)  # not the writer's: stays
    assert path.exists()
    pidfile.remove(path, os.getpid())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_the_coordinator_hands_the_workers_one_copy_and_records_the_verdict(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.toml"
    tenants.write_bytes(tenants_file(OLD_KEY, NEW_KEY))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = tmp_path / "receiver-8080.json"
    coordinator = Coordinator(
        str(tenants), ServedTenants(SETTINGS, ENV, SERVED), Snapshots(run_dir), Record(path, record(1, 1))
    )
    coordinator.run_pending([])
    assert pidfile.read(path) is None  # nothing requested yet
    coordinator.request()
    coordinator.run_pending([])
    found = pidfile.read(path)
    assert found is not None
    assert found.reload == pidfile.ReloadStatus(1, 1, "reloaded", None, 1, 2, 1)
    tenants.write_bytes(b"x = [")
    coordinator.request()
    coordinator.run_pending([])
    found = pidfile.read(path)
    assert found is not None
    assert (found.reload.seq, found.reload.generation, found.reload.outcome) == (2, 1, "refused")
    assert [seq for seq, _ in Snapshots(run_dir).after(0)] == [1, 2]
    assert coordinator.served.directory.by_key(NEW_KEY) is not None


MULTIPROCESS_METRICS = """\
# HELP eventpipe_receiver_tenants_generation Generation of the tenants file served
# TYPE eventpipe_receiver_tenants_generation gauge
eventpipe_receiver_tenants_generation{pid="4242"} 3.0
eventpipe_receiver_tenants_generation{pid="4243"} 2.0
# HELP eventpipe_ready Readiness
# TYPE eventpipe_ready gauge
eventpipe_ready{component="receiver"} 1.0
"""


def test_worker_generations_come_from_the_aggregated_metrics() -> None:
    assert worker_generations(MULTIPROCESS_METRICS) == {"4242": 3, "4243": 2}
    single = "# TYPE eventpipe_receiver_tenants_generation gauge\neventpipe_receiver_tenants_generation 5.0\n"
    assert worker_generations(single) == {"": 5}
    assert worker_generations("") == {}


def test_describe_counts_what_the_file_holds() -> None:
    assert describe(pidfile.ReloadStatus(tenants=1, api_keys=2, jwt_secrets=0)) == (
        "1 tenant, 2 API keys, 0 JWT secrets"
    )
