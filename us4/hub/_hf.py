"""What publish, download and diff share about talking to a Hub through `huggingface_hub`:
one way to turn its exceptions into one-line `HubError`s, and one switch for its progress bars."""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import HubError, Us4Error

REPO_TYPE = "dataset"

# Hub user tokens start with "hf_"; anything shaped like one is masked before it can reach
# a message, even if a server or library were to echo a header back.
_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{8,}")


def redact(text: str, token: str | None = None) -> str:
    secrets = [t for t in (token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")) if t]
    for secret in secrets:
        text = text.replace(secret, "***")
    return _TOKEN_SHAPE.sub("hf_***", text)


def check_repo_id(repo_id: str) -> tuple[str, str]:
    """`ORG/NAME` -> (org, name); the Hub's own rules, so that a typo fails before any work."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    org, sep, name = repo_id.partition("/")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"{repo_id!r}: not a valid repository id ({str(exc).splitlines()[0]})") from None
    if not sep or not org or not name:
        raise HubError(f"{repo_id!r}: a repository id is ORG/NAME")
    return org, name


@contextmanager
def hub_errors(what: str, token: str | None = None) -> Iterator[None]:
    """Turn `huggingface_hub` and transport failures into one `HubError` line about `what`."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        HTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except Us4Error:
        raise
    except RepositoryNotFoundError:
        raise HubError(f"{what}: no such dataset repository (or no access to it)") from None
    except RevisionNotFoundError:
        raise HubError(f"{what}: no such revision (tag, branch or commit)") from None
    except EntryNotFoundError as exc:
        raise HubError(f"{what}: file not found ({_first_line(exc, token)})") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubError(f"{what}: the Hub answered {status}: {_first_line(exc, token)}") from None
    except (HTTPError, OSError) as exc:
        raise HubError(f"{what}: cannot reach the Hub ({_first_line(exc, token)})") from None


def _first_line(exc: BaseException, token: str | None) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__, token)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Silence `huggingface_hub`'s bars for `--quiet`; the previous setting comes back afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled:  # leave the user's own setting (HF_HUB_DISABLE_PROGRESS_BARS) alone
        yield
        return
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
