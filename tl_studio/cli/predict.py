"""``tl-studio predict IMAGE... --run RUN | --model MODEL``: top-k labels for images.

Of several files, one that cannot be read as an image (a folder, a text
file, a broken JPEG) is reported on stderr, and in the JSON with its
``error``; the other images are still predicted, and the exit status is 2.
A single bad file is a plain one-line error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CLIError, add_json_flag, check_model, positive_int, print_json


def add_parser(sub) -> None:
    s = sub.add_parser("predict", help="top-k labels for images")
    s.add_argument("images", nargs="+", metavar="IMAGE")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="a run directory")
    g.add_argument("--model", help="a registry model: its own ImageNet head")
    s.add_argument("--weights", default=None, metavar="FILE.safetensors",
                   help="with --model: the base model's weights from this local file")
    s.add_argument("--top-k", type=positive_int, default=5)
    add_json_flag(s)
    s.set_defaults(func=run)


def _unreadable(image: str) -> str | None:
    """Why a path is not a file to open, before any decoding (None if it is one)."""
    p = Path(image)
    if not p.exists():
        return "no such file"
    if p.is_dir():
        return "is a folder, not an image (give the image files, e.g. FOLDER/*.jpg)"
    return None


def run(args) -> int:
    from ..data.images import ImageRejected
    from ..predict import Predictor

    if args.weights and not args.model:
        raise CLIError("--weights goes with --model (a run has its own weights)")
    if args.model is not None:
        check_model(args.model, pretrained=not args.weights)
    if len(args.images) == 1 and (why := _unreadable(args.images[0])):
        raise CLIError(f"{args.images[0]}: {why}")  # before the model loads
    pred = (Predictor.from_run(args.run) if args.run
            else Predictor.from_pretrained(args.model, pretrained=args.weights or True))
    results, bad = [], 0
    for image in args.images:
        why = _unreadable(image)
        if why is None:
            try:
                preds = pred.predict([image], args.top_k)[0]
            except (ImageRejected, OSError, ValueError) as exc:
                why = str(exc)
        if why is not None:
            if len(args.images) == 1:
                raise CLIError(f"{image}: {why}")
            bad += 1
            print(f"tl-studio predict: {image}: {why}", file=sys.stderr)
            results.append({"image": image, "error": why, "predictions": []})
            continue
        results.append({"image": image, "predictions": [{"label": p["label"], "probability": p["probability"]}
                                                        for p in preds]})
    if args.json:
        print_json(results)
    else:
        for r in results:
            if r.get("error"):
                continue
            print(r["image"])
            for p in r["predictions"]:
                print(f"  {p['probability']:7.2%}  {p['label']}")
    if bad == len(results):
        raise CLIError(f"none of the {len(results)} files could be read as an image")
    return 2 if bad else 0
