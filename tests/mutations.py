"""Hypothesis strategies that turn a corpus request into a hostile one: fields dropped, duplicated,
renamed or retyped; raw JSON text no encoder writes (NaN, Infinity, huge numbers, deep nesting,
duplicate keys); bytes that are not UTF-8 or not whole; wrong content types and encodings; broken
credentials. Each request carries the names of its mutations, so a failure says what was done."""

from __future__ import annotations

import copy
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tests.corpus import Case


@dataclass(frozen=True)
class Raw:
    """JSON text written as is."""

    text: str


@dataclass(frozen=True)
class Pairs:
    """An object whose members may repeat a key."""

    members: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class HttpRequest:
    vendor: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    mutations: tuple[str, ...] = field(default=())


def _digits(n: int) -> str:
    return "1" + "0" * (n - 1)


# JSON text no client's encoder writes, but a hostile client may.
RAW_FRAGMENTS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    _digits(20),
    _digits(400),
    _digits(1002),
    "-" + _digits(4000),
    _digits(5000),
    "1e309",
    "1e1001",
    "-1e999999",
    "1e-999999",
    "0." + "0" * 1200 + "1",
    "[" * 900 + "]" * 900,
    "[" * 1000 + "]" * 1000,
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    '"\\ud800"',
    '"\\u0000"',
    '"' + "x" * 200_000 + '"',
    "{}",
    "[]",
    "",
]

INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x80"]

# Encodings sent really encoded, as a client would (the receiver reads x-gzip as gzip, refuses the rest).
ENCODERS = {"x-gzip": gzip.compress}

CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/vnd.api+json",
    "application/xml",
]

# Any JSON scalar, integers past int64 included; vendor tests add their own telling strings.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def serialize(node: Any) -> str:
    """JSON text of a tree that may hold Raw and Pairs nodes."""
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{serialize(v)}" for k, v in node.members) + "}"
    if isinstance(node, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{serialize(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ",".join(serialize(v) for v in node) + "]"
    return json.dumps(node, ensure_ascii=False)


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value below node, containers included, dicts and lists only."""
    found: list[tuple[Any, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((node, key))
            found.extend(_slots(value))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((node, index))
            found.extend(_slots(value))
    return found


def _mutate_tree(draw: st.DrawFn, root: Any) -> tuple[Any, str]:
    """One mutation of the decoded body; returns the new root and the mutation's name."""
    slots = _slots(root)
    kind = draw(
        st.sampled_from(
            ["add", "drop", "duplicate", "retype", "raw", "rename", "wrap"] if slots else ["wrap", "raw"]
        )
    )
    if kind == "wrap":
        return draw(st.sampled_from([[root], {"data": root}, {"events": root}])), "wrap"
    if not slots:
        return Raw(draw(st.sampled_from(RAW_FRAGMENTS))), "raw-root"
    container, key = draw(st.sampled_from(slots))
    if kind == "add":
        # an unknown field, which every vendor keeps: exercises the accepting path with odd values
        target = container[key] if isinstance(container[key], dict) else root
        if isinstance(target, dict):
            name = draw(st.sampled_from(["extra", "note", "x-custom", "zz"]))
            target[name] = draw(json_values)
            return root, f"add {name!r}"
        root.append(draw(json_values))  # the root is an array (visitorEvents)
        return root, "add item"
    if kind == "drop":
        del container[key]
        return root, f"drop {key!r}"
    if kind == "retype":
        container[key] = draw(json_values)
        return root, f"retype {key!r}"
    if kind == "raw":
        fragment = draw(st.sampled_from(RAW_FRAGMENTS))
        container[key] = Raw(fragment)
        return root, f"raw {key!r}={fragment[:20]!r}"
    if kind == "rename" and isinstance(container, dict):
        new_key = draw(st.sampled_from([str(key).lower(), str(key).upper(), f"{key} ", "", "$" + str(key)]))
        container[new_key] = container.pop(key)
        return root, f"rename {key!r}->{new_key!r}"
    # duplicate: a repeated key in an object, a repeated item in a list
    if isinstance(container, dict):
        again = container[key] if draw(st.booleans()) else draw(json_values)
        members = (*container.items(), (key, again))
        replacement = Pairs(members)
        if container is root:
            return replacement, f"duplicate key {key!r}"
        for parent, parent_key in _slots(root):
            if parent[parent_key] is container:
                parent[parent_key] = replacement
                break
        return root, f"duplicate key {key!r}"
    container.insert(key, copy.deepcopy(container[key]))
    return root, f"duplicate item {key!r}"


def _mutate_bytes(draw: st.DrawFn, body: bytes) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["truncate", "invalid-utf8", "empty", "bom", "whitespace"]))
    if kind == "truncate":
        cut = draw(st.integers(min_value=0, max_value=max(len(body) - 1, 0)))
        return body[:cut], f"truncate at {cut}"
    if kind == "invalid-utf8":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        bad = draw(st.sampled_from(INVALID_UTF8))
        return body[:at] + bad + body[at:], f"invalid utf-8 {bad!r} at {at}"
    if kind == "bom":
        return b"\xef\xbb\xbf" + body, "utf-8 bom"
    if kind == "whitespace":
        return b" \n\t" + body + b"\r\n ", "whitespace"
    return b"", "empty body"


def _mutate_http(draw: st.DrawFn, request: HttpRequest) -> tuple[HttpRequest, str]:
    headers = dict(request.headers)
    query = dict(request.query)
    path, body = request.path, request.body
    kind = draw(
        st.sampled_from(
            ["content-type", "no-content-type", "gzip", "deflate", "fake-gzip", "encoding", "auth", "method"]
        )
    )
    if kind == "content-type":
        headers["Content-Type"] = draw(st.sampled_from(CONTENT_TYPES))
        name = f"content-type {headers['Content-Type']!r}"
    elif kind == "no-content-type":
        headers.pop("Content-Type", None)
        name = "no content-type"
    elif kind == "gzip":
        headers["Content-Encoding"], body, name = "gzip", gzip.compress(body), "gzip"
    elif kind == "deflate":
        headers["Content-Encoding"], body, name = "deflate", zlib.compress(body), "deflate"
    elif kind == "fake-gzip":
        headers["Content-Encoding"], name = "gzip", "gzip header, plain body"
    elif kind == "encoding":
        encoding = draw(st.sampled_from(["br", "zstd", "compress", "identity", "gzip, gzip", "x-gzip"]))
        headers["Content-Encoding"], body = encoding, ENCODERS.get(encoding, bytes)(body)
        name = f"content-encoding {encoding!r}"
    elif kind == "auth":
        name = _break_credentials(draw, headers, query)
    else:
        path = draw(
            st.sampled_from(["/1.0/view", "/1.0/order", "/1.0/visitorEvents", "/1.0/nosuch", "/1.0/VIEW"])
        )
        if request.vendor != "retailrocket":
            return request, "method (not Retail Rocket)"
        name = f"path {path}"
    return HttpRequest(request.vendor, path, query, headers, body, request.mutations), name


def _break_credentials(draw: st.DrawFn, headers: dict[str, str], query: dict[str, str]) -> str:
    how = draw(st.sampled_from(["drop", "garble", "scheme", "alg-none"]))
    if "apiKey" in query:
        if how == "drop":
            query.pop(draw(st.sampled_from(["apiKey", "partnerId"])), None)
        else:
            query["apiKey"] = query["apiKey"] + "x"
        return f"retailrocket credentials {how}"
    token = headers.get("Authorization", "")
    if how == "drop":
        headers.pop("Authorization", None)
    elif how == "garble":
        headers["Authorization"] = token[:-3] + "abc" if token else "Bearer abc"
    elif how == "scheme":
        headers["Authorization"] = token.replace("Bearer ", "Basic ", 1) if token else "Basic Zm9vOmJhcg=="
    else:
        # an unsigned token naming a real tenant: must never pass
        headers["Authorization"] = "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJzaG9wLWEifQ."
    return f"credentials {how}"


@st.composite
def hostile_requests(draw: st.DrawFn, cases: list[Case]) -> HttpRequest:
    """A corpus request with one to five mutations of its decoded body, its bytes and its HTTP envelope."""
    case = draw(st.sampled_from(cases))
    mutations: list[str] = []
    tree_edits = draw(st.integers(min_value=0, max_value=3)) if case.body_json is not None else 0
    byte_edit = draw(st.integers(min_value=0, max_value=3)) == 0
    http_edit = draw(st.integers(min_value=0, max_value=2)) == 0
    if not (tree_edits or byte_edit or http_edit):
        if case.body_json is not None:
            tree_edits = 1
        else:
            byte_edit = True
    body = case.body
    if tree_edits:
        root = copy.deepcopy(case.body_json)
        for _ in range(tree_edits):
            root, name = _mutate_tree(draw, root)
            mutations.append(name)
        body = serialize(root).encode("utf-8", "surrogatepass")
    if byte_edit:
        body, name = _mutate_bytes(draw, body)
        mutations.append(name)
    request = HttpRequest(case.vendor, case.path, dict(case.query), dict(case.headers), body)
    if http_edit:
        request, name = _mutate_http(draw, request)
        mutations.append(name)
    return HttpRequest(
        request.vendor, request.path, request.query, request.headers, request.body, (case.id, *mutations)
    )
