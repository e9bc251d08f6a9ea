"""Specific exceptions for unexpected states. Per-clip problems are not exceptions:
they are `Failure` values recorded in the release's failure ledger."""
from __future__ import annotations


class Us4Error(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class RecipeError(Us4Error):
    """A recipe file is missing, malformed, or names something unknown."""


class RawFolderError(Us4Error):
    """A --raw folder is missing, or is not what its source expects."""


class BuildError(Us4Error):
    """A build cannot go on (a worker process died); what it finished is kept."""


class StorageError(Us4Error, OSError):
    """The storage failed (full, read-only, not permitted): one line naming the path and the
    cause. An OSError still, for whoever catches those."""


class CacheError(Us4Error):
    """A file of the build's resume cache is damaged (never written by us4 as it is)."""


class ReleaseError(Us4Error):
    """A release folder is missing, incomplete, or not a us4 release."""


class VerificationError(Us4Error):
    """Files of a release do not match its lock; `problems` names each one."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


class HubError(Us4Error):
    """Publishing, downloading or serving through the Hub API failed."""


class TrainError(Us4Error):
    """A training or benchmark run cannot start (bad release, bad config, bad checkpoint)."""
