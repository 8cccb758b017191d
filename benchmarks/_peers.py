"""Peer extractors for ``bench_slides.py``, run in their own virtualenvs: one JSON line on stdout.

    PEER_PYTHON benchmarks/_peers.py histolab --slide S.tif --out DIR --count 500 --size 256

This module imports nothing from patchpack and only the standard library at the top: it runs under
the peers' interpreters (histolab pins numpy <= 1.24 and TIAToolbox needs numpy >= 2, so they live in
separate virtualenvs), each tool imported inside its own function. Every runner does what its library's
documentation shows for random tissue patches, one PNG file per patch, and times only the
extraction: imports happen before the clock starts, as they do for patchpack.

Each runner takes the parsed command line (``slide``, ``out``, ``count``, ``size`` in pixels,
``seed`` and ``tissue`` from 0 to 1) and returns the fields of that line: ``tool``, ``version``,
``patches`` (PNG files written), ``seconds`` (slide opened, tissue detected, patches read and saved)
and ``mask_seconds`` (the part of ``seconds`` spent on the slide-level tissue mask). A tool that
is not installed prints ``{"skipped": reason}`` and exits 0, so the benchmark reports it as skipped
instead of failing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# TIAToolbox has no random tiler: its sliding-window extractor lists candidate corners on a lattice
# of this step (in level-0 pixels), filters them by its Otsu tissue mask, and we draw from that list.
TIA_STEP = 32


def run_histolab(args: argparse.Namespace) -> dict[str, object]:
    """histolab's ``RandomTiler`` with its whole-tissue mask and its per-tile tissue check."""
    import histolab
    from histolab.masks import TissueMask
    from histolab.slide import Slide
    from histolab.tiler import RandomTiler

    start = time.perf_counter()
    slide = Slide(str(args.slide), processed_path=str(args.out))
    # TissueMask (every tissue region) rather than the default BiggestTissueBoxMask (one box), so
    # histolab draws from the same tissue that patchpack's mask covers. histolab caches the mask per
    # slide, so extract() below reuses it and the two phases can be timed apart.
    mask = TissueMask()
    mask(slide)
    masked = time.perf_counter()
    tiler = RandomTiler(
        tile_size=(args.size, args.size),
        n_tiles=args.count,
        level=0,
        seed=args.seed,
        check_tissue=True,
        tissue_percent=100.0 * args.tissue,
        max_iter=50 * args.count,
    )
    tiler.extract(slide, extraction_mask=mask, log_level="WARNING")
    end = time.perf_counter()
    return {
        "tool": "histolab",
        "version": histolab.__version__,
        "patches": len(list(Path(args.out).glob("*.png"))),
        "seconds": end - start,
        "mask_seconds": masked - start,
    }


def run_tiatoolbox(args: argparse.Namespace) -> dict[str, object]:
    """TIAToolbox's sliding-window extractor with its Otsu mask; ``count`` corners drawn at random."""
    import numpy as np
    import tiatoolbox
    from tiatoolbox.tools.patchextraction import get_patch_extractor
    from tiatoolbox.utils.misc import imwrite

    start = time.perf_counter()
    extractor = get_patch_extractor(
        "slidingwindow",
        input_img=str(args.slide),
        patch_size=(args.size, args.size),
        stride=(TIA_STEP, TIA_STEP),
        input_mask="otsu",
        min_mask_ratio=args.tissue,
        resolution=0,
        units="level",
        within_bound=True,
    )
    masked = time.perf_counter()
    chosen = np.random.default_rng(args.seed).choice(len(extractor), args.count, replace=False)
    out = Path(args.out)
    for number, item in enumerate(chosen.tolist()):
        imwrite(out / f"patch_{number:06d}.png", extractor[item])
    end = time.perf_counter()
    return {
        "tool": "tiatoolbox",
        "version": tiatoolbox.__version__,
        "patches": len(list(out.glob("*.png"))),
        "seconds": end - start,
        "mask_seconds": masked - start,
    }


def run_pyvips(args: argparse.Namespace) -> dict[str, object]:
    """libvips crops at the corners patchpack drew (``--corners``, a JSON list of level-0 (y, x)):
    one PNG file per patch (``--store png``, libvips' ``pngsave``) or the pixels in memory
    (``--store memory``). It detects no tissue, so ``mask_seconds`` is 0."""
    import pyvips

    corners = json.loads(Path(args.corners).read_text())
    out = Path(args.out)
    start = time.perf_counter()
    image = pyvips.Image.new_from_file(str(args.slide), access="random")  # page 0: level 0
    kept = []
    for number, (y, x) in enumerate(corners):
        crop = image.crop(x, y, args.size, args.size)
        if args.store == "png":
            crop.write_to_file(str(out / f"patch_{number:06d}.png"))
        else:
            kept.append(crop.write_to_memory())
    end = time.perf_counter()
    libvips = ".".join(str(pyvips.version(part)) for part in range(3))
    return {
        "tool": "pyvips",
        "version": f"{pyvips.__version__} (libvips {libvips})",
        "patches": len(list(out.glob("*.png"))) if args.store == "png" else len(kept),
        "seconds": end - start,
        "mask_seconds": 0.0,
    }


RUNNERS = {"histolab": run_histolab, "tiatoolbox": run_tiatoolbox, "pyvips": run_pyvips}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=sorted(RUNNERS))
    parser.add_argument("--slide", type=Path, required=True, help="the slide to read")
    parser.add_argument("--out", type=Path, required=True, help="empty folder for the PNG files")
    parser.add_argument("--count", type=int, required=True, help="patches to extract")
    parser.add_argument("--size", type=int, default=256, help="patch side, pixels (default 256)")
    parser.add_argument("--seed", type=int, default=2019, help="random seed (default 2019)")
    parser.add_argument(
        "--tissue", type=float, default=0.8, help="least tissue fraction of a patch (default 0.8)"
    )
    parser.add_argument("--corners", type=Path, help="pyvips: JSON list of level-0 (y, x) corners")
    parser.add_argument(
        "--store", choices=("png", "memory"), default="png", help="pyvips: PNG files or memory"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        result = RUNNERS[args.tool](args)
    except ImportError as exc:
        # Not installed in this interpreter: a skip to report, not a failure of the benchmark.
        result = {"skipped": f"{args.tool} is not importable in {sys.executable} ({exc})"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
