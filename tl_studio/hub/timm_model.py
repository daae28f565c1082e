"""A timm model from the Hugging Face Hub: what the registry needs to know about it.

:func:`resolve` reads the model's ``config.json`` (from the cache, a local
folder or, for ``timm/NAME.TAG`` ids offline, the installed timm's own
registry of pretrained configs) once, and gives a :class:`TimmSource`:

* the architecture and its ``pretrained_cfg`` (timm's data config: input size,
  interpolation, crop, mean, std, licence, label names);
* the resolved revision (the snapshot's commit) that the weights will be
  loaded from, so config and weights always match;
* how to build it with random weights, Hub weights or a local safetensors file
  (timm's own loader: its checkpoint filters apply);
* its layers (:mod:`tl_studio.hub.timm_stages`), worked out once per model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..preprocess import Preprocess
from ..stages import Stage
from ..weights import WeightsUnavailable, offline
from . import files, timm_stages
from .files import CONFIG, WEIGHTS, HubError, HubId

log = logging.getLogger(__name__)

_plans: dict[str, timm_stages.StagePlan] = {}
_plans_lock = threading.Lock()


@dataclass(frozen=True)
class TimmSource:
    hub: HubId
    architecture: str
    pretrained_cfg: dict = dataclasses.field(repr=False)
    model_args: dict = dataclasses.field(repr=False)
    revision: str | None  # commit of the snapshot config.json came from (None: not from the Hub cache)
    config_from: str  # "hub", "timm registry" or "local-dir"
    licence: str | None

    # ---- what the model is -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return int(self.pretrained_cfg.get("num_classes") or 0)

    @property
    def where(self) -> str:
        """The weights' location as one string: ORG/NAME@commit, or the local folder."""
        if self.hub.is_local:
            return str(self.hub.local_dir)
        rev = self.revision or self.hub.revision
        return f"{self.hub.repo}@{rev}" if rev else self.hub.repo

    @property
    def categories(self) -> list[str]:
        """The base model's labels: the config's own, else timm's ImageNetInfo for its subset."""
        names = self.pretrained_cfg.get("label_names")
        if isinstance(names, dict):
            names = [str(names[k]) for k in sorted(names, key=int)]
        if names and len(names) == self.num_classes:
            return [str(n) for n in names]
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(self.pretrained_cfg)
        if subset:
            # "tench, Tinca tinca" -> "tench": the short name, as torchvision's categories read
            return [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]
        return [f"class_{i}" for i in range(self.num_classes)]

    @property
    def imagenet_subset(self) -> str | None:
        from timm.data import infer_imagenet_subset

        return infer_imagenet_subset(self.pretrained_cfg)

    def preprocess(self) -> Preprocess:
        """The model's preprocessing, from its pretrained config (timm's resolve_data_config)."""
        from timm.data import resolve_data_config

        cfg = resolve_data_config(pretrained_cfg=self.pretrained_cfg)
        _, h, w = cfg["input_size"]
        if h != w:
            raise HubError(f"model {self.hub.name!r}: input size {h}x{w} is not square; only square inputs are supported")
        crop_pct = float(cfg.get("crop_pct") or 0.875)
        return Preprocess(
            input_size=int(h),
            resize_size=int(math.floor(h / crop_pct)),
            interpolation=str(cfg.get("interpolation") or "bicubic"),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            crop_pct=crop_pct,
            crop_mode=str(cfg.get("crop_mode") or "center"),
        )

    def description(self) -> str:
        head = self.imagenet_subset or (f"{self.num_classes}-class" if self.num_classes else "no")
        return f"timm {self.architecture} ({head} head), from {self.where}"

    def provenance(self, pretrained=True) -> dict:
        """What a run records about its base model: where the weights came from, which revision, which licence."""
        import timm

        out = {
            "source": "local-dir" if self.hub.is_local else "hf-hub",
            "id": str(self.hub.local_dir) if self.hub.is_local else self.hub.repo,
            "revision": self.revision or self.hub.revision,
            "architecture": self.architecture,
            "licence": self.licence,
            "config_from": self.config_from,
            "timm": timm.__version__,
        }
        if isinstance(pretrained, (str, Path)):
            out["weights_file"] = str(pretrained)
        out["pretrained"] = pretrained is not False
        return out

    # ---- weights -----------------------------------------------------------------------
    def _pinned(self) -> HubId:
        """The same repository at the commit config.json came from."""
        return dataclasses.replace(self.hub, revision=self.revision or self.hub.revision)

    def weights_path(self) -> Path | None:
        """The weights file in the Hugging Face cache (or the local folder), None when not there."""
        return files.cached(self._pinned(), WEIGHTS)

    def weights_status(self) -> str:
        """"cached" (in the Hugging Face cache or the local folder) or "download", as the registry says it."""
        return "cached" if files.cached(self._pinned(), WEIGHTS) is not None else "download"

    def create(self, weights_file: Path | None = None) -> nn.Module:
        """The timm model, random or with the weights of a safetensors file (timm's loader and filters)."""
        import timm

        cfg = dict(self.pretrained_cfg)
        if weights_file is None:
            return timm.create_model(self.architecture, pretrained=False, pretrained_cfg=cfg, **self.model_args)
        cfg.update(source="", file=str(weights_file), hf_hub_id=None, url=None)
        try:
            return timm.create_model(self.architecture, pretrained=True, pretrained_cfg=cfg, **self.model_args)
        except (RuntimeError, KeyError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsUnavailable(f"{weights_file}: does not fit {self.architecture} ({first})") from None

    def build(self, pretrained=True) -> nn.Module:
        """Random weights (False), the Hub's (True, from the cache when there) or a local .safetensors file."""
        if pretrained is False:
            return self.create()
        if pretrained is True:
            return self.create(files.fetch(self._pinned(), WEIGHTS))
        return self.create(check_weights_file(pretrained))

    # ---- layers ------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[Stage]:
        key = self.hub.name
        with _plans_lock:
            plan = _plans.get(key)
            fresh = plan is None
            if fresh:
                plan = timm_stages.plan_stages(model, self.preprocess().input_size)
        out = timm_stages.build_stages(model, plan)
        if fresh:
            timm_stages.check_stages(model, out, self.preprocess().input_size)
            with _plans_lock:
                _plans[key] = plan
        return out


def check_weights_file(path) -> Path:
    """A weights file the user named: it must exist and be safetensors (nothing is ever unpickled)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsUnavailable(f"{path}: weights must be a .safetensors file (tl-studio never unpickles weights)")
    if not path.is_file():
        raise WeightsUnavailable(f"{path}: no such file")
    return path


def _config_fields() -> set[str]:
    from timm.models import PretrainedCfg

    return {f.name for f in dataclasses.fields(PretrainedCfg)}


def _from_timm_registry(hub: HubId) -> dict | None:
    """timm's own pretrained config for ``timm/NAME.TAG`` (no file, no network), or None."""
    if hub.is_local or hub.revision or not hub.repo.startswith("timm/"):
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(hub.repo.split("/", 1)[1], allow_unregistered=False)
    return cfg.to_dict() if cfg is not None else None


def resolve(name: str) -> TimmSource:
    """The timm model behind a Hub id or local folder; :class:`HubError` (a KeyError) says why not."""
    import timm
    from timm.models._hub import load_model_config_from_path

    hub = files.parse(name)
    registry_cfg = None
    if hub.is_local:
        if not (hub.local_dir / CONFIG).is_file():
            raise HubError(f"model {name!r}: {hub.local_dir / CONFIG} not found (a timm model folder holds "
                           f"{CONFIG} and {WEIGHTS})")
        cfg_path, config_from = hub.local_dir / CONFIG, "local-dir"
    else:
        cfg_path, config_from = files.cached(hub, CONFIG), "hub"
        if cfg_path is None:
            registry_cfg = _from_timm_registry(hub)
            if registry_cfg is None or not offline():
                try:
                    cfg_path = files.fetch(hub, CONFIG)
                except WeightsUnavailable as exc:
                    if registry_cfg is None:
                        raise HubError(str(exc)) from None
                    log.info("%s: using the installed timm's config (%s)", name, exc)
    if cfg_path is not None:
        try:
            pretrained_cfg, architecture, model_args = load_model_config_from_path(cfg_path.parent)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise HubError(f"model {name!r}: {cfg_path} is not a timm config.json ({type(exc).__name__}: {exc}); "
                           "only timm image models are supported") from None
    else:
        pretrained_cfg, config_from = registry_cfg, "timm registry"
        architecture, model_args = pretrained_cfg["architecture"], {}
    if not timm.is_model(architecture):
        raise HubError(f"model {name!r}: architecture {architecture!r} is not in the installed timm "
                       f"{timm.__version__}; a newer timm may have it")
    known = _config_fields()
    pretrained_cfg = {k: v for k, v in pretrained_cfg.items() if k in known}
    pretrained_cfg.update(architecture=architecture, source="", file=None)
    licence = pretrained_cfg.get("license") or (None if hub.is_local else files.card_licence(hub))
    revision = files.revision_of(cfg_path) if config_from == "hub" else None
    return TimmSource(hub, architecture, pretrained_cfg, dict(model_args), revision, config_from, licence)
