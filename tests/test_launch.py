"""Launch paths: python launch.py (and --share offline), Space front matter, requirements."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import yaml

from .uikit import free_port

ROOT = Path(__file__).resolve().parents[1]


def _serve(args: list[str], tmp_path: Path, timeout: float = 90) -> tuple[int, str]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TL_STUDIO_OFFLINE": "1"}
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--runs-dir", str(tmp_path / "runs"), *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + timeout
            status = 0
            while time.monotonic() < deadline:
                try:
                    status = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status
                    break
                except OSError:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.5)
            if "--share" in args:  # the share attempt comes after the server is up
                for _ in range(120):
                    if "share link" in log.read_text():
                        break
                    time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(30)
    return status, log.read_text()


def test_launch_py_serves_from_anywhere(tmp_path):
    status, text = _serve([], tmp_path)
    assert status == 200, text
    assert "local mode" in text


def test_share_without_network_warns_and_serves(tmp_path):
    status, text = _serve(["--share"], tmp_path)
    assert status == 200, text
    assert "shared mode" in text
    # Offline Gradio cannot make the tunnel; we say so and keep serving. (Where a
    # network exists a real link is logged instead.)
    assert "could not create a public share link" in text or "public share link: https://" in text


def _front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must start with Hugging Face Space front matter"
    return yaml.safe_load(m.group(1))


def test_readme_front_matter_describes_a_space():
    meta = _front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["app_file"] == "launch.py" and (ROOT / meta["app_file"]).exists()
    assert meta["python_version"] == "3.11"  # a string: YAML would read 3.11 as a float
    import gradio

    assert str(meta["sdk_version"]).split(".")[0] == gradio.__version__.split(".")[0]


def test_requirements_txt_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert sorted(reqs) == sorted(deps)


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split("---\n", 2)[2]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    assert "python launch.py" in blocks[0]
    assert "bash tests/run.sh" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tests/run.sh" in ci


def test_a_port_in_use_is_one_line_naming_the_options(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "TL_STUDIO_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--port", str(port), "--runs-dir",
                               str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--port {port}" in lines[0] and "GRADIO_SERVER_PORT" in lines[0] and "already in use" in lines[0]
