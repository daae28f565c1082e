"""``tl-studio cache ls|clear``: the cached frozen-feature passes (one per model, weights and data).

They live under ``$TL_STUDIO_CACHE_DIR`` (default ``~/.cache/tl-studio/features``) with a size cap
(``$TL_STUDIO_CACHE_MB``); the least recently used go first when it is reached.
"""

from __future__ import annotations

from .common import add_json_flag, print_json, print_table


def add_parser(sub) -> None:
    s = sub.add_parser("cache", help="list or clear the cached frozen-feature passes",
                       description=__doc__.split("\n\n")[1])
    s.add_argument("action", choices=["ls", "clear"], help="ls: what is cached; clear: delete it all")
    s.add_argument("--dir", default=None, help="the cache folder (default $TL_STUDIO_CACHE_DIR or the user cache)")
    add_json_flag(s)
    s.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    from ..features import FeatureStore

    store = FeatureStore(args.dir)
    if args.action == "clear":
        files, size = store.clear()
        if args.json:
            print_json({"folder": str(store.root), "removed": files, "bytes": size})
        else:
            print(f"{store.root}: removed {files} cached pass(es), {size / 2**20:.1f} MB")
        return 0
    rows = store.entries()
    if args.json:
        print_json({"folder": str(store.root), "cap_megabytes": store.cap_bytes / 2**20, "entries": rows})
    elif not rows:
        print(f"{store.root}: empty")
    else:
        total = sum(r["megabytes"] for r in rows)
        print(f"{store.root}: {len(rows)} cached pass(es), {total:.1f} of {store.cap_bytes / 2**20:.0f} MB")
        print_table(pd.DataFrame(rows).drop(columns=["path"]))
    return 0
