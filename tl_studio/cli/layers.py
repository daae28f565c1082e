"""``tl-studio layers MODEL``: a model's layer table (a curated name or a Hub id such as timm/convnext_atto.d2_in1k).

``--json`` prints one object: the model, its ``preprocessing`` with timm's key
names (input_size, interpolation, crop_pct, crop_mode, mean, std) and its
``layers`` (rows with name, output_shape, params, FLOPs, ...). Layers need no
weights, so a Hub model lists them with the network off.
"""

from __future__ import annotations

from .common import CLIError, add_json_flag, print_json, print_table, records


def add_parser(sub) -> None:
    s = sub.add_parser("layers", help="print a model's layer table")
    s.add_argument("model", help="a registry name or a Hub id (timm/NAME.TAG, hf_hub:ORG/NAME@REV, local-dir:PATH)")
    s.add_argument("--fine", action="store_true", help="every single module, not stages/blocks")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..layers import layer_table
    from ..registry import get_spec

    try:
        spec = get_spec(args.model)
        df = layer_table(args.model, "fine" if args.fine else "coarse")
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    except ValueError as exc:  # a timm model whose forward is not a chain of layers
        raise CLIError(f"{args.model}: {exc}") from None
    if args.json:
        print_json({"model": args.model, "preprocessing": spec.preprocess.timm_config(), "layers": records(df)})
    else:
        print_table(df)
    return 0
