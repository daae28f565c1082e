"""The layer plan: which layers freeze, train or go, and what new head to add.

A plan is an immutable value with one JSON form. ``tl-studio train --plan
FILE.json``, ``tl-studio recommend --json`` and a run's ``config.json`` all
carry exactly this form, so a plan made in the UI can be trained from the CLI
and back. Edit a plan with :func:`dataclasses.replace` or its ``with_*``
methods: a job holds the plan it was started with, and nothing can change it
under the job.

Layer names are the stable names of the layer table (``tl-studio layers
MODEL``). A name may be a coarse layer ("layer3.1") or anything inside one
("layer3.1.bn2"); for each parameter the longest matching name decides.

A plan is canonical: ``layers`` holds only the entries that change what some
parameter would otherwise get (from a shorter name, or ``default``), sorted by
name. Two plans that train the same parameters the same way are equal, and a
round trip through the UI's controls never leaves a redundant entry behind.

Which parameters actually train (the BatchNorm policy included) is decided in
one place, :func:`tl_studio.states.layer_states`; this module only stores the
user's choices.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Mapping

from .errors import InputError

SCHEMA = "tl-studio/plan"
# 2: canonical ``layers`` (1 could list redundant entries; it reads the same).
VERSION = 2
READS_VERSIONS = (1, 2)
FROZEN, TRAIN = "frozen", "train"
BN_POLICIES = ("frozen", "train", "eval")


# Upper bounds on a plan's numbers: beyond them a value is a mistake (or an attempt to
# exhaust the server's memory with a head of 10**9 units), never a setting.
MAX_CLASSES = 100_000
MAX_HIDDEN = 65_536
MAX_EPOCH = 10_000  # as TrainConfig's epochs


class PlanError(InputError, ValueError):
    """A plan that cannot be applied to its model; the message says which field and why."""


class LayerChoices(dict):
    """An immutable name -> "frozen" | "train" mapping (a dict, so JSON and ``==`` just work)."""

    def _readonly(self, *args, **kwargs):
        raise TypeError("a plan's layers cannot be changed in place; use plan.with_layers(...) or dataclasses.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly

    def __hash__(self):  # a frozen plan is hashable
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return (LayerChoices, (dict(self),))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _canonical(layers: Mapping[str, str], default: str) -> LayerChoices:
    """Drop every entry that repeats what a shorter matching name (or the default) gives.

    Shortest names first, so an entry is compared with the entries kept above
    it; a dropped entry had its parent's state, so it never changes the
    parent that a deeper entry sees.
    """
    kept: dict[str, str] = {}
    for name in sorted(layers, key=lambda n: (n.count("."), n)):
        parents = [p for p in kept if _matches(name, p) and p != name]
        inherited = kept[max(parents, key=len)] if parents else default
        if layers[name] != inherited:
            kept[name] = layers[name]
    return LayerChoices(sorted(kept.items()))


@dataclass(frozen=True)
class HeadSpec:
    """The new classifier: one FC layer, or two with a hidden layer between."""

    num_classes: int
    hidden: int = 0  # 0: a single FC layer; > 0: FC(hidden) -> ReLU -> dropout -> FC
    dropout: float = 0.2

    @property
    def fc_layers(self) -> int:
        return 2 if self.hidden else 1


@dataclass(frozen=True)
class Plan:
    model: str
    head: HeadSpec
    # layer name -> "frozen" | "train"; unlisted parameters follow `default`
    layers: Mapping[str, str] = field(default_factory=LayerChoices)
    default: str = TRAIN
    # every body layer after this one is removed (None: keep all)
    cut_after: str | None = None
    # layers whose globally pooled outputs are concatenated to feed the head
    taps: tuple[str, ...] = ()
    # "frozen": BatchNorm in frozen parts keeps its statistics and affine weights;
    # "train": those BatchNorm layers train (statistics and affine) anyway;
    # "eval": every BatchNorm, frozen or trained, runs in eval mode with its statistics fixed
    # (torchvision's FrozenBatchNorm2d), for small per-device batches; the affine weights of
    # BatchNorm in layers that train still train (otherwise a training layer would silently lose them)
    bn: str = "frozen"
    # the earliest trainable body layer learns at lr * body_lr_ratio, rising
    # geometrically to the head's lr (1.0: one learning rate for all)
    body_lr_ratio: float = 1.0
    # train only the new head for this many epochs first ("linear probe, then fine-tune")
    head_warmup_epochs: int = 0
    # from this epoch on, every kept layer trains ("sometimes it pays", at a lower lr)
    unfreeze_all_at: int | None = None

    def __post_init__(self):
        # Normalise containers so that equal plans compare (and serialise) equal.
        # Values of the wrong type are left for check_values() to name.
        if isinstance(self.taps, (list, tuple)):
            object.__setattr__(self, "taps", tuple(dict.fromkeys(self.taps)))
        if isinstance(self.layers, Mapping) and all(
            isinstance(k, str) and v in (FROZEN, TRAIN) for k, v in self.layers.items()
        ) and self.default in (FROZEN, TRAIN):
            object.__setattr__(self, "layers", _canonical(self.layers, self.default))

    # ---- construction helpers -------------------------------------------------
    @classmethod
    def head_only(cls, model: str, num_classes: int, **kw) -> "Plan":
        """Freeze the whole pretrained body; train only a new head."""
        return cls(model=model, head=kw.pop("head", HeadSpec(num_classes)), default=FROZEN, **kw)

    @classmethod
    def full(cls, model: str, num_classes: int, **kw) -> "Plan":
        """Replace the classifier, train everything."""
        return cls(model=model, head=kw.pop("head", HeadSpec(num_classes)), default=TRAIN, **kw)

    @classmethod
    def freeze_upto(cls, model: str, num_classes: int, layer_names: list[str], upto: str, **kw) -> "Plan":
        """Freeze every body layer up to and including ``upto``; train the rest."""
        if upto not in layer_names:
            raise PlanError(f"freeze_upto: unknown layer {upto!r}")
        stop = layer_names.index(upto)
        layers = {n: (FROZEN if i <= stop else TRAIN) for i, n in enumerate(layer_names)}
        return cls(model=model, head=kw.pop("head", HeadSpec(num_classes)), layers=layers, **kw)

    # ---- editing (new values; a plan never changes) -------------------------------
    def with_layers(self, names: Iterable[str], state: str) -> "Plan":
        """Set whole layers (and everything inside them) to ``state``."""
        names = list(names)
        layers = {k: v for k, v in self.layers.items() if not any(_matches(k, n) for n in names)}
        layers.update({n: state for n in names})
        return replace(self, layers=layers)

    def with_classes(self, num_classes: int) -> "Plan":
        if num_classes == self.head.num_classes:
            return self
        return replace(self, head=replace(self.head, num_classes=num_classes))

    def choice_of(self, name: str) -> str:
        """The user's choice for a parameter or layer (full name): the longest matching entry, else the default.

        This is what the checklist shows. Whether a parameter really trains also
        depends on the BatchNorm policy and the cut: see :func:`tl_studio.states.layer_states`.
        """
        best, state = -1, self.default
        for entry, s in self.layers.items():
            if _matches(name, entry) and len(entry) > best:
                best, state = len(entry), s
        return state

    def has_finer_entries(self, name: str) -> bool:
        """Whether some entry names something strictly inside ``name``."""
        return any(entry.startswith(name + ".") for entry in self.layers)

    # ---- JSON -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "model": self.model,
            "head": {"num_classes": self.head.num_classes, "hidden": self.head.hidden, "dropout": self.head.dropout},
            "layers": dict(self.layers),
            "default": self.default,
            "cut_after": self.cut_after,
            "taps": list(self.taps),
            "bn": self.bn,
            "body_lr_ratio": self.body_lr_ratio,
            "head_warmup_epochs": self.head_warmup_epochs,
            "unfreeze_all_at": self.unfreeze_all_at,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def digest(self) -> str:
        """sha256 of the canonical JSON: what a run's weights record to name their plan."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        if not isinstance(data, dict):
            raise PlanError("a plan must be a JSON object")
        data = dict(data)
        schema = data.pop("schema", SCHEMA)
        version = data.pop("version", VERSION)
        if schema != SCHEMA:
            raise PlanError(f"schema: expected {SCHEMA!r}, got {schema!r}")
        if version not in READS_VERSIONS:
            raise PlanError(
                f"version: this tl-studio reads plan versions {', '.join(map(str, READS_VERSIONS))}, got {version!r}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(f"unknown plan field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for req in ("model", "head"):
            if req not in data:
                raise PlanError(f"{req}: missing")
        head = data.pop("head")
        if not isinstance(head, dict):
            raise PlanError("head: must be an object with num_classes, hidden, dropout")
        head_known = {f.name for f in fields(HeadSpec)}
        if set(head) - head_known:
            raise PlanError(f"head: unknown field(s) {', '.join(sorted(set(head) - head_known))}")
        if "num_classes" not in head:
            raise PlanError("head.num_classes: missing")
        if "taps" in data and not isinstance(data["taps"], list):
            raise PlanError("taps: must be a list of layer names")
        plan = cls(head=HeadSpec(**head), **data)
        plan.check_values()
        return plan

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)

    # ---- validation -------------------------------------------------------------
    def check_values(self) -> None:
        """Checks that need no model: types and ranges of every field."""
        h = self.head
        if not isinstance(self.model, str) or not self.model:
            raise PlanError("model: must be a model name")
        if not isinstance(h.num_classes, int) or isinstance(h.num_classes, bool) or h.num_classes < 2:
            raise PlanError(f"head.num_classes: must be an integer of at least 2, got {h.num_classes!r}")
        if h.num_classes > MAX_CLASSES:
            raise PlanError(f"head.num_classes: must be at most {MAX_CLASSES}, got {h.num_classes!r}")
        if not isinstance(h.hidden, int) or isinstance(h.hidden, bool) or h.hidden < 0:
            raise PlanError(f"head.hidden: must be 0 (one FC layer) or a positive width, got {h.hidden!r}")
        if h.hidden > MAX_HIDDEN:
            raise PlanError(f"head.hidden: must be at most {MAX_HIDDEN}, got {h.hidden!r}")
        if (not isinstance(h.dropout, (int, float)) or isinstance(h.dropout, bool)
                or not 0.0 <= h.dropout < 1.0):
            raise PlanError(f"head.dropout: must be in [0, 1), got {h.dropout!r}")
        if not isinstance(self.layers, Mapping):
            raise PlanError("layers: must map layer names to 'frozen' or 'train'")
        for name, state in self.layers.items():
            if state not in (FROZEN, TRAIN):
                raise PlanError(f"layers[{name!r}]: must be 'frozen' or 'train', got {state!r}")
        if self.default not in (FROZEN, TRAIN):
            raise PlanError(f"default: must be 'frozen' or 'train', got {self.default!r}")
        if self.bn not in BN_POLICIES:
            raise PlanError(f"bn: must be one of {BN_POLICIES}, got {self.bn!r}")
        if not isinstance(self.taps, tuple) or not all(isinstance(t, str) for t in self.taps):
            raise PlanError("taps: must be a list of layer names")
        if self.cut_after is not None and not isinstance(self.cut_after, str):
            raise PlanError(f"cut_after: must be a layer name or null, got {self.cut_after!r}")
        if (not isinstance(self.body_lr_ratio, (int, float)) or isinstance(self.body_lr_ratio, bool)
                or not 0.0 < self.body_lr_ratio <= 1.0):
            raise PlanError(f"body_lr_ratio: must be in (0, 1], got {self.body_lr_ratio!r}")
        if (not isinstance(self.head_warmup_epochs, int) or isinstance(self.head_warmup_epochs, bool)
                or not 0 <= self.head_warmup_epochs <= MAX_EPOCH):
            raise PlanError(f"head_warmup_epochs: must be an integer from 0 to {MAX_EPOCH}, "
                            f"got {self.head_warmup_epochs!r}")
        if self.unfreeze_all_at is not None and (
            not isinstance(self.unfreeze_all_at, int) or isinstance(self.unfreeze_all_at, bool)
            or not 0 <= self.unfreeze_all_at <= MAX_EPOCH
        ):
            raise PlanError(f"unfreeze_all_at: must be null or an integer from 0 to {MAX_EPOCH}, "
                            f"got {self.unfreeze_all_at!r}")

    def resolve(self, body_names: list[str] | tuple[str, ...], known_names) -> tuple[int, list[int]]:
        """Check the plan against a model; return (index of the last kept layer, tap indices).

        ``body_names`` are the model's body layers in order (the classifier,
        which the new head replaces, is not among them); ``known_names`` are all
        names a plan may use (layers and anything inside them).
        """
        self.check_values()
        body_names = list(body_names)
        classifier_hint = "the classifier is always replaced by the new head"

        def unknown(field_name: str, name: str) -> PlanError:
            close = difflib.get_close_matches(name, sorted(known_names), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            return PlanError(f"{field_name}: unknown layer {name!r} for model {self.model}{hint}")

        for name in self.layers:
            if name not in known_names:
                raise unknown(f"layers[{name!r}]", name)
        if self.cut_after is None:
            cut = len(body_names) - 1
        elif self.cut_after in ("", "input"):
            raise PlanError(
                "cut_after: cutting before the first layer would remove the whole network; "
                f"the earliest cut keeps {body_names[0]!r}"
            )
        elif self.cut_after in body_names:
            cut = body_names.index(self.cut_after)
        elif self.cut_after in known_names:
            raise PlanError(
                f"cut_after: {self.cut_after!r} is not a cut point; cut after one of the "
                f"model's layers ({body_names[0]} ... {body_names[-1]}); {classifier_hint}"
            )
        else:
            raise unknown("cut_after", self.cut_after)
        taps = []
        for t in self.taps:
            if t not in body_names:
                if t in known_names:
                    raise PlanError(f"taps: {t!r} is not a tappable layer; tap one of {', '.join(body_names)}")
                raise unknown("taps", t)
            taps.append(body_names.index(t))
        if taps and self.cut_after is None:
            # Layers after the last tap feed nothing: they are removed.
            cut = max(taps)
        late = [body_names[i] for i in taps if i > cut]
        if late:
            raise PlanError(f"taps: {', '.join(late)} lie after cut_after={self.cut_after!r}, which removes them")
        return cut, sorted(set(taps))


def json_schema() -> dict:
    """The plan's JSON Schema, for documentation, other tools and the tests' validation."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "TL Studio layer plan",
        "type": "object",
        "required": ["model", "head"],
        "additionalProperties": False,
        "properties": {
            "schema": {"const": SCHEMA},
            "version": {"enum": list(READS_VERSIONS)},
            "model": {"type": "string", "minLength": 1},
            "head": {
                "type": "object",
                "required": ["num_classes"],
                "additionalProperties": False,
                "properties": {
                    "num_classes": {"type": "integer", "minimum": 2},
                    "hidden": {"type": "integer", "minimum": 0},
                    "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                },
            },
            "layers": {"type": "object", "additionalProperties": {"enum": [FROZEN, TRAIN]}},
            "default": {"enum": [FROZEN, TRAIN]},
            "cut_after": {"type": ["string", "null"]},
            "taps": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "bn": {"enum": list(BN_POLICIES)},
            "body_lr_ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "head_warmup_epochs": {"type": "integer", "minimum": 0},
            "unfreeze_all_at": {"type": ["integer", "null"], "minimum": 0},
        },
    }
