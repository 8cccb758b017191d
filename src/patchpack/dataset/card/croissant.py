"""``croissant.json``: the dataset described in MLCommons Croissant 1.0 (JSON-LD).

Croissant tools cannot read HDF5, so the shards are ``FileObject``s with their sha256 (what a tool
can fetch and check), and the records are those of ``index.csv``: the record set ``patches`` has
one record per patch (split, shard, row, label, class name, source, position, digest), whose
``label`` references the record set ``classes`` (the class names, given inline). The manifest is a
``FileObject`` too. Every value comes from the manifest and the index's sha256, so the file is a
function of the dataset: no date, no absolute path.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from patchpack.dataset.card.index import COLUMNS, INDEX_NAME

if TYPE_CHECKING:
    from patchpack.dataset.manifest import Manifest

CROISSANT_NAME = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

# The standard @context of Croissant 1.0 (as the specification and mlcroissant give it).
CONTEXT: dict[str, Any] = {
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
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
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
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

_TEXT_COLUMNS = ("split", "shard", "class_name", "source_id", "digest")
_MEANING = {
    "split": "train, val or test",
    "shard": "the HDF5 shard holding the patch, relative to the dataset folder",
    "row": "the patch's row in its shard (0-based)",
    "label": "the class number (see the record set classes)",
    "class_name": "the class's name",
    "source_id": "the source image, its relative path",
    "patch_index": "the patch's number within its source image",
    "level": "the pyramid level the patch was cut from",
    "y": "top edge of the patch, level-0 pixels",
    "x": "left edge of the patch, level-0 pixels",
    "digest": "the patch's 16-hex-character digest, as the manifest records it",
}


def croissant(manifest: Manifest, *, description: str, index_sha256: str) -> dict[str, Any]:
    """The Croissant JSON-LD of the dataset ``manifest`` describes, as a plain mapping."""
    card = manifest.params.card
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": card.name,
        "description": description,
        "identifier": f"sha256:{manifest.fingerprint}",
        "keywords": ["image patches", "HDF5", "patchpack"],
        "distribution": _files(manifest, index_sha256),
        "recordSet": [_classes(manifest), _patches()],
    }
    if card.license is not None:
        doc["license"] = card.license
    if card.citation is not None:
        doc["citeAs"] = card.citation
    if card.url is not None:
        doc["url"] = card.url
    return doc


def _file(name: str, fmt: str, sha256: str, description: str) -> dict[str, Any]:
    return {
        "@type": "cr:FileObject",
        "@id": name,
        "name": name,
        "description": description,
        "contentUrl": name,
        "encodingFormat": fmt,
        "sha256": sha256,
    }


def _files(manifest: Manifest, index_sha256: str) -> list[dict[str, Any]]:
    manifest_sha = hashlib.sha256(manifest.to_json().encode("utf-8")).hexdigest()
    files = [
        _file(
            "manifest.json",
            "application/json",
            manifest_sha,
            "what the dataset holds, with the hashes that prove it",
        ),
        _file(INDEX_NAME, "text/csv", index_sha256, "one row per patch"),
    ]
    files += [
        _file(
            entry.path,
            "application/x-hdf5",
            entry.sha256,
            f"{entry.patches} patches of the {entry.split} split (HDF5)",
        )
        for entry in manifest.shards
    ]
    return files


def _classes(manifest: Manifest) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet",
        "@id": "classes",
        "name": "classes",
        "description": "the class names, by class number",
        "key": {"@id": "classes/label"},
        "field": [
            {
                "@type": "cr:Field",
                "@id": "classes/label",
                "name": "label",
                "dataType": "sc:Integer",
            },
            {
                "@type": "cr:Field",
                "@id": "classes/name",
                "name": "name",
                "dataType": "sc:Text",
            },
        ],
        "data": [
            {"classes/label": number, "classes/name": name}
            for number, name in enumerate(manifest.class_names)
        ],
    }


def _patches() -> dict[str, Any]:
    fields = []
    for column in COLUMNS:
        field: dict[str, Any] = {
            "@type": "cr:Field",
            "@id": f"patches/{column}",
            "name": column,
            "description": _MEANING[column],
            "dataType": "sc:Text" if column in _TEXT_COLUMNS else "sc:Integer",
            "source": {"fileObject": {"@id": INDEX_NAME}, "extract": {"column": column}},
        }
        if column == "label":
            field["references"] = {"field": {"@id": "classes/label"}}
        fields.append(field)
    return {
        "@type": "cr:RecordSet",
        "@id": "patches",
        "name": "patches",
        "description": "one record per patch: where it is stored and where it comes from",
        "key": [{"@id": "patches/shard"}, {"@id": "patches/row"}],
        "field": fields,
    }
