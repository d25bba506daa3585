"""Browser tier: the vendors' own JavaScript clients against the whole pipeline (receiver, real Kafka,
consumer, sink), in Debian's Chromium run headless and from Node. The clients are pinned in
package-lock.json and installed by `npm ci` into tests/browser/node_modules (gitignored), again only
when the lock file changes. With CI=true a missing chromium, node or npm fails the run; elsewhere the
tests are skipped with the line that installs them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from pipeline import origins, tenants
from tests.browser.chromium import Browser, launch
from tests.browser.shop import Shop, shop_app
from tests.conftest import IN_CI
from tests.corpus import CORPUS, JWT_SECRET_ENV, jwt_secret

# The whole pipeline of the integration tier, in-process: receiver, consumers, each sink.
from tests.integration.conftest import pipeline, sink_url  # noqa: F401

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
LOCK = HERE / "package-lock.json"
STAMP = NODE_MODULES / ".eventpipe-lock-sha256"
NPM_SECONDS = 300
APT = "apt-get install -y --no-install-recommends"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        _unavailable(f"{name} is not installed: `{APT} {package}` (Debian) provides it")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def node() -> str:
    return tool("node", "nodejs")


@pytest.fixture(scope="session")
def node_modules(node: str) -> Path:
    """The pinned clients, installed exactly as package-lock.json says (integrity checked by npm)."""
    npm = tool("npm", "npm")
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return NODE_MODULES
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=NPM_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"`npm ci` in {HERE} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    STAMP.write_text(digest)
    return NODE_MODULES


@pytest.fixture(scope="session")
def topsort_sdk_version(node_modules: Path) -> str:
    """The installed @topsort/sdk's version, which must be the one package.json pins."""
    installed = json.loads((node_modules / "@topsort" / "sdk" / "package.json").read_text())["version"]
    pinned = json.loads((HERE / "package.json").read_text())["dependencies"]["@topsort/sdk"]
    assert installed == pinned, f"node_modules holds @topsort/sdk {installed}, package.json pins {pinned}"
    return str(installed)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with launch(tool("chromium", "chromium")) as running:
        yield running


@pytest.fixture
async def shop(node_modules: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Shop:
    """The shop's pages, on an origin of their own (another port than the receiver's)."""
    return await Shop.serve(shop_app(node_modules), aiohttp_server)


@pytest.fixture
async def elsewhere(node_modules: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Shop:
    """The same pages on a third origin, which shop-a does not allow."""
    return await Shop.serve(shop_app(node_modules), aiohttp_server)


@pytest.fixture
def corpus_tenants(shop: Shop) -> tenants.TenantDirectory:
    """The corpus tenants, shop-a allowing its shop's origin only (shop-b allows any): what the pipeline
    fixture's receiver serves."""
    directory = tenants.load(str(CORPUS / "tenants.toml"), {**os.environ, JWT_SECRET_ENV: jwt_secret()})
    allowed = origins.parse([shop.origin], "shop-a")
    return tenants.TenantDirectory(
        tuple(
            dataclasses.replace(t, allowed_origins=allowed) if t.id == "shop-a" else t
            for t in directory.tenants
        )
    )
