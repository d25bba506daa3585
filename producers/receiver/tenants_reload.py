"""Judging a re-read tenants file against the one being served: a file that does not parse, or whose
rate limit table would differ, is refused and the served keys stay. Every receiver process judges
the same sequence of files with this one function, so all of them reach the same decisions.

Why a changed rate limit table is refused rather than rebuilt: under `--workers N` the buckets live
in one file that the parent lays out at start, slot by slot, and every worker maps it; a new layout
would have to be built, filled with the current tokens and swapped in by all workers at once. Key
rotation, the reason reloads exist, never changes the table; adding or removing a tenant with a
limited source, a Retail Rocket partner id, or a tenant's limits do, and take a restart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.errors import ConfigError, PipelineError
from pipeline.rate_limits import BucketKey, LimitTable
from pipeline.settings import Settings
from pipeline.tenants import TenantDirectory, parse


class ReloadRefused(PipelineError):
    """The file cannot replace the served one; the message says why (never a key)."""


@dataclass(frozen=True)
class Counts:
    """What a tenants file holds, fit for a log line: numbers, never keys or secrets."""

    tenants: int
    api_keys: int
    jwt_secrets: int

    @classmethod
    def of(cls, directory: TenantDirectory) -> Counts:
        return cls(
            tenants=len(directory.tenants),
            api_keys=sum(len(t.api_key_digests) for t in directory.tenants),
            jwt_secrets=sum(len(t.jwt_secrets) for t in directory.tenants),
        )


def judge(
    served: TenantDirectory, content: bytes, settings: Settings, environ: Mapping[str, str]
) -> TenantDirectory:
    """The directory of `content`, or ReloadRefused."""
    try:
        candidate = parse(content.decode("utf-8"), environ)
    except UnicodeDecodeError as exc:
        raise ReloadRefused(f"tenants file is not UTF-8 (byte {exc.start})") from exc
    except ConfigError as exc:
        raise ReloadRefused(str(exc)) from exc
    now, then = LimitTable.build(settings, served), LimitTable.build(settings, candidate)
    if now != then:
        raise ReloadRefused(
            f"rate limits would change ({_difference(now, then)}); the workers share buckets laid out "
            "at start, so adding or removing a rate-limited tenant or Retail Rocket partner id, or "
            "changing a tenant's limits, needs a restart of the receiver"
        )
    return candidate


def _difference(now: LimitTable, then: LimitTable) -> str:
    """Which tenants' buckets would change, by tenant id (partner ids are not secret, but a tenant is
    what the operator edited)."""
    old = dict(zip(now.keys, now.limits, strict=True))
    new = dict(zip(then.keys, then.limits, strict=True))

    def tenants(keys: set[BucketKey]) -> str:
        return ", ".join(sorted({key[0] for key in keys}))

    parts = []
    if added := set(new) - set(old):
        parts.append(f"new buckets for {tenants(added)}")
    if removed := set(old) - set(new):
        parts.append(f"buckets gone for {tenants(removed)}")
    if changed := {key for key in set(old) & set(new) if old[key] != new[key]}:
        parts.append(f"other limits for {tenants(changed)}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Outcome:
    seq: int
    generation: int  # the generation served after this request
    reason: str | None  # None when reloaded
    counts: Counts  # of the file served after this request

    @property
    def reloaded(self) -> bool:
        return self.reason is None


class ServedTenants:
    """The tenants file a receiver process serves, and the reload requests judged so far. The
    generation is the request whose file is served (0: the file read at start)."""

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        directory: TenantDirectory,
        *,
        generation: int = 0,
        seq: int = 0,
    ) -> None:
        self._settings = settings
        # A copy: `env:NAME` secrets resolve against the environment the receiver started with, and
        # the workers get this object pickled (os.environ itself does not pickle).
        self._environ = dict(environ)
        self.directory = directory
        self.generation = generation
        self.seq = seq

    def judge(self, seq: int, content: bytes | ReloadRefused) -> Outcome:
        """Request `seq`, with the file's bytes or the reason they could not be read."""
        self.seq = seq
        try:
            if isinstance(content, ReloadRefused):
                raise content
            directory = judge(self.directory, content, self._settings, self._environ)
        except ReloadRefused as refused:
            return Outcome(seq, self.generation, str(refused), Counts.of(self.directory))
        self.directory, self.generation = directory, seq
        return Outcome(seq, seq, None, Counts.of(directory))


def read_file(path: str) -> bytes | ReloadRefused:
    """The tenants file's bytes, or why they cannot be had."""
    if not path:
        return ReloadRefused("no tenants file is configured (EVENTPIPE_TENANTS)")
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        return ReloadRefused(f"cannot read tenants file {path}: {exc.strerror or exc}")
