"""``tl-studio predict IMAGE... --run RUN | --model MODEL``: top-k labels for images."""

from __future__ import annotations

import json

from .common import CLIError


def add_parser(sub) -> None:
    s = sub.add_parser("predict", help="top-k labels for images")
    s.add_argument("images", nargs="+")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--run", help="a run directory")
    g.add_argument("--model", help="a registry model: its own ImageNet head")
    s.add_argument("--weights", default=None, metavar="FILE.safetensors",
                   help="with --model: the base model's weights from this local file")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run)


def run(args) -> int:
    from ..data.images import ImageRejected
    from ..predict import Predictor
    from ..runs import RunError

    if args.top_k < 1:
        raise CLIError("--top-k must be at least 1")
    if args.weights and not args.model:
        raise CLIError("--weights goes with --model (a run has its own weights)")
    try:
        pred = (Predictor.from_run(args.run) if args.run
                else Predictor.from_pretrained(args.model, pretrained=args.weights or True))
    except (RunError, KeyError) as exc:
        raise CLIError(exc.args[0] if isinstance(exc, KeyError) else str(exc)) from None
    except Exception as exc:
        raise CLIError(str(exc)) from None
    results = []
    for image in args.images:
        try:
            preds = pred.predict([image], args.top_k)[0]
        except (ImageRejected, OSError) as exc:
            raise CLIError(f"{image}: {exc}") from None
        results.append({"image": image, "predictions": [{"label": p["label"], "probability": p["probability"]} for p in preds]})
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for r in results:
            print(r["image"])
            for p in r["predictions"]:
                print(f"  {p['probability']:7.2%}  {p['label']}")
    return 0
