"""Errors raised by the model store. The API maps them to HTTP statuses in one place."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for model-store errors."""


class ModelNotFound(StoreError):
    pass


class VersionNotFound(StoreError):
    pass


class NoActiveVersion(StoreError):
    pass


class ActivationRefused(StoreError):
    """The version exists but may not become active (e.g. it failed ONNX parity)."""


class InvalidName(StoreError):
    pass


class ManifestInvalid(StoreError):
    pass
