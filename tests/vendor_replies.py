"""Each vendor's reply shapes as the vendor documents them (DESIGN.md's table, shared/seeds), written
here rather than read from the code under test: a 2xx in the vendor's success shape, anything refused
in its error shape, and never a 5xx."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec


class _Shape(msgspec.Struct, forbid_unknown_fields=True):
    pass


class TopsortError(_Shape):
    errCode: str
    docUrl: str
    message: str


class RetailRocketProblem(_Shape):
    code: str
    message: str
    path: str | None


class RetailRocketError(_Shape):
    error: RetailRocketProblem


class DfineryResult(_Shape):
    result_code: int
    result_msg: str | None
    result_data: dict[str, Any] | None


class ImpressionErrors(_Shape):
    message: str
    # express-jwt's error object ({status, name, message, code}) or {} for a schema error
    error: dict[str, Any]


class ImpressionError(_Shape):
    errors: ImpressionErrors


class ImpressionOk(_Shape):
    status: str
    result: int


_EXPRESS_ERROR_KEYS = {"status", "name", "message", "code"}


def _topsort(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status < 300:
        assert status == 204 and body == b"", (status, body)
        return
    error = msgspec.json.decode(body, type=TopsortError)
    assert error.errCode and error.docUrl.startswith("https://"), error


def _retailrocket(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status < 300:
        assert status == 200 and body == b"", (status, body)
        return
    error = msgspec.json.decode(body, type=RetailRocketError).error
    assert error.code and error.message, error
    if status == 400:
        # a 400 names the field: a body path, or a query parameter (`query.partnerId`)
        assert error.path and error.path.startswith(("$", "query.")), error


def _dfinery(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status == 401:
        # the document's 401 (no token) has no body; the reason travels in a header
        assert body == b"" and headers.get("X-Eventpipe-Error"), (body, dict(headers))
        return
    result = msgspec.json.decode(body, type=DfineryResult)
    if status < 300:
        assert status == 200 and result.result_code == 2000, result
        assert result.result_data is not None and result.result_data.get("event_id"), result
        return
    assert 4000 <= result.result_code < 5000 and result.result_msg, result


def _impression(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status < 300:
        ok = msgspec.json.decode(body, type=ImpressionOk)
        assert status == 200 and (ok.status, ok.result) == ("OK", 1), ok
        return
    errors = msgspec.json.decode(body, type=ImpressionError).errors
    assert errors.message, errors
    if status == 400:
        assert errors.error == {} and errors.message.startswith("json not comply with schema"), errors
    else:
        assert set(errors.error) == _EXPRESS_ERROR_KEYS and errors.error["status"] == status, errors


SHAPES: Mapping[str, Callable[[int, Mapping[str, str], bytes], None]] = {
    "topsort": _topsort,
    "retailrocket": _retailrocket,
    "dfinery": _dfinery,
    "impression": _impression,
}


def assert_vendor_reply(vendor: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
    """A 2xx in the vendor's success shape or a 4xx in its error shape; a 5xx fails."""
    assert status < 500, (vendor, status, body[:300])
    assert 200 <= status < 300 or 400 <= status < 500, (vendor, status, body[:300])
    try:
        SHAPES[vendor](status, headers, body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AssertionError(
            f"{vendor} {status} reply not in the vendor's shape: {exc}: {body[:300]!r}"
        ) from exc
