"""The long-running commands (receiver, consumer, dev, migrate), registered on the CLI parser."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def register(add: Callable[[str, str, Handler], argparse.ArgumentParser]) -> None:
    return None
