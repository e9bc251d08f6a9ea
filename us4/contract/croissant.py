"""The release described in Croissant (MLCommons' metadata format for ML datasets).

`render_croissant` is a pure function of the lock (like the card): every shard as a
FileObject with its sha256, a FileSet per config, record sets for frames and videos
whose fields follow the release schema, the splits as a `cr:Split` record set, the
sources' licences and the citations. The build writes `croissant.json` and records
its sha256 and `CROISSANT_FORMAT` in the lock, so it is verified like any other file.
"""
from __future__ import annotations

import json

import pyarrow as pa

from ..escape import json_in_html
from ..registry import CITATIONS
from .card import CONFIGS, citation_keys, source_definition, title
from .lock import Lock
from .schema import IMAGE, TEST, TRAIN, VALIDATION, release_schemas

#: Bump when the description's layout changes; recorded in the lock beside its sha256.
CROISSANT_FORMAT = 2

_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
_SPLIT_URLS = {TRAIN: "cr:TrainingSplit", VALIDATION: "cr:ValidationSplit", TEST: "cr:TestSplit"}
_PARQUET = "application/x-parquet"
_KEYS = {"frames": "frame_id", "videos": "video_id"}


def render_croissant(lock: Lock) -> bytes:
    """croissant.json of a release with this lock (deterministic bytes). Pages embed Croissant as
    JSON-LD in a `<script>` block: no string of it (a description, a licence) can close that block."""
    sources = sorted(lock.recipe.sources)
    definitions = [source_definition(lock, s) for s in sources]
    doc = {
        "@context": _CONTEXT,
        "@type": "sc:Dataset",
        "name": lock.name,
        "description": f"{title(lock)}: {lock.description}".strip(),
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "citeAs": "\n\n".join(CITATIONS[k].bibtex for k in citation_keys(lock)),
        "license": [f"{d.name}: {d.licence}" for d in definitions],
        **({"url": url} if (url := next((d.url for d in definitions if d.url), None)) else {}),
        "version": lock.version,
        "keywords": ["ultrasound", "medical imaging", "video frames", "us4"] + (["synthetic"] if lock.phantom else []),
        "isLiveDataset": False,
        "distribution": _distribution(lock),
        "recordSet": [_splits(lock), *(_record_set(config, schema) for config, schema in
                                       release_schemas(lock.fact_fields()).items())],
    }
    return (json_in_html(json.dumps(doc, indent=1, ensure_ascii=False)) + "\n").encode()


def _distribution(lock: Lock) -> list[dict]:
    files = [{"@type": "cr:FileObject", "@id": s.path, "name": s.path, "contentUrl": s.path,
              "encodingFormat": _PARQUET, "contentSize": f"{s.bytes} B", "sha256": s.sha256} for s in lock.shards]
    sets = [{"@type": "cr:FileSet", "@id": f"{config}-shards", "name": f"{config}-shards",
             "description": f"the {config} shards (Parquet), one folder per source",
             "encodingFormat": _PARQUET, "includes": f"data/{config}/*/*.parquet"} for config in CONFIGS]
    return files + sets


def _splits(lock: Lock) -> dict:
    names = sorted({s.split for s in lock.shards})
    return {
        "@type": "cr:RecordSet", "dataType": "cr:Split", "@id": "splits", "name": "splits",
        "description": "the release's splits, by video (folds are cross-validation folds)",
        "key": {"@id": "splits/name"},
        "field": [{"@type": "cr:Field", "@id": "splits/name", "name": "name", "dataType": "sc:Text"},
                  {"@type": "cr:Field", "@id": "splits/url", "name": "url", "dataType": "sc:URL"}],
        "data": [{"splits/name": n, "splits/url": _SPLIT_URLS.get(n, f"cr:{n}")} for n in names],
    }


def _record_set(config: str, schema: pa.Schema) -> dict:
    fields = []
    for f in schema:
        field = {"@type": "cr:Field", "@id": f"{config}/{f.name}", "name": f.name, "dataType": _data_type(f.type),
                 "source": {"fileSet": {"@id": f"{config}-shards"}, "extract": {"column": f.name}}}
        if f.type == IMAGE:
            field["source"]["transform"] = {"jsonPath": "bytes"}
        if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type):
            field["repeated"] = True
        if f.name == "split":
            field["references"] = {"field": {"@id": "splits/name"}}
        fields.append(field)
    return {"@type": "cr:RecordSet", "@id": config, "name": config,
            "description": f"one row per {'frame' if config == 'frames' else 'clip'}",
            "key": {"@id": f"{config}/{_KEYS[config]}"}, "field": fields}


def _data_type(dtype: pa.DataType) -> str:
    if dtype == IMAGE:
        return "sc:ImageObject"
    while pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype):
        dtype = dtype.value_type
    if pa.types.is_integer(dtype):
        return "sc:Integer"
    if pa.types.is_floating(dtype):
        return "sc:Float"
    if pa.types.is_boolean(dtype):
        return "sc:Boolean"
    return "sc:Text"
