"""Who is calling, per vendor scheme: API keys held and compared only as SHA-256 digests in constant
time; the Impression API's JWT pinned to HS256 (`none` and every other algorithm refused, whatever
it is signed with), exp / nbf / iat honoured with the small leeway, secrets rotated."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from pipeline import tenants
from pipeline.formats.base import Problem, Rejection
from producers.receiver import auth

# 64 bytes: long enough for HS512 too, so the refusals below are about the algorithm alone
SECRET = "shop-a-secret-" + "0123456789abcdef" * 3 + "01"
NEXT_SECRET = "shop-a-next-secret-" + "0123456789abcdef" * 3
DIRECTORY = tenants.parse(
    f"""
[[tenants]]
id = "shop-a"
api_keys = ["{tenants.key_digest("key-a")}"]
retailrocket_partner_ids = ["partner-a"]
jwt_secrets = ["{SECRET}", "{NEXT_SECRET}"]

[[tenants]]
id = "shop-b"
api_keys = ["{tenants.key_digest("key-b")}"]
""",
    {},
)
LEEWAY = auth.JWT_LEEWAY_SECONDS


def refusal(call: Any, *args: Any) -> Rejection:
    with pytest.raises(Rejection) as refused:
        call(*args)
    return refused.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], secret: str | None = None) -> str:
    """A token built by hand, as an attacker would: any header, HMAC-SHA256 or no signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def by_jwt(token: str, in_query: bool = False) -> str:
    if in_query:
        return auth.by_jwt(DIRECTORY, {}, {"token": token})
    return auth.by_jwt(DIRECTORY, {"Authorization": f"Bearer {token}"}, {})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "shop-a", "iat": now, "exp": now + 3600, **changes}


# --- API keys ------------------------------------------------------------------------------------


def test_keys_are_held_only_as_digests() -> None:
    shop_a = DIRECTORY.by_id("shop-a")
    assert shop_a is not None
    assert shop_a.api_key_digests == {"sha256:" + hashlib.sha256(b"key-a").hexdigest()}
    assert "key-a" not in repr(DIRECTORY)


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tenants.hmac, "compare_digest", spy)
    assert auth.by_bearer_key(DIRECTORY, {"Authorization": "Bearer key-a"}) == "shop-a"
    assert compared == [(tenants.key_digest("key-a"), tenants.key_digest("key-a"))]


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        pytest.param({}, Problem.UNAUTHENTICATED, id="no-header"),
        pytest.param({"Authorization": "Bearer "}, Problem.UNAUTHENTICATED, id="empty-token"),
        pytest.param({"Authorization": "Basic a2V5LWE6"}, Problem.UNAUTHENTICATED, id="basic"),
        pytest.param({"Authorization": "Bearer key-c"}, Problem.INVALID_CREDENTIALS, id="unknown-key"),
        pytest.param({"Authorization": "Bearer KEY-A"}, Problem.INVALID_CREDENTIALS, id="case-matters"),
    ],
)
def test_bearer_key_refusals(headers: dict[str, str], problem: Problem) -> None:
    assert refusal(auth.by_bearer_key, DIRECTORY, headers).problem is problem


def test_bearer_scheme_is_case_insensitive() -> None:
    assert auth.by_bearer_key(DIRECTORY, {"Authorization": "bearer key-b"}) == "shop-b"


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        pytest.param({"apiKey": "nope", "partnerId": "partner-a"}, Problem.INVALID_CREDENTIALS, id="bad-key"),
        pytest.param({"apiKey": "key-a", "partnerId": "partner-b"}, Problem.FORBIDDEN, id="other-partner"),
    ],
)
def test_retailrocket_refusals(query: dict[str, str], problem: Problem) -> None:
    assert refusal(auth.by_retailrocket_query, DIRECTORY, query).problem is problem


@pytest.mark.parametrize(
    ("query", "path", "message"),
    [
        pytest.param(
            {"partnerId": "partner-a"}, "query.apiKey", "apiKey query parameter is required", id="no-key"
        ),
        pytest.param(
            {"apiKey": "key-a"}, "query.partnerId", "partnerId query parameter is required", id="no-partner"
        ),
        pytest.param(
            {"apiKey": "key-a", "partnerId": ""},
            "query.partnerId",
            "partnerId query parameter is required",
            id="empty",
        ),
        pytest.param({}, "query.apiKey", "apiKey and partnerId query parameters are required", id="neither"),
        # Presence is judged before the key: an unknown key without a partner is still a malformed request.
        pytest.param(
            {"apiKey": "nope"}, "query.partnerId", "partnerId query parameter is required", id="bad-key"
        ),
    ],
)
def test_retailrocket_missing_parameter_is_a_bad_request(
    query: dict[str, str], path: str, message: str
) -> None:
    rejection = refusal(auth.by_retailrocket_query, DIRECTORY, query)
    assert (rejection.problem, rejection.path, rejection.message) == (Problem.MISSING_FIELD, path, message)


# --- the Impression API's JWT ----------------------------------------------------------------------


@pytest.mark.parametrize("in_query", [False, True], ids=["header", "query"])
def test_an_hs256_token_names_its_tenant(in_query: bool) -> None:
    assert by_jwt(jwt.encode(claims(), SECRET, algorithm="HS256"), in_query) == "shop-a"


def test_either_secret_of_a_rotation_is_accepted() -> None:
    assert by_jwt(jwt.encode(claims(), NEXT_SECRET, algorithm="HS256")) == "shop-a"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(forged({"alg": "none", "typ": "JWT"}, claims()), id="alg-none"),
        pytest.param(forged({"alg": "None"}, claims()), id="alg-None"),
        pytest.param(forged({"alg": "NONE"}, claims()), id="alg-NONE"),
        pytest.param(forged({"alg": "none"}, claims(), SECRET), id="alg-none-with-a-signature"),
        pytest.param(forged({"typ": "JWT"}, claims(), SECRET), id="no-alg"),
        pytest.param(forged({"alg": "hs256"}, claims(), SECRET), id="alg-lower-case"),
        pytest.param(jwt.encode(claims(), SECRET, algorithm="HS384"), id="HS384-right-secret"),
        pytest.param(jwt.encode(claims(), SECRET, algorithm="HS512"), id="HS512-right-secret"),
        # algorithm confusion: an asymmetric algorithm named, the shared secret used as the HMAC key
        pytest.param(forged({"alg": "RS256"}, claims(), SECRET), id="RS256-label-hmac-signature"),
        pytest.param(forged({"alg": "ES256"}, claims(), SECRET), id="ES256-label-hmac-signature"),
        pytest.param(forged({"alg": "PS256"}, claims(), SECRET), id="PS256-label-hmac-signature"),
        pytest.param(forged({"alg": "EdDSA"}, claims(), SECRET), id="EdDSA-label-hmac-signature"),
    ],
)
def test_any_algorithm_but_hs256_is_refused(token: str) -> None:
    rejection = refusal(by_jwt, token)
    assert rejection.problem is Problem.INVALID_CREDENTIALS
    assert rejection.message in ("invalid algorithm", "jwt malformed")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        pytest.param(
            jwt.encode(claims(), "another-secret-0123456789abcdef-0123", algorithm="HS256"),
            "invalid signature",
            id="wrong-secret",
        ),
        pytest.param(
            forged({"alg": "HS256"}, claims(), SECRET)[:-4] + "AAAA",
            "invalid signature",
            id="tampered-signature",
        ),
        pytest.param(
            forged({"alg": "HS256"}, claims(sub="shop-b"), SECRET),
            "invalid signature",
            id="tenant-without-secrets",
        ),
        pytest.param(
            forged({"alg": "HS256"}, claims(sub="shop-z"), SECRET), "invalid signature", id="unknown-tenant"
        ),
        pytest.param(
            forged({"alg": "HS256"}, {"exp": int(time.time()) + 60}, SECRET), "invalid signature", id="no-sub"
        ),
        pytest.param(
            forged({"alg": "HS256"}, claims(sub=["shop-a"]), SECRET),
            "invalid signature",
            id="sub-not-a-string",
        ),
        pytest.param("not.a.jwt", "jwt malformed", id="garbage"),
        pytest.param("", "No authorization token was found", id="empty"),
    ],
)
def test_bad_tokens_are_refused(token: str, message: str) -> None:
    rejection = refusal(by_jwt, token) if token else refusal(auth.by_jwt, DIRECTORY, {}, {})
    assert rejection.message == message


def test_the_payload_cannot_be_swapped_under_a_valid_signature() -> None:
    """A real shop-b token's signature over shop-a's claims: the signature covers the claims."""
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, _, signature = good.split(".")
    swapped = f"{header}.{b64(json.dumps(claims(role='admin')).encode())}.{signature}"
    assert refusal(by_jwt, swapped).message == "invalid signature"


@pytest.mark.parametrize(
    ("changes", "accepted", "message"),
    [
        pytest.param({"exp": -3600}, False, "jwt expired", id="expired-an-hour-ago"),
        pytest.param({"exp": -LEEWAY // 3}, True, None, id="expired-within-leeway"),
        pytest.param({"nbf": 3600}, False, "jwt not active", id="not-before-in-an-hour"),
        pytest.param({"nbf": LEEWAY // 3}, True, None, id="not-before-within-leeway"),
        pytest.param({"iat": 3600}, False, "jwt not active", id="issued-in-an-hour"),
        pytest.param({"exp": "tomorrow"}, False, "invalid token", id="exp-not-a-number"),
        pytest.param({"exp": None}, False, "invalid token", id="exp-null"),
    ],
)
def test_time_claims_with_a_small_leeway(
    changes: dict[str, Any], accepted: bool, message: str | None
) -> None:
    """Offsets in seconds from now, taken when the test runs (not when it is collected)."""
    now = int(time.time())
    timed = {k: now + v if isinstance(v, int) else v for k, v in changes.items()}
    token = jwt.encode(claims(**timed), SECRET, algorithm="HS256")
    if accepted:
        assert by_jwt(token) == "shop-a"
    else:
        assert refusal(by_jwt, token).message == message


# --- the verifier's memory of tokens -------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = auth.JwtVerifier(DIRECTORY)
    now = time.time()
    token = jwt.encode(claims(exp=int(now) + 60), SECRET, algorithm="HS256")
    assert verifier.tenant(bearer(token), {}, now) == "shop-a"

    def no_pyjwt(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a remembered token is verified again")

    with monkeypatch.context() as patched:
        patched.setattr(jwt, "decode", no_pyjwt)
        patched.setattr(jwt, "get_unverified_header", no_pyjwt)
        # in the query or the header alike, until just before exp + the leeway
        assert verifier.tenant({}, {"token": token}, now + 60 + LEEWAY - 1) == "shop-a"
        # from then on it is forgotten, and PyJWT decides again
        with pytest.raises(AssertionError, match="verified again"):
            verifier.tenant(bearer(token), {}, now + 60 + LEEWAY)
    assert len(verifier) == 0


def test_expiry_past_the_leeway_is_refused_by_pyjwt_with_its_message() -> None:
    verifier = auth.JwtVerifier(DIRECTORY)
    issued = int(time.time()) - 3 * LEEWAY
    token = jwt.encode(claims(iat=issued, exp=issued + LEEWAY), SECRET, algorithm="HS256")
    # expired LEEWAY s ago: PyJWT, at the real time, refuses it; the verifier never remembered it
    assert refusal(verifier.tenant, bearer(token), {}, time.time()).message == "jwt expired"
    assert len(verifier) == 0


def test_refusals_are_never_remembered() -> None:
    verifier = auth.JwtVerifier(DIRECTORY)
    forged_token = forged({"alg": "HS256", "typ": "JWT"}, claims(), "not-the-secret")
    for _ in range(2):
        assert refusal(verifier.tenant, bearer(forged_token), {}, time.time()).message == "invalid signature"
    assert refusal(verifier.tenant, {}, {}, time.time()).message == "No authorization token was found"
    assert len(verifier) == 0


def test_the_memory_is_bounded_oldest_first() -> None:
    verifier = auth.JwtVerifier(DIRECTORY, capacity=3)
    tokens = [jwt.encode(claims(jti=str(n)), SECRET, algorithm="HS256") for n in range(5)]
    for token in tokens:
        assert verifier.tenant(bearer(token), {}, time.time()) == "shop-a"
    assert len(verifier) == 3


# --- the verifier's memory of API keys -----------------------------------------------------------


def count_digests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys whose SHA-256 the directory computes from now on."""
    hashed: list[str] = []
    real = tenants.key_digest

    def spy(key: str) -> str:
        hashed.append(key)
        return real(key)

    monkeypatch.setattr(tenants, "key_digest", spy)
    return hashed


def test_a_found_key_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = count_digests(monkeypatch)
    keys = auth.KeyVerifier(DIRECTORY)
    for _ in range(3):
        assert auth.by_bearer_key(keys, {"Authorization": "Bearer key-a"}) == "shop-a"
        assert auth.by_retailrocket_query(keys, {"apiKey": "key-a", "partnerId": "partner-a"}) == "shop-a"
    assert hashed == ["key-a"]
    assert len(keys) == 1


def test_unknown_keys_are_decided_afresh_and_never_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = count_digests(monkeypatch)
    keys = auth.KeyVerifier(DIRECTORY)
    for _ in range(2):
        assert (
            refusal(auth.by_bearer_key, keys, {"Authorization": "Bearer key-c"}).message == "invalid API key"
        )
        assert (
            refusal(auth.by_bearer_key, keys, {"Authorization": "Bearer KEY-A"}).message == "invalid API key"
        )
    assert hashed == ["key-c", "KEY-A"] * 2
    assert len(keys) == 0


def test_a_remembered_key_still_meets_the_partner_check() -> None:
    keys = auth.KeyVerifier(DIRECTORY)
    assert auth.by_bearer_key(keys, {"Authorization": "Bearer key-a"}) == "shop-a"
    query = {"apiKey": "key-a", "partnerId": "partner-b"}
    assert refusal(auth.by_retailrocket_query, keys, query).problem is Problem.FORBIDDEN


def test_a_verifier_knows_only_its_own_directory() -> None:
    """A reload builds a new verifier for the new file (ReceiverState.use_tenants; the receiver test
    tests/receiver/test_tenants_reload.py goes through the real reload)."""
    remembering = auth.KeyVerifier(DIRECTORY)
    assert auth.by_bearer_key(remembering, {"Authorization": "Bearer key-b"}) == "shop-b"
    only_a = f'[[tenants]]\nid = "shop-a"\napi_keys = ["{tenants.key_digest("key-a")}"]\n'
    keys = auth.KeyVerifier(tenants.parse(only_a, {}))
    assert refusal(auth.by_bearer_key, keys, {"Authorization": "Bearer key-b"}).message == "invalid API key"
    assert auth.by_bearer_key(keys, {"Authorization": "Bearer key-a"}) == "shop-a"


def test_the_key_memory_is_bounded_oldest_first() -> None:
    digests = ", ".join(f'"{tenants.key_digest(f"key-{n}")}"' for n in range(5))
    directory = tenants.parse(f'[[tenants]]\nid = "shop-a"\napi_keys = [{digests}]\n', {})
    keys = auth.KeyVerifier(directory, capacity=3)
    for n in range(5):
        assert auth.by_bearer_key(keys, {"Authorization": f"Bearer key-{n}"}) == "shop-a"
    assert len(keys) == 3
