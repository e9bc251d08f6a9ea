"""The columns of a release's two tables, as Arrow schemas carrying Hugging Face features.

The build writes with these schemas; readers, the card, the Croissant description and
the Hub viewer read the `huggingface` metadata key, so the `image` column decodes as an
`Image` everywhere. Part of the release contract: a change here is a new lock format.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

#: The split names a release uses, spelled here only: a holdout's train and validation, Croissant's
#: test, and the folds fold0 .. fold{k-1} (`fold_name`).
TRAIN, VALIDATION, TEST = "train", "validation", "test"
_FOLD = "fold"


def fold_name(fold: int) -> str:
    """The split of fold `fold`: fold0, fold1, ..."""
    return f"{_FOLD}{fold}"


def fold_of(split: str) -> int | None:
    """The fold a split name is (fold3 -> 3), or None for a split that is no fold."""
    number = split.removeprefix(_FOLD)
    return int(number) if split.startswith(_FOLD) and number.isdigit() else None


IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
BOX = pa.list_(pa.int32(), 4)

# A clip's class and split, carried by each of its frames and by its videos row.
_LABEL_AND_SPLIT: list[tuple[str, pa.DataType]] = [
    ("label", pa.string()),
    ("label_id", pa.int16()),
    ("us4_label", pa.int16()),
    ("split", pa.string()),
    ("fold", pa.int8()),
    ("group", pa.string()),  # clips joined by the split rule (near-duplicates, a sheet column); null: alone
]

# Physical size of a stored pixel, where the scanner says (DICOM ultrasound regions); null elsewhere.
_SPACING: list[tuple[str, pa.DataType]] = [
    ("spacing_x_mm", pa.float64()),
    ("spacing_y_mm", pa.float64()),
]

FRAME_FIELDS: list[tuple[str, pa.DataType]] = [
    ("image", IMAGE),
    ("frame_id", pa.int64()),
    ("source", pa.string()),
    ("video_id", pa.string()),
    ("frame_index", pa.int32()),
    ("pts", pa.float64()),
    *_LABEL_AND_SPLIT,
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("crop_box", BOX),
    ("probe", pa.string()),
    ("organ", pa.string()),
    ("colour", pa.bool_()),
    *_SPACING,
    ("clip_sha256", pa.string()),
    ("frame_sha256", pa.string()),
    ("phash", pa.uint64()),
]

#: the columns of every videos table; a recipe's facts (per-video values from a sheet) follow them
VIDEO_FIELDS: list[tuple[str, pa.DataType]] = [
    ("video_id", pa.string()),
    ("source", pa.string()),
    ("path", pa.string()),
    *_LABEL_AND_SPLIT,
    ("probe", pa.string()),
    ("organ", pa.string()),
    ("licence", pa.string()),
    ("input", pa.string()),  # video, dicom or image_sequence
    ("container", pa.string()),
    ("codec", pa.string()),
    ("transfer_syntax", pa.string()),  # DICOM only
    ("fps", pa.float64()),  # null for a single still image
    ("timing", pa.string()),  # where fps came from: container, frame_time, ..., recipe
    ("n_frames", pa.int32()),
    ("duration", pa.float64()),
    ("orig_width", pa.int32()),
    ("orig_height", pa.int32()),
    ("rotation", pa.int16()),
    ("crop_box", BOX),
    ("colour", pa.bool_()),
    *_SPACING,
    ("text_boxes", pa.list_(BOX)),  # burned-in text found inside the crop (x, y, w, h in the stored image)
    ("text_action", pa.string()),  # none, masked, warned, or declared (burned in per the file, none inside the crop)
    ("attributes", pa.string()),  # JSON of the allow-listed DICOM attributes; null for other inputs
    ("clip_sha256", pa.string()),
    ("n_kept", pa.int32()),
    ("n_duplicates_dropped", pa.int32()),
    ("frame_ids", pa.list_(pa.int64())),
    ("frame_indices", pa.list_(pa.int32())),
]

#: a fact's type in a recipe -> its column's type in the videos table
FACT_TYPES: dict[str, pa.DataType] = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(),
                                      "str": pa.string()}


def _hf_feature(dtype: pa.DataType) -> dict:
    if dtype == IMAGE:
        return {"_type": "Image"}
    if pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype):
        feature = {"feature": _hf_feature(dtype.value_type), "_type": "List"}
        if pa.types.is_fixed_size_list(dtype):
            feature["length"] = dtype.list_size
        return feature
    name = {pa.bool_(): "bool", pa.string(): "string", pa.binary(): "binary"}.get(dtype, str(dtype))
    return {"dtype": name, "_type": "Value"}


def _schema(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    features = {name: _hf_feature(dtype) for name, dtype in fields}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}, sort_keys=True).encode()}
    return pa.schema(fields, metadata=meta)


FRAMES_SCHEMA = _schema(FRAME_FIELDS)
VIDEOS_SCHEMA = _schema(VIDEO_FIELDS)  # of a release whose recipe declares no facts
SCHEMAS = {"frames": FRAMES_SCHEMA, "videos": VIDEOS_SCHEMA}


def release_schemas(facts: Sequence[tuple[str, str]]) -> dict[str, pa.Schema]:
    """The schemas of a release whose recipe declares these fact columns ((name, type), in the
    recipe's order: `Recipe.fact_fields`, `Lock.fact_fields`): the videos table has them after its own."""
    if not facts:
        return SCHEMAS
    return {"frames": FRAMES_SCHEMA, "videos": _schema(VIDEO_FIELDS + [(n, FACT_TYPES[t]) for n, t in facts])}
