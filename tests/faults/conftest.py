"""The fault suite reuses the receiver's fixtures (the app in-process with its real producer)."""

from tests.receiver.conftest import directory, receiver_factory

__all__ = ["directory", "receiver_factory"]
