"""The contact sheet: sample frames of every source, drawn into the release as an attachment."""
from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

from ..contract.card import CONTACT_SHEET
from ..escape import one_line
from ..files import atomic_write
from .read import Release

_SHEET_PER_SOURCE = 8  # thumbnails in a source's row of the contact sheet
_THUMB = 160  # px, square
_LABEL_H = 18  # px of caption under each thumbnail


def write_contact_sheet(release: Release) -> Path:
    """Draw sample frames of every source into `assets/contact_sheet.png` inside the release.

    Deterministic: the same release gives the same PNG bytes (same Pillow). Register it
    with `us4.release.attach.add_attachment(release, path)`, which also renders the card.
    """
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    videos = release.videos(["video_id", "source", "label", "frame_ids"]).to_pylist()
    chosen: dict[str, list[tuple[int, str]]] = {}
    for source in sorted({v["source"] for v in videos}):
        chosen[source] = [(v["frame_ids"][len(v["frame_ids"]) // 2], v["label"])
                          for v in _spread(sorted((v for v in videos if v["source"] == source and v["frame_ids"]),
                                                  key=lambda v: v["video_id"]))]
    images = release.images(fid for picks in chosen.values() for fid, _ in picks)

    font = ImageFont.load_default()
    name_w = 150
    columns = max(len(picks) for picks in chosen.values())
    sheet = Image.new("L", (name_w + columns * _THUMB, len(chosen) * (_THUMB + _LABEL_H)), 255)
    draw = ImageDraw.Draw(sheet)
    for row, (source, picks) in enumerate(chosen.items()):
        y = row * (_THUMB + _LABEL_H)
        draw.text((6, y + _THUMB // 2), _fit(draw, font, source, name_w - 8), fill=0, font=font)
        for col, (fid, label) in enumerate(picks):
            with Image.open(io.BytesIO(images[fid])) as im:
                thumb = ImageOps.contain(im.convert("L"), (_THUMB - 4, _THUMB - 4), Image.Resampling.LANCZOS)
            x = name_w + col * _THUMB
            sheet.paste(thumb, (x + (_THUMB - thumb.width) // 2, y + (_THUMB - thumb.height) // 2))
            draw.text((x + 4, y + _THUMB + 2), _fit(draw, font, label, _THUMB - 8), fill=0, font=font)
    path = release.root / CONTACT_SHEET
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False, compress_level=9)
    atomic_write(path, buf.getvalue())
    return path


def _fit(draw, font, text: str, width: int) -> str:
    """A caption drawn as one line within `width` pixels (a label is data: never a second line)."""
    text = one_line(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _spread(videos: list[dict]) -> list[dict]:
    """Up to `_SHEET_PER_SOURCE` videos: the classes share the places in turn, and each
    class's videos are taken evenly across its (sorted) list rather than from its start."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for v in videos:
        by_label[v["label"]].append(v)
    labels = sorted(by_label)
    places = dict.fromkeys(labels, 0)
    while sum(places.values()) < _SHEET_PER_SOURCE and any(places[k] < len(by_label[k]) for k in labels):
        for label in labels:
            if places[label] < len(by_label[label]) and sum(places.values()) < _SHEET_PER_SOURCE:
                places[label] += 1
    return [by_label[k][i * len(by_label[k]) // places[k]] for k in labels for i in range(places[k])]
