"""DistributedDataParallel through torchrun (gloo on the CPU), and the plan's "bn": "eval".

The torchrun runs are real: ``python -m torch.distributed.run --standalone
--nproc_per_node 2 -m tl_studio train ...``, as the README shows, on a tiny
generated dataset whose training set divides by world size x batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import torch
from PIL import Image

from tl_studio.plan import HeadSpec, Plan, json_schema
from tl_studio.states import layer_states, plan_summary
from tl_studio.surgery import build_model
from tl_studio.train import distributed

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS = {"train": 8, "val": 4}  # 16 training images: 2 steps of a global batch of 8 on 2 ranks
# Every run, single or not, on one thread: the same arithmetic, and two ranks share the two cores.
ENV = {**os.environ, "TL_STUDIO_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
       "TL_STUDIO_DDP_TIMEOUT": "30"}
for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TL_STUDIO_FAULT"):
    ENV.pop(key, None)
COMMON = ["--random-weights", "--no-evidence", "--augment", "none", "--batch-size", "8", "--seed", "0",
          "--device", "cpu", "--json"]


def bn_eval_plan() -> Plan:
    """The last stage and the head of resnet18 train; every BatchNorm in eval mode; no head dropout."""
    return Plan(model="resnet18", head=HeadSpec(2, dropout=0.0), default="frozen",
                layers={"layer4.0": "train", "layer4.1": "train"}, bn="eval")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "data"
    g = torch.Generator().manual_seed(0)
    for split, n in PER_CLASS.items():
        for c, cls in enumerate(("a", "b")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(32, 32, 3, generator=g) * 128 + 100 * c).clamp(0, 255).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{cls}_{i:02d}.png")
    (root.parent / "plan.json").write_text(bn_eval_plan().to_json())
    return root


def start(cmd: list, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**ENV, **(env or {})})


def finish(proc: subprocess.Popen, timeout=240) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tl(*args) -> subprocess.Popen:
    return start(["-m", "tl_studio", *args])


def torchrun(*args, env=None) -> subprocess.Popen:
    return start(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tl_studio", *args],
                 env)


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """The same training, in one process and on two ranks."""
    out = tmp_path_factory.mktemp("runs")
    plan = data.parent / "plan.json"
    # Both at once: the two cores are busier, the wall time shorter; the arithmetic is the same.
    single = tl("train", data, "--plan", plan, "--epochs", "2", "--out", out / "single", *COMMON)
    # The ranks beyond a tiny memory budget: their decoded images and feature cache are memory-mapped files
    # (the cache gathered from the ranks' shards into one), the single process's are in memory.
    multi = finish(torchrun("train", data, "--plan", plan, "--epochs", "2", "--out", out / "multi", *COMMON,
                            "--memory-budget", "1M"))
    single = finish(single)
    assert single.returncode == 0, single.stderr
    assert multi.returncode == 0, multi.stderr
    return out, single, multi


# ---- torchrun --------------------------------------------------------------------------------
def test_two_ranks_train_the_same_weights_as_one_process(runs):
    out, single, multi = runs
    a, b = weights(out / "single"), weights(out / "multi")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
    # Rank 0 alone prints: one JSON summary on stdout, which says how many processes trained.
    summary = json.loads(multi.stdout)
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    assert "> memory budget 1.0 MiB: memory-mapped" in multi.stderr  # the decoded images
    assert "feature cache: 12 images" in multi.stderr  # rank 0's shard of the 24, then gathered
    assert "> budget 1.0 MiB: memory-mapped in" in multi.stderr
    assert json.loads(single.stdout)["world_size"] == 1
    # The same global numbers in both metrics tables (losses and accuracies are summed over the ranks).
    import pandas as pd

    tables = [pd.read_csv(out / run / "metrics.csv") for run in ("single", "multi")]
    for column in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert tables[1][column].tolist() == pytest.approx(tables[0][column].tolist(), rel=1e-4), column


def test_one_run_folder_written_by_rank_0_only(runs):
    out, _, multi = runs
    assert sorted(p.name for p in out.iterdir()) == ["multi", "single"]
    assert sorted(p.name for p in (out / "multi").iterdir()) == sorted(p.name for p in (out / "single").iterdir())
    # Rank 1 logged nothing at INFO: the torchrun line appears once, for rank 0.
    assert multi.stderr.count("torchrun: 2 processes (gloo)") == 1


def test_resume_and_a_stop_asked_of_one_rank_under_torchrun(runs, data):
    """The 2-epoch run resumed to 4 epochs; rank 1 alone is asked to stop in epoch 4 (step 7, at 2 a epoch):
    every rank stops at the same step, the run is "stopped" after 3 epochs, nothing hangs."""
    out, _, _ = runs
    run = out / "multi"
    again = finish(torchrun("train", data, "--out", run, "--resume", "--epochs", "4", *COMMON,
                            env={distributed.ENV_FAULT: "rank1:stop@step7"}), timeout=120)
    # Both ranks exit with 130 (stopped), which torchrun reports as a failure; rank 0 wrote the run first.
    assert again.returncode != 0 and "exitcode  : 130" in again.stderr, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["status"] == "stopped" and summary["epochs_run"] == 3 and summary["world_size"] == 2
    assert (run / "metrics.csv").read_text().count("\n") == 4  # header and epochs 1-3
    assert "resuming at epoch 3" in again.stderr


def test_a_failing_rank_ends_every_rank(data, tmp_path):
    """Rank 1 raises in one run and is killed (SIGKILL) in another, both at step 2 (the two run at once)."""
    faults = {"raise": "RuntimeError", "kill": "SIGKILL"}
    started = time.monotonic()
    procs = {fault: torchrun("train", data, "--model", "mobilenet_v3_small", "--plan", "head", "--head-solver",
                             "sgd", "--epochs", "2", "--out", tmp_path / fault, *COMMON,
                             env={distributed.ENV_FAULT: f"rank1:{fault}@step2"})
             for fault in faults}
    done = {fault: finish(proc, timeout=120) for fault, proc in procs.items()}
    assert time.monotonic() - started < 60
    for fault, named in faults.items():
        proc = done[fault]
        assert proc.returncode != 0, fault
        # torchrun's error summary names the rank and what ended it.
        cause = proc.stderr.rfind("Root Cause")
        assert "rank      : 1" in proc.stderr[cause:] and named in proc.stderr[cause:], proc.stderr[-3000:]
        # Rank 0 outlived it: its log and the run's summary say which rank failed.
        summary = json.loads((tmp_path / fault / "summary.json").read_text())
        assert summary["status"] == "failed" and "rank 1" in summary["error"], summary
        assert "ERROR tl_studio.train.jobs: job" in proc.stderr and "failed: TrainingFailed: " in proc.stderr
        assert "rank 1" in proc.stderr[: proc.stderr.find("Root Cause")]


@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")  # pytest's captured stderr has no fileno
def test_the_batch_must_divide_over_the_ranks(data, tmp_path, monkeypatch, capsys):
    """Refused on every rank before any process group or data: here rank 0 of 2, in this process."""
    from tl_studio.cli import main
    from tl_studio.cli.common import CLIError

    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))  # what torchrun would read
    args = [a if a != "8" else "7" for a in COMMON]
    with pytest.raises(CLIError, match="--batch-size 7: the global batch must divide evenly over torchrun's 2"):
        main(["train", str(data), "--plan", "head", "--out", str(tmp_path / "run"), *args])
    assert "--batch-size 7" in json.loads((tmp_path / "error.json").read_text())["message"]["message"]
    assert not (tmp_path / "run").exists() and not torch.distributed.is_initialized()
    assert "error: --batch-size 7" in capsys.readouterr().err


# ---- the pieces ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, bs, world", [(16, 8, 2), (21, 8, 2), (17, 8, 2), (30, 12, 3)])
def test_each_global_batch_is_split_over_the_ranks(n, bs, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    parts = [distributed.split_epoch(order, bs, distributed.Dist(r, world, r, torch.device("cpu"), "gloo"))
             for r in range(world)]
    sizes = parts[0][2]
    assert all(p[2] == sizes for p in parts) and all(p[1] == bs // world for p in parts)
    taken, at = [], [0] * world
    for step, size in enumerate(sizes):
        # this step's batch on each rank: per-rank batches of bs // world, the last one what is left
        batch = []
        for r, (mine, per, _) in enumerate(parts):
            piece = mine[at[r]: at[r] + per]
            at[r] += len(piece)
            batch.append(piece)
        assert torch.equal(torch.cat(batch), order[step * bs: step * bs + size])
        assert min(len(p) for p in batch) > 0
        taken.append(size)
    # everything is trained but a last batch with fewer images than ranks
    assert sum(taken) == n - (n % bs if n % bs < world else 0)
    assert distributed.loss_weight(None, 4, 8) == 1.0
    assert distributed.loss_weight(distributed.Dist(0, 2, 0, torch.device("cpu"), "gloo"), 4, 8) == 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pixels:
    """Images as an ImageStore hands them to the feature pass: uint8 batches with their indices."""

    def __init__(self, n: int, size: int):
        self.t = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0),
                               dtype=torch.uint8)

    def __len__(self):
        return len(self.t)

    def batches(self, indices, bs, shuffle=False):
        for i in range(0, len(indices), bs):
            idx = torch.as_tensor(indices[i:i + bs])
            yield self.t[idx], idx


def _small_bn_sample(n, limit=4):
    return list(range(min(n, limit)))  # so that a dozen images leave some to shard


def _shards_on_two_ranks(rank, port, folder):
    """One rank of a 2-process gloo group: the sharded feature pass and the sharded training cache."""
    from tl_studio.features import extract as ex
    from tl_studio.train.cache import FeatureCache

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ex.bn_sample = _small_bn_sample
    d = distributed.init("cpu")
    try:
        torch.manual_seed(0)
        fs = ex.extract("mobilenet_v3_small", Pixels(12, 64), "fp", device="cpu", pretrained=False,
                        share=distributed.feature_share(d))
        rows = torch.arange(10)
        mine = distributed.split_rows(rows, d)
        cache = FeatureCache(1, {int(i): r for r, i in enumerate(mine.tolist())},
                             (mine.float()[:, None, None, None] * torch.ones(1, 2, 3, 3)).half(), [mine[:, None].float()])
        full = distributed.gather_cache(d, cache, rows)
        # beyond the memory budget: a mapped shard gathered into a mapped whole, a few rows a round
        from tl_studio.train.cache import allocate_like

        h, f = allocate_like(cache.h, len(mine), folder), allocate_like(cache.feats[0], len(mine), folder)
        h[:], f[:] = cache.h, cache.feats[0]
        distributed.GATHER_BYTES = 2 * (h[:1].nbytes + f[:1].nbytes)
        spilled = distributed.gather_cache(d, FeatureCache(1, cache._pos, h, [f], mapped=True), rows, folder)
        torch.save({"pooled": torch.cat([fs.pooled[n] for n in fs.layers], 1), "h": full.h, "feats": full.feats,
                    "pos": full._pos, "mapped": spilled.mapped, "h_mapped": spilled.h.clone(),
                    "feats_mapped": [t.clone() for t in spilled.feats]}, f"{folder}/rank{rank}.pt")
    finally:
        distributed.teardown()


def test_the_feature_pass_and_the_cache_are_sharded_and_gathered(tmp_path, monkeypatch):
    from tl_studio.features import extract as ex

    torch.multiprocessing.start_processes(_shards_on_two_ranks, args=(free_port(), str(tmp_path)), nprocs=2,
                                          start_method="spawn")
    monkeypatch.setattr(ex, "bn_sample", _small_bn_sample)
    torch.manual_seed(0)
    fs = ex.extract("mobilenet_v3_small", Pixels(12, 64), "fp", device="cpu", pretrained=False)
    alone = torch.cat([fs.pooled[n] for n in fs.layers], 1)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["pooled"], alone, atol=1e-5, rtol=1e-4)
        assert got["pos"] == {i: i for i in range(10)} and got["h"].dtype == torch.float16
        assert torch.equal(got["h"][:, 0, 0, 0], torch.arange(10).half())
        assert torch.equal(got["feats"][0][:, 0], torch.arange(10).float())
        assert got["mapped"] and torch.equal(got["h_mapped"], got["h"])
        assert torch.equal(got["feats_mapped"][0], got["feats"][0])


def test_launched_reads_torchrun_environment():
    assert not distributed.launched({})
    assert not distributed.launched({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    assert distributed.launched({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert distributed.env_rank({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == 1


def test_jobs_never_go_distributed_under_torchrun_variables(monkeypatch, tmp_path):
    """The app's jobs are threads of its process: torchrun's variables in its environment change nothing."""
    from tl_studio.train import FINISHED, JobRegistry, TrainConfig, start_job

    from .trainkit import demo_data

    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(k, v)
    data = demo_data(2, 1)
    job = start_job(Plan.head_only("mobilenet_v3_small", len(data.classes)),
                    TrainConfig(epochs=1, batch_size=4, device="cpu", head_solver="sgd"), data,
                    run_dir=tmp_path / "run", pretrained=False, registry=JobRegistry())
    assert job.wait(120) and job.status == FINISHED, job.error
    assert job.result.summary["world_size"] == 1
    assert not torch.distributed.is_initialized()


# ---- "bn": "eval" --------------------------------------------------------------------------------
def _bn(model):
    return [(n, m) for n, m in model.body.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_bn_eval_keeps_every_batchnorm_fixed_while_its_affine_trains():
    torch.manual_seed(0)
    plan = bn_eval_plan()
    model = build_model(plan, pretrained=False, class_names=["a", "b"])
    model.train()
    bns = _bn(model)
    assert bns and not any(m.training for _, m in bns)
    before = {n: (m.running_mean.clone(), m.running_var.clone(), m.weight.detach().clone()) for n, m in bns}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    for n, m in bns:
        assert not m.training, n
        assert torch.equal(m.running_mean, before[n][0]) and torch.equal(m.running_var, before[n][1]), n
        assert int(m.num_batches_tracked) == 0, n
        trains = n.startswith(("7.", "8."))  # layer4.0 and layer4.1: the body's 8th and 9th stages
        assert m.weight.requires_grad == trains, n
        assert torch.equal(m.weight, before[n][2]) != trains, n
    # Under the default policy the trained stage's BatchNorm is in training mode, the frozen ones are not.
    frozen_policy = build_model(Plan(**{**plan.__dict__, "bn": "frozen"}), pretrained=False).train()
    modes = {n: m.training for n, m in _bn(frozen_policy)}
    assert all(v == n.startswith(("7.", "8.")) for n, v in modes.items())


def test_bn_eval_round_trips_and_is_reported():
    plan = bn_eval_plan()
    assert Plan.from_json(plan.to_json()) == plan
    jsonschema.validate(plan.to_dict(), json_schema())
    st = layer_states(plan)
    frozen = layer_states(Plan(**{**plan.__dict__, "bn": "frozen"}))
    assert st.trainable_names == frozen.trainable_names  # the policy fixes statistics, not which weights train
    with_bn = {s.name for s in st.kept if s.name not in ("pool",)}
    assert {s.name for s in st.layers if s.bn_eval} == with_bn
    assert not any(s.bn_trains for s in st.layers)
    assert all(r["bn_eval"] == (r["name"] in with_bn) for r in st.rows())
    assert "BN eval" in plan_summary(plan)
    model = build_model(plan, pretrained=False)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == st.trainable


def test_layers_command_shows_bn_eval(data, capsys):
    from tl_studio.cli import main

    assert main(["layers", "resnet18", "--plan", str(data.parent / "plan.json"), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["layer4.0"]["bn_eval"] and rows["stem"]["bn_eval"] and not rows["pool"]["bn_eval"]
    assert rows["layer4.0"]["state"] == "trains" and rows["stem"]["state"] == "frozen"
