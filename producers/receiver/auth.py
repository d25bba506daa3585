"""Who is calling: each vendor's own scheme, resolved to a tenant or refused with a Rejection that the
vendor's format turns into its documented reply. Keys are never logged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import jwt

from pipeline.formats.base import Problem, Rejection
from pipeline.tenants import JWT_ALGORITHM, Tenant, TenantDirectory

JWT_LEEWAY_SECONDS = 30


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeyLookup(Protocol):
    """What the API key schemes need: a TenantDirectory, or a KeyVerifier in front of one."""

    def by_key(self, key: str) -> Tenant | None: ...


class KeyVerifier:
    """TenantDirectory.by_key, remembering the keys it has found. A client sends the same key with
    every request; its SHA-256 and the constant-time compare were 1.6 % of the receiver's samples per
    single-event request. Only found keys are remembered, so a refused key is looked up afresh every
    time and an attacker's guesses cannot fill the memory. The memory belongs to one tenants file:
    ReceiverState.use_tenants builds a new verifier on a reload, so a removed key is refused at once.

    The keys are held in clear for as long as they are remembered, as the request held them anyway;
    the lookup hashes with the interpreter's per-process secret SipHash seed, so its timing tells an
    attacker nothing they can steer towards a real key."""

    def __init__(self, tenants: TenantDirectory, capacity: int = 10_000) -> None:
        self._tenants = tenants
        self._capacity = capacity
        self._found: dict[str, Tenant] = {}

    def __len__(self) -> int:
        return len(self._found)

    def by_key(self, key: str) -> Tenant | None:
        tenant = self._found.get(key)
        if tenant is not None:
            return tenant
        tenant = self._tenants.by_key(key)
        if tenant is None:
            return None
        if len(self._found) >= self._capacity:
            del self._found[next(iter(self._found))]  # the oldest: insertion order
        self._found[key] = tenant
        return tenant


def by_bearer_key(tenants: KeyLookup, headers: Mapping[str, str]) -> str:
    """Topsort and DFINERY: `Authorization: Bearer <key>`."""
    token = bearer_token(headers)
    if token is None:
        raise Rejection(Problem.UNAUTHENTICATED, "missing bearer token")
    tenant = tenants.by_key(token)
    if tenant is None:
        raise Rejection(Problem.INVALID_CREDENTIALS, "invalid API key")
    return tenant.id


# Retail Rocket's credentials travel in the query; each is a required parameter of every method.
RETAILROCKET_PARAMETERS = ("apiKey", "partnerId")


def by_retailrocket_query(tenants: KeyLookup, query: Mapping[str, str]) -> str:
    """Retail Rocket: `apiKey` and `partnerId` in the query. A parameter absent (or empty) is a malformed
    request, 400 naming it, before any key is looked at; then 401 for an unknown key and 403 when the key
    is valid but not for that partner."""
    missing = [name for name in RETAILROCKET_PARAMETERS if not query.get(name)]
    if missing:
        raise Rejection(
            Problem.MISSING_FIELD,
            f"{' and '.join(missing)} query parameter{'s are' if len(missing) > 1 else ' is'} required",
            f"query.{missing[0]}",
        )
    tenant = tenants.by_key(query["apiKey"])
    if tenant is None:
        raise Rejection(Problem.INVALID_CREDENTIALS, "invalid apiKey")
    if query["partnerId"] not in tenant.retailrocket_partner_ids:
        raise Rejection(Problem.FORBIDDEN, "apiKey is not valid for this partnerId", "query.partnerId")
    return tenant.id


def _jwt_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    token = bearer_token(headers) or query.get("token") or None
    if token is None:
        raise Rejection(Problem.UNAUTHENTICATED, "No authorization token was found")
    return token


def by_jwt(tenants: TenantDirectory, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """Impression API: an HS256 JWT in `Authorization: Bearer` or `?token=`, its `sub` naming the tenant.
    The algorithm is pinned, so `none` and RS/HS confusion are refused; exp/nbf are honoured with a small
    leeway. Messages follow express-jwt's, which the vendor's replies show."""
    return _verify_jwt(tenants, _jwt_token(headers, query))[0]


def _verify_jwt(tenants: TenantDirectory, token: str) -> tuple[str, float | None]:
    """The tenant, and the token's `exp` when it has one."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise Rejection(Problem.INVALID_CREDENTIALS, "jwt malformed") from exc
    if header.get("alg") != JWT_ALGORITHM:
        raise Rejection(Problem.INVALID_CREDENTIALS, "invalid algorithm")
    subject = claims.get("sub")
    tenant = tenants.by_id(subject) if isinstance(subject, str) else None
    if tenant is None or not tenant.jwt_secrets:
        # An unknown tenant looks like a bad signature from outside: no tenant names are revealed.
        raise Rejection(Problem.INVALID_CREDENTIALS, "invalid signature")
    last_error = "invalid signature"
    for secret in tenant.jwt_secrets:
        try:
            verified = jwt.decode(
                token,
                secret,
                algorithms=[JWT_ALGORITHM],
                leeway=JWT_LEEWAY_SECONDS,
                options={"require": ["sub"]},
            )
            expires = verified.get("exp")
            return tenant.id, float(expires) if isinstance(expires, int | float) else None
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            last_error = "jwt expired"
        except jwt.ImmatureSignatureError:
            last_error = "jwt not active"
        except jwt.PyJWTError:
            last_error = "invalid token"
    raise Rejection(Problem.INVALID_CREDENTIALS, last_error)


class JwtVerifier:
    """by_jwt, remembering the tokens it has verified. A client sends one token with every request
    until it expires; verifying it again each time (three base64 and JSON decodes and an HMAC) was an
    eighth of the receiver's CPU per single-event Impression request. A remembered token is only good
    until its `exp` (plus the leeway): what else PyJWT checks (signature, nbf, iat) cannot turn bad as
    time goes on. Only successes are remembered, so every refusal is decided, and worded, afresh."""

    def __init__(self, tenants: TenantDirectory, capacity: int = 10_000) -> None:
        self._tenants = tenants
        self._capacity = capacity
        self._verified: dict[str, tuple[str, float]] = {}  # token → (tenant, good until, epoch s)

    def __len__(self) -> int:
        return len(self._verified)

    def tenant(self, headers: Mapping[str, str], query: Mapping[str, str], now: float) -> str:
        token = _jwt_token(headers, query)
        known = self._verified.get(token)
        if known is not None:
            if now < known[1]:
                return known[0]
            del self._verified[token]
        tenant, expires = _verify_jwt(self._tenants, token)
        if len(self._verified) >= self._capacity:
            del self._verified[next(iter(self._verified))]  # the oldest: insertion order
        good_until = float("inf") if expires is None else expires + JWT_LEEWAY_SECONDS
        self._verified[token] = (tenant, good_until)
        return tenant
