"""Model ids and files on the Hugging Face Hub, through ``huggingface_hub`` and its cache.

Ids a user may give (``--model``, the UI's text box, ``get_spec``):

    timm/convnext_atto.d2_in1k            any ORG/NAME whose repository holds a timm config.json
    hf_hub:ORG/NAME@REV (or hf-hub:)     timm's own prefix; @REV pins a branch, tag or commit
    local-dir:PATH                        a folder with config.json and model.safetensors (an export)

Files come from the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``, read
when asked, not at import) whenever they are there: with ``HF_HUB_OFFLINE``
(or ``TL_STUDIO_OFFLINE``) nothing else is tried. Otherwise a missing file is
downloaded with a short connect timeout, and a failure says what to do.
Weights are safetensors only: nothing here unpickles.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..weights import CONNECT_TIMEOUT_S, WeightsUnavailable, offline

log = logging.getLogger(__name__)

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
_PREFIXES = ("hf_hub:", "hf-hub:")
LOCAL = "local-dir:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_REV = re.compile(r"^[\w./-]+$")


class HubError(KeyError):
    """A Hub id that cannot be used; ``args[0]`` is the whole message (a KeyError, like an unknown model name)."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class HubId:
    """Where a model comes from: a Hub repository (and revision), or a local folder."""

    name: str  # as the user wrote it: the registry key
    repo: str | None = None
    revision: str | None = None  # None: the main branch
    local_dir: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.local_dir is not None


def looks_like_hub_id(name: str) -> bool:
    """Whether ``name`` is meant as a Hub id or local folder (registry names have no '/' or ':')."""
    return name.startswith(_PREFIXES + (LOCAL,)) or "/" in name


def parse(name: str) -> HubId:
    """Parse a Hub id; a malformed one raises :class:`HubError` naming the accepted forms."""
    text = name.strip()
    forms = ("accepted: timm/NAME.TAG, ORG/NAME[@REVISION], hf_hub:ORG/NAME[@REVISION] "
             "or local-dir:PATH")
    if text.startswith(LOCAL):
        path = Path(text[len(LOCAL):]).expanduser()
        if not text[len(LOCAL):]:
            raise HubError(f"model {name!r}: local-dir: needs a folder; {forms}")
        return HubId(name, local_dir=path)
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    repo, _, revision = text.partition("@")
    if not _REPO.match(repo) or (revision and not _REV.match(revision)) or text.endswith("@"):
        raise HubError(f"model {name!r} is not a Hub id; {forms}")
    return HubId(name, repo=repo, revision=revision or None)


def cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it, read from the environment now."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home).expanduser() / "hub"


def cached(hub: HubId, filename: str) -> Path | None:
    """The file from the cache (or the local folder), or None; never touches the network."""
    if hub.is_local:
        path = hub.local_dir / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub.repo, filename, cache_dir=cache_dir(), revision=hub.revision)
    return Path(found) if isinstance(found, str) else None


def fetch(hub: HubId, filename: str) -> Path:
    """The file from the cache, else downloaded (short timeout); :class:`WeightsUnavailable` says why not."""
    path = cached(hub, filename)
    if path is not None:
        return path
    if hub.is_local:
        raise WeightsUnavailable(f"{hub.local_dir / filename}: no such file (local-dir:{hub.local_dir})")
    where = f"{hub.repo}" + (f"@{hub.revision}" if hub.revision else "")
    if offline():
        raise WeightsUnavailable(
            f"{where}: {filename} is not in the Hugging Face cache ({cache_dir()}) and the network is off "
            "(HF_HUB_OFFLINE or TL_STUDIO_OFFLINE). Download it once with "
            f"`hf download {hub.repo} {filename}`, or point HF_HUB_CACHE at a cache that has it."
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    log.info("downloading %s from %s", filename, where)
    try:
        return Path(hf_hub_download(hub.repo, filename, revision=hub.revision, cache_dir=cache_dir(),
                                    etag_timeout=CONNECT_TIMEOUT_S))
    except EntryNotFoundError:
        raise WeightsUnavailable(f"{where} has no {filename}") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailable(
            f"{where}: {filename} is not in the Hugging Face cache ({cache_dir()}) and could not be downloaded "
            f"({first}). Connect once, or copy the repository's files into that cache."
        ) from None


def revision_of(path: Path | None) -> str | None:
    """The commit a cached file belongs to: its snapshot folder's name (``.../snapshots/<commit>/file``)."""
    if path is None or path.parent.parent.name != "snapshots":
        return None
    return path.parent.name


def card_licence(hub: HubId) -> str | None:
    """The ``license`` of the repository's model card (README.md front matter), if cached."""
    path = cached(hub, CARD)
    if path is None:
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(path) or {}
    except Exception as exc:  # a card without valid YAML front matter: no licence from it
        log.debug("%s: no metadata (%s)", path, exc)
        return None
    value = meta.get("license")
    return str(value) if value else None


def cached_models() -> list[dict]:
    """timm models in the cache: one row per repository snapshot whose config.json names an architecture.

    The cache's folder layout (``models--ORG--NAME/snapshots/<commit>/``, ``refs/<branch>``) is read
    directly: a snapshot a branch points at is listed as ORG/NAME (or ORG/NAME@branch), any other by commit.
    """
    import json

    rows = []
    root = cache_dir()
    for repo_dir in sorted(root.glob("models--*--*")) if root.is_dir() else []:
        repo = repo_dir.name[len("models--"):].replace("--", "/", 1)
        refs = {}
        for ref in sorted((repo_dir / "refs").glob("*")) if (repo_dir / "refs").is_dir() else []:
            try:
                refs.setdefault(ref.read_text(encoding="utf-8").strip(), []).append(ref.name)
            except OSError:
                continue
        for snap in sorted((repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []:
            try:
                config = json.loads((snap / CONFIG).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(config, dict) or "architecture" not in config:
                continue  # not a timm model (transformers and others keep other configs)
            names = refs.get(snap.name, [])
            name = repo if "main" in names else f"{repo}@{names[0] if names else snap.name}"
            rows.append({"model": name, "architecture": config["architecture"], "revision": snap.name,
                         "weights": "cached" if (snap / WEIGHTS).is_file() else "download"})
    return rows
