"""The batch as a person sees it in a real terminal (a tmux pane): the progress bar advances and
no native MediaPipe/TFLite log line reaches the screen. Skipped where tmux is not installed."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NATIVE_NOISE = ("TensorFlow Lite", "XNNPACK", "W0000", "I0000", "inference_feedback_manager", "absl::InitializeLog")

# About 30 s (three photos through `facetex complete` in a fresh process): slow.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def test_progress_bar_advances_and_native_logs_stay_hidden(astronaut_path, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        shutil.copy(astronaut_path, photos / f"p{i}.png")
    out = tmp_path / "out"
    command = (f"cd {shlex.quote(str(REPO))} && env -u GLOG_minloglevel -u TF_CPP_MIN_LOG_LEVEL "
               f"PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m facetex_cli.main complete "
               f"{shlex.quote(str(photos))} -o {shlex.quote(str(out))} --no-glb; echo FACETEX_EXIT=$?; sleep 60")
    session = f"facetex-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command], check=True)
    frames = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            frame = _tmux("capture-pane", "-p", "-t", session)
            frames.append(frame)
            if "FACETEX_EXIT=" in frame:
                break
            time.sleep(0.05)
        screen = _tmux("capture-pane", "-p", "-S", "-", "-t", session)  # with the scrollback
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    assert "FACETEX_EXIT=0" in screen, screen
    assert "complete: 3 ok, 0 skipped, 0 failed" in screen
    # The bar drew its intermediate counts (it stayed at 0/3 when fd 2 was silenced under it).
    assert any("1/3" in f or "2/3" in f for f in frames), "the progress bar never advanced on screen"
    leaked = [line for f in [*frames, screen] for line in f.splitlines() if any(n in line for n in NATIVE_NOISE)]
    assert not leaked, leaked
