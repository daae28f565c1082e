"""``tl-studio layers MODEL``: a model's layer table (a curated name or a Hub id such as timm/convnext_atto.d2_in1k).

``--json`` prints one object: the model, its ``preprocessing`` with timm's key
names (input_size, interpolation, crop_pct, crop_mode, mean, std) and its
``layers`` (rows with name, output_shape, params, FLOPs, ...). Layers need no
weights, so a Hub model lists them with the network off.

``--plan FILE`` adds what the plan does to each layer, by the one rule the
checklist and training use (:func:`tl_studio.states.layer_states`): its state
(frozen, trains, removed), whether it is tapped, whether its BatchNorm trains,
and how many of its parameters train.
"""

from __future__ import annotations

from .common import CLIError, add_json_flag, print_json, print_table, read_plan, records


def add_parser(sub) -> None:
    s = sub.add_parser("layers", help="print a model's layer table")
    s.add_argument("model", help="a registry name or a Hub id (timm/NAME.TAG, hf_hub:ORG/NAME@REV, local-dir:PATH)")
    s.add_argument("--fine", action="store_true", help="every single module, not stages/blocks")
    s.add_argument("--plan", metavar="FILE", default=None,
                   help="a plan (or recommend --json output, or a run's config.json): each layer's state under it")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    from ..layers import layer_table
    from ..registry import get_spec

    plan = read_plan(args.plan) if args.plan else None
    if plan is not None and plan.model != args.model:
        raise CLIError(f"--plan {args.plan}: a plan for {plan.model}, not {args.model}")
    if plan is not None and args.fine:
        raise CLIError("--plan shows whole layers: drop --fine")
    try:
        spec = get_spec(args.model)
        df = layer_table(args.model, "fine" if args.fine else "coarse")
        if plan is not None:
            df = _with_states(df, plan)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    except ValueError as exc:  # a timm model whose forward is not a chain of layers
        raise CLIError(f"{args.model}: {exc}") from None
    if args.json:
        out = {"model": args.model, "preprocessing": spec.preprocess.timm_config(), "layers": records(df)}
        if plan is not None:
            from ..states import layer_states

            out["summary"] = layer_states(plan).summary()
        print_json(out)
    else:
        print_table(df)
    return 0


def _with_states(df, plan):
    """The coarse table with each body layer's state under ``plan`` (the classifier row says "replaced")."""
    from ..plan import PlanError
    from ..states import layer_states

    try:
        st = layer_states(plan)
    except PlanError as exc:
        raise CLIError(f"--plan: {exc}") from None
    rows = {s.name: s for s in st.layers}
    df = df.copy()
    df["state"] = [rows[n].state if n in rows else "replaced" for n in df["name"]]
    df["tapped"] = [bool(rows[n].tapped) if n in rows else False for n in df["name"]]
    df["bn_trains"] = [bool(rows[n].bn_trains) if n in rows else False for n in df["name"]]
    df["bn_eval"] = [bool(rows[n].bn_eval) if n in rows else False for n in df["name"]]
    df["trainable"] = [rows[n].trainable if n in rows else 0 for n in df["name"]]
    return df
