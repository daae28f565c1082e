"""A training run on disk: writing its folder as it trains, and resuming from it.

The files and their formats are :mod:`tl_studio.runs`'; this module decides
what goes into them and when.

Checkpoints (the metrics tables, the best weights and last.pt, each model
file a full copy, all written atomically with fsync) go to disk at most
every :data:`CHECKPOINT_SECONDS`, and always after the first and the last
epoch and when a stop is asked for; the tables are written again when the
run ends, however it ends. With the feature cache an epoch can take
milliseconds while a checkpoint takes ~0.15 s on a small CPU: writing one
per epoch made ten cached epochs cost as much as the extraction they follow
(bench/, figure 4). A crash loses at most this much training.

Under torchrun every rank reads the run (to resume) but only rank 0 writes
it: the others' :class:`Checkpoints` have ``writes`` False, and each write
below is then nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .. import runs
from ..registry import get_spec
from ..states import plan_summary
from .best import Best

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 5.0


class Checkpoints:
    """What a trainer writes to its run folder, and when."""

    def __init__(self, run_dir: Path, plan, classes: list[str], *, save_last: bool, pretrained=True,
                 writes: bool = True):
        self.run_dir = Path(run_dir)
        self.writes = writes
        self.plan = plan
        self.classes = classes
        self.save_last = save_last
        self.pretrained = pretrained  # True, False or a local weights file: recorded in config.json
        self._last_write = time.perf_counter()

    # ---- writing ----------------------------------------------------------------------
    def make_folder(self) -> None:
        if self.writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg, data, device: torch.device) -> None:
        """config.json: the one stored copy of the plan, with everything needed to repeat the run."""
        if not self.writes:
            return
        runs.write_json(
            self.run_dir / runs.CONFIG,
            {
                "model": self.plan.model,
                "plan": self.plan.to_dict(),
                # The run history reads this line without building the model (tl-studio runs needs no
                # torch); the hash tells it whether the plan above is still the one summarised.
                "plan_summary": {"text": plan_summary(self.plan),
                                 "plan_sha256": runs.plan_sha256(self.plan.to_dict())},
                "train": cfg.to_dict(),
                "seed": cfg.seed,
                "dataset": {"classes": data.classes, **data.info},
                "versions": runs.versions(),
                # where the base weights came from: Hub id, resolved revision, licence (or the local file)
                "base_weights": get_spec(self.plan.model).provenance(self.pretrained),
                "device": str(device),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )

    def metadata(self, validated: bool, epoch: int | None) -> dict[str, str]:
        # The plan itself is in config.json; the weights carry its hash, to tell when the two disagree.
        return {
            "format": "tl-studio",
            "classes": json.dumps(self.classes, ensure_ascii=False),
            "plan_sha256": runs.plan_sha256(self.plan.to_dict()),
            "validated": "true" if validated else "false",
            "epoch": "" if epoch is None else str(epoch),
        }

    def due(self, *, force: bool) -> bool:
        return force or time.perf_counter() - self._last_write >= CHECKPOINT_SECONDS

    def save(self, tables: dict, best: Best, last: dict | None) -> None:
        """The tables, the best weights (if newer) and, if given and kept, last.pt."""
        if not self.writes:
            return
        runs.write_tables(self.run_dir, tables)
        self.save_best(best)
        if self.save_last and last is not None:
            runs.save_last(self.run_dir / runs.LAST, last)
        self._last_write = time.perf_counter()

    def save_best(self, best: Best) -> None:
        """Write the best weights if a better epoch came since the last write."""
        if self.writes and best.unsaved and best.state is not None:
            runs.save_weights(self.run_dir / runs.WEIGHTS, best.state, self.metadata(True, best.epoch))
            best.unsaved = False

    def save_unvalidated(self, state: dict[str, torch.Tensor]) -> None:
        """No epoch was validated: hand over the last weights, marked as such (never non-finite ones)."""
        if self.writes and runs.all_finite(state):
            runs.save_weights(self.run_dir / runs.WEIGHTS, state, self.metadata(False, None))

    def finish(self, tables: dict, summary: dict | None) -> None:
        """The final tables and summary.json, whose status says how the run ended (none: it did not end)."""
        if not self.writes:
            return
        runs.write_tables(self.run_dir, tables)
        if summary is not None:
            runs.write_json(self.run_dir / runs.SUMMARY, summary)

    def save_failed(self, best: Best, tables: dict, summary: dict) -> None:
        """After a failure, whatever still reaches the disk: the best weights, the tables and a
        summary saying why. A write that fails too (the disk is full) is one log line: the
        error reported is the first one."""
        for write in (lambda: self.save_best(best), lambda: self.finish(tables, summary)):
            try:
                write()
            except runs.RunError as exc:
                log.warning("after the failure: %s", exc)

    # ---- resuming -----------------------------------------------------------------------
    def resume(self, trainer) -> int:
        """Bring ``trainer`` to the state of last.pt; returns the epoch to continue from.

        Without last.pt (killed before its first checkpoint, or ``save_last``
        off) the run starts over: see :meth:`restart`.
        """
        if not (self.run_dir / runs.LAST).exists():
            return self.restart(trainer)
        payload = runs.load_last(self.run_dir / runs.LAST)
        start = int(payload["epoch"]) + 1
        # Replay the phases so the optimizer has the same groups in the same order.
        for e in range(start):
            trainer.start_phase(e)
        try:
            trainer.model.load_state_dict(payload["model"])
            trainer.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise runs.RunError(f"{self.run_dir / runs.LAST}: does not match this plan "
                                f"({_first_line(exc)}){self._made_by()}") from None
        trainer.snapshots.split()  # the loaded weights, not the ones the phases were entered with
        trainer.step = int(payload["step"])
        trainer.batch_size = int(payload.get("batch_size", trainer.batch_size))
        torch.set_rng_state(payload["rng"])
        trainer.gen.set_state(payload["gen"])
        trainer.best.restore(payload.get("best", {}))
        tables = runs.read_tables(self.run_dir)
        steps, epochs = tables["steps"], tables["epochs"]
        self._recover_best(trainer.best, epochs)
        # The tables are written every epoch, last.pt at most every CHECKPOINT_SECONDS:
        # rows past the checkpoint will be trained again.
        if steps is not None:
            steps = steps[steps["step"] <= trainer.step]
        if epochs is not None:
            epochs = epochs[epochs["epoch"] <= start]
        trainer.metrics.load(steps, epochs)
        # Under way again: how it ended before no longer holds (a kill now leaves it "crashed").
        if self.writes:
            (self.run_dir / runs.SUMMARY).unlink(missing_ok=True)
        log.info("resuming at epoch %d (step %d)", start + 1, trainer.step)
        return start

    def restart(self, trainer) -> int:
        """Start the run over (epoch 1), from its saved weights where it has any; says which."""
        weights = self.run_dir / runs.WEIGHTS
        if weights.exists():
            state, meta = runs.load_weights(weights)
            if meta.get("plan_sha256") not in (None, runs.plan_sha256(self.plan.to_dict())):
                raise runs.RunError(f"{weights}: made for another plan than this one; cannot restart from it")
            try:
                trainer.model.load_state_dict(state)
            except (RuntimeError, ValueError, KeyError) as exc:
                raise runs.RunError(f"{weights}: does not match this plan ({_first_line(exc)}){self._made_by()}") from None
            epoch = f"epoch {meta['epoch']}" if meta.get("epoch") else "unvalidated"
            log.warning("%s: no %s to resume from; starting over from %s (%s weights)",
                        self.run_dir, runs.LAST, runs.WEIGHTS, epoch)
        else:
            log.warning("%s: no %s to resume from; starting the run over", self.run_dir, runs.LAST)
        for name in (runs.SUMMARY, runs.METRICS, runs.STEPS) if self.writes else ():
            (self.run_dir / name).unlink(missing_ok=True)
        self.write_config(trainer.cfg, trainer.data, trainer.device)
        return 0

    def _made_by(self) -> str:
        try:
            return runs.made_by(runs.read_json(self.run_dir / runs.CONFIG))
        except runs.RunError:
            return ""

    def _recover_best(self, best: Best, epochs) -> None:
        """The best weights on disk, which may be newer than last.pt's record of them."""
        if not (self.run_dir / runs.WEIGHTS).exists():
            return
        state, meta = runs.load_weights(self.run_dir / runs.WEIGHTS)
        saved_epoch = int(meta["epoch"]) if meta.get("validated") == "true" and meta.get("epoch") else None
        if saved_epoch is not None and saved_epoch != best.epoch and epochs is not None:
            # Best weights written when the run stopped, after its last checkpoint:
            # validated weights all the same, with their row in the metrics table.
            row = epochs[epochs["epoch"] == saved_epoch]
            if len(row):
                best.restore({"epoch": saved_epoch, "val_accuracy": float(row["val_accuracy"].iloc[0]),
                              "val_loss": float(row["val_loss"].iloc[0])})
        if best.epoch is not None and saved_epoch == best.epoch:
            best.state = state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
