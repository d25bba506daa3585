"""Tenants and their credentials, from the tenants TOML file. API keys are held only as SHA-256
digests; JWT secrets may be given as `env:NAME` and are resolved from the mapping the entry point
passes in."""

from __future__ import annotations

import hashlib
import hmac
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from pipeline import origins
from pipeline.errors import ConfigError
from pipeline.limit_check import check_limits

DIGEST_PREFIX = "sha256:"
JWT_ALGORITHM = "HS256"


def key_digest(key: str) -> str:
    return DIGEST_PREFIX + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Tenant:
    id: str
    api_key_digests: frozenset[str] = frozenset()
    retailrocket_partner_ids: frozenset[str] = frozenset()
    jwt_secrets: tuple[str, ...] = ()
    # Per-source overrides of the rate limit settings (requests/s, 0 = unlimited; burst).
    rate_limits: Mapping[str, float] = field(default_factory=dict, hash=False)
    rate_limit_bursts: Mapping[str, float] = field(default_factory=dict, hash=False)
    # The browser origins whose requests the tenant accepts (CORS routes only; default any).
    allowed_origins: origins.AllowedOrigins = origins.ALLOW_ANY


@dataclass(frozen=True)
class TenantDirectory:
    tenants: tuple[Tenant, ...]
    _by_digest: Mapping[str, Tenant] = field(init=False, repr=False)
    _by_id: Mapping[str, Tenant] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_digest: dict[str, Tenant] = {}
        for tenant in self.tenants:
            for digest in tenant.api_key_digests:
                if digest in by_digest:
                    raise ConfigError(f"an API key is shared by {by_digest[digest].id} and {tenant.id}")
                by_digest[digest] = tenant
        object.__setattr__(self, "_by_digest", by_digest)
        object.__setattr__(self, "_by_id", {t.id: t for t in self.tenants})

    def by_key(self, key: str) -> Tenant | None:
        """The tenant owning a clear-text key. The lookup is by digest, so its timing depends on the
        digest, which an attacker cannot steer towards a real key; the final equality is constant-time."""
        digest = key_digest(key)
        tenant = self._by_digest.get(digest)
        if tenant is None:
            return None
        matched = False
        for known in tenant.api_key_digests:
            matched |= hmac.compare_digest(known, digest)
        return tenant if matched else None

    def by_id(self, tenant_id: str) -> Tenant | None:
        return self._by_id.get(tenant_id)


def parse(text: str, environ: Mapping[str, str]) -> TenantDirectory:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"tenants file is not TOML: {exc}") from exc
    tenants = []
    for entry in data.get("tenants", []):
        tenant_id = entry.get("id")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ConfigError("every tenant needs a non-empty string id")
        digests = []
        for digest in entry.get("api_keys", []):
            if not (isinstance(digest, str) and digest.startswith(DIGEST_PREFIX) and len(digest) == 71):
                raise ConfigError(
                    f"tenant {tenant_id}: api_keys hold 'sha256:<64 hex>' digests "
                    "(`eventpipe keys hash KEY` prints one), never keys in clear"
                )
            digests.append(digest.lower())
        secrets = tuple(_resolve_secret(tenant_id, s, environ) for s in entry.get("jwt_secrets", []))
        where = f"tenant {tenant_id}"
        rates = _number_table(entry, "rate_limits", where)
        bursts = _number_table(entry, "rate_limit_bursts", where)
        check_limits(rates, bursts, where)
        tenants.append(
            Tenant(
                id=tenant_id,
                api_key_digests=frozenset(digests),
                retailrocket_partner_ids=frozenset(str(p) for p in entry.get("retailrocket_partner_ids", [])),
                jwt_secrets=tuple(s for s in secrets if s),
                rate_limits=rates,
                rate_limit_bursts=bursts,
                allowed_origins=origins.parse(entry.get("allowed_origins"), where),
            )
        )
    ids = [t.id for t in tenants]
    if len(ids) != len(set(ids)):
        raise ConfigError("tenant ids must be unique")
    return TenantDirectory(tuple(tenants))


def _number_table(entry: Mapping[str, object], name: str, where: str) -> dict[str, float]:
    table = entry.get(name, {})
    example = f"{name} = {{ retailrocket = 100, dfinery = 200 }}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: {name} must be a table of source = number, e.g. {example}")
    numbers: dict[str, float] = {}
    for source, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: {name}.{source} must be a number, not {value!r}; e.g. {example}")
        numbers[source] = float(value)
    return numbers


def load(path: str, environ: Mapping[str, str]) -> TenantDirectory:
    if not path:
        return TenantDirectory(())
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read tenants file {path}: {exc}") from exc
    return parse(text, environ)


def _resolve_secret(tenant_id: str, value: str, environ: Mapping[str, str]) -> str:
    if value.startswith("env:"):
        name = value[4:]
        # A missing variable disables that secret rather than failing start-up: the other vendors of
        # the tenant keep working, and JWTs for it are refused.
        return environ.get(name, "")
    return value


def mint_jwt(tenant_id: str, secret: str, ttl_seconds: int = 86_400 * 30, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    claims = {"sub": tenant_id, "iat": issued, "exp": issued + ttl_seconds}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)
