"""The README runs as written: its ``tl-studio`` lines and its Python examples, in a copy of the checkout.

Each ``tl-studio`` line of the README's shell blocks runs in order, through
the ``main()`` the console script calls (``export`` and ``ui`` as processes
of their own), in a temporary copy of the checkout whose demo dataset keeps
only a few images per class: the same commands, in seconds. A line whose comment says ``# needs: network``,
``# needs: gpu`` or ``# needs: cluster`` is skipped, and reported as a skipped
test. ``tl-studio ui`` is started, probed at ``/``, used by the README's
client example, and stopped. Other shell lines (installing, the benchmarks)
are not commands of this tool and are not run here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .uikit import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NEEDS = re.compile(r"#\s*needs:\s*(network|gpu|cluster)\b")
# The copy's demo dataset: the first images of each class (the README names *_00.jpg files).
KEEP = {"train": 6, "val": 3}
# Not part of a fresh clone: version control, environments, caches, and output folders at the top.
SKIP_ANYWHERE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache")
SKIP_AT = {ROOT: {".venv", "runs"}, ROOT / "bench": {"results"}}


def _ignore(folder: str, names: list[str]) -> set[str]:
    return set(SKIP_ANYWHERE(folder, names)) | (SKIP_AT.get(Path(folder), set()) & set(names))


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def shell_lines() -> list[str]:
    return [line.strip() for block in blocks("bash") for line in block.splitlines() if line.strip()]


def tool_lines() -> list[str]:
    """The tl-studio lines to run, in order (those marked with what they need are left out)."""
    return [line for line in shell_lines() if line.startswith("tl-studio") and not NEEDS.search(line)]


def marked_lines() -> list[tuple[str, str]]:
    """(line, what it needs) for every shell line that cannot run here."""
    return [(line, m.group(1)) for line in shell_lines() if (m := NEEDS.search(line))]


def command(line: str) -> list[str]:
    """The line's words without its comment, with ``tl-studio`` as ``python -m tl_studio``."""
    words = shlex.split(line, comments=True)
    assert words[0] == "tl-studio", line
    return [sys.executable, "-m", "tl_studio", *words[1:]]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("readme") / "tl-studio"
    shutil.copytree(ROOT, copy, ignore=_ignore)
    for split, keep in KEEP.items():
        for cls in (copy / "assets" / "demo" / split).iterdir():
            for extra in sorted(cls.iterdir())[keep:]:
                extra.unlink()
    return copy


def environment(copy: Path, port: int) -> dict:
    return {**os.environ, "PYTHONPATH": str(copy), "TL_STUDIO_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_SERVER_PORT": str(port), "COLUMNS": "120"}


def serve(argv, copy: Path, env: dict, port: int, log: Path) -> subprocess.Popen:
    """Start ``tl-studio ui`` and wait until ``/`` answers 200."""
    proc = subprocess.Popen(argv, cwd=copy, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, umask=0o022)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tl-studio ui exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"tl-studio ui did not answer on port {port} within 120 s:\n{log.read_text()}")


def run_line(line: str, copy: Path, env: dict, capsys) -> tuple[int, str, str]:
    """Run one line: in this process through ``main()`` (what the console script calls; it saves a torch
    import per line), or as its own process where the process is the point (``export``: stdout and file
    modes as a shell sees them)."""
    argv = command(line)
    if argv[3] == "export":
        proc = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=600, umask=0o022)
        return proc.returncode, proc.stdout, proc.stderr
    from tl_studio.cli import main

    capsys.readouterr()
    status = main(argv[3:])
    out, err = capsys.readouterr()
    return status, out, err


def test_readme_runs_as_written(checkout, tmp_path, monkeypatch, capsys):
    lines = tool_lines()
    assert any(line.startswith("tl-studio train") for line in lines), "the README lost its train line"
    python = blocks("python")
    client_examples = [b for b in python if "gradio_client" in b]
    assert len(client_examples) == 1 and len(python) == 2, "expected one engine and one client example"
    engine_example = next(b for b in python if "gradio_client" not in b)
    port = free_port()
    env = environment(checkout, port)
    monkeypatch.chdir(checkout)  # the README's paths are relative to the checkout
    server, checked_train = None, False
    try:
        for line in lines:
            if command(line)[3:4] == ["ui"]:
                server = serve(command(line), checkout, env, port, tmp_path / "ui.log")
                continue
            status, out, err = run_line(line, checkout, env, capsys)
            assert status == 0, f"{line}\nexit {status}\n{out}\n{err}"
            if command(line)[3:5] == ["train", "assets/demo"] and "--resume" not in line:
                # stdout is the one result line: the run folder, its validation accuracy, the time it took
                assert len(out.splitlines()) == 1 and "runs/demo: finished, val accuracy" in out, out
                assert " s in all on " in out, out
                checked_train = True
            if line.startswith("tl-studio export"):
                # stdout is exactly one line, the path of the file written, mode 0644 under umask 022
                lines_out = out.splitlines()
                assert len(lines_out) == 1 and (checkout / lines_out[0]).is_file(), out
                assert stat.S_IMODE((checkout / lines_out[0]).stat().st_mode) == 0o644
                assert "onnx_ir" not in err and "[torch.onnx]" not in err
        assert server is not None, "the README's tl-studio ui line"
        assert checked_train, "the README's tl-studio train assets/demo line"
        engine = subprocess.run([sys.executable, "-c", engine_example], cwd=checkout, env=env, capture_output=True,
                                text=True, timeout=600)
        assert engine.returncode == 0, engine.stderr
        assert engine.stdout.startswith("finished ")
        client_code = client_examples[0].replace("http://127.0.0.1:7860/", f"http://127.0.0.1:{port}/")
        client = subprocess.run([sys.executable, "-c", client_code], cwd=checkout, env=env, capture_output=True,
                                text=True, timeout=600)
        assert client.returncode == 0, client.stderr
        assert client.stdout.startswith("finished "), client.stdout
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    status, out, _ = run_line("tl-studio runs --json", checkout, env, capsys)
    assert status == 0 and {"demo", "py"} <= {r["run"] for r in json.loads(out)}


@pytest.mark.parametrize("line, need", marked_lines())
def test_readme_lines_that_need_what_is_not_here(line, need):
    """Reported, not run: the summary lists each such line with what it needs."""
    pytest.skip(f"README line needs {need}: {line}")


def test_every_readme_shell_line_is_known():
    """A shell line is a tl-studio command, a set-up step, a benchmark, or marked with what it needs."""
    setup = ("python -m venv", "pip install", "python -m bench", "python bench/", "bash tests/run.sh")
    for line in shell_lines():
        assert line.startswith("tl-studio") or line.startswith(setup) or NEEDS.search(line), line
