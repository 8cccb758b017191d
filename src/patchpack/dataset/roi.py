"""Regions of interest: each source's ROI mask (tissue, label coverage or both), written to the
staging folder's ``roi/`` and recorded in its source record."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from patchpack.dataset.io import write_bytes_atomic
from patchpack.dataset.labels import open_labels
from patchpack.dataset.outdir import ROI_FOLDER
from patchpack.dataset.sources import SourceImage, SourceRecord
from patchpack.dataset.tissue import Roi, RoiMask
from patchpack.dataset.work import MaskJob, mask_job
from patchpack.engine.executors import DaskExecutor, Executor
from patchpack.errors import SourceError
from patchpack.params import Params


def _regions_of_interest(
    sources: list[SourceImage], params: Params, staging: Path, executor: Executor | DaskExecutor
) -> dict[str, tuple[Roi, SourceRecord]]:
    """Each source's region of interest (``extract.roi`` other than ``all``), written to
    ``staging/roi/``, and its manifest record.

    ``tissue`` masks are computed by the workers; ``mask`` is where the source's label file sets a
    class (or, with folder labels, where its ROI mask is set); ``tissue+mask`` is where both hold.
    The saved mask is the one sampling uses.
    """
    parts = params.extract.roi.split("+")
    if params.extract.roi == "all":
        return {}
    tissue: dict[str, RoiMask] = {}
    if "tissue" in parts:
        jobs = [MaskJob(source, params.source.max_megapixels) for source in sources]
        for source, (png, downsample) in zip(sources, executor.map(mask_job, jobs), strict=True):
            tissue[source.id] = RoiMask.from_png(png, downsample)
    result = {}
    for source in sources:
        mask = tissue.get(source.id)
        if "mask" in parts:
            covered = open_labels(source, params.labels, params.source.max_megapixels).coverage()
            mask = covered if mask is None else mask.intersect(covered)
            _check_covered(source, mask, "tissue" in parts)
        assert mask is not None  # "tissue" or "mask" is in parts
        png = mask.png()
        relative = f"{ROI_FOLDER}/{hashlib.sha256(source.id.encode()).hexdigest()[:16]}.png"
        write_bytes_atomic(staging / relative, png)
        record = dataclasses.replace(
            source.record(),
            roi=relative,
            roi_sha256=hashlib.sha256(png).hexdigest(),
            roi_downsample=mask.downsample,
        )
        roi = Roi(png, mask.downsample, params.extract.min_roi_fraction)
        result[source.id] = (roi, record)
    return result


def _check_covered(source: SourceImage, mask: RoiMask, with_tissue: bool) -> None:
    if mask.mask.any():
        return
    labels = source.labels.path if source.labels is not None else "its label file"
    where = "no tissue inside the area" if with_tissue else "no area"
    raise SourceError(
        f"{source.path}: {where} that {labels} labels, so extract.roi: mask leaves nothing to "
        f"sample; fix the label file or use extract.roi: all"
    )


def _record(source: SourceImage, roi: tuple[Roi, SourceRecord] | None) -> SourceRecord:
    return roi[1] if roi is not None else source.record()
