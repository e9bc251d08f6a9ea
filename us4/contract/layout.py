"""Where a release's neighbours lie: the folders a build and a download keep inside a release
folder (never published nor verified) and the local folder beside it. The builder writes
them, release and hub readers skip them: one place names them for both."""
from __future__ import annotations

from pathlib import Path

__all__ = ["DOWNLOAD_STATE", "LOCAL_IDS", "LOCAL_STATE", "LOCAL_SUFFIX", "LOCAL_TEXT", "WORK_DIR", "local_dir"]

#: the folder beside a release with the files of the machine that built it (where each hashed
#: id came from, the text read): never inside the release, never published; they may identify patients
LOCAL_SUFFIX = ".local"
#: folders a release folder may hold beside its files, never published nor verified: the
#: build's resume cache, and a download's resume records (huggingface_hub's)
WORK_DIR, DOWNLOAD_STATE = ".us4-work", ".cache"
LOCAL_STATE = (WORK_DIR, DOWNLOAD_STATE)
#: in the local folder: where each video id came from, and the burned-in text read in each clip
LOCAL_IDS, LOCAL_TEXT = "ids.csv", "text.json"


def local_dir(root: Path) -> Path:
    """`OUT.local`, beside the release folder `OUT`."""
    return root.parent / f"{root.name}{LOCAL_SUFFIX}"
