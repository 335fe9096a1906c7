"""The README's quick start, run as the README writes it, in a fresh copy of the repository: it
installs omsync into the copy's own ``.venv``, starts a local S3 server (moto), creates two
buckets, a key, a task and an event through the official SDK, and shows the copied object.

Only the port numbers are changed (to free ones, so that the test cannot collide with anything
on the machine): ``OMSYNC_PORT`` is set for ``serve.sh`` and the URLs of the text follow it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.servers import free_ports

ROOT = Path(__file__).resolve().parents[2]


def quick_start_script() -> str:
    """The end-to-end bash block of the README's "Quick start" section (the one after the two
    set-up commands), verbatim."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    assert len(blocks) == 2, "the quick start has the two commands, then the end-to-end example"
    assert "./scripts/serve.sh" in blocks[0] and "./scripts/test.sh" in blocks[0]
    return str(blocks[1])


def fresh_copy(target: Path) -> None:
    """The working tree as a clone would have it: tracked files and new ones not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


@pytest.mark.timeout(900)
def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    api_port, s3_port = free_ports(2)
    script = quick_start_script()
    assert "127.0.0.1:8080" in script and "127.0.0.1:5000" in script and "-p 5000" in script
    script = (script.replace("127.0.0.1:8080", f"127.0.0.1:{api_port}")
              .replace("127.0.0.1:5000", f"127.0.0.1:{s3_port}")
              .replace("-p 5000", f"-p {s3_port}"))
    clone = tmp_path / "omsync"
    fresh_copy(clone)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMSYNC_", "VIRTUAL_ENV", "PYTHON"))}
    env["OMSYNC_PORT"] = str(api_port)
    process = subprocess.Popen(["bash", "-e", "-c", script], cwd=clone, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=840)
    finally:
        # The script's background jobs (omsync, moto) share its process group: whatever the
        # script left running ends with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    text = output.decode("utf-8", "replace")
    log = (clone / "omsync.log").read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, f"{text}\n--- omsync.log ---\n{log[-4000:]}"
    assert "copied: 1 failed: 0" in text, text
    assert "b'meow'" in text, text
    # The start-up log names the endpoint override in effect.
    assert f"endpoint override: *:local -> http://127.0.0.1:{s3_port}#moto" in log, log[-4000:]
    # A first install is quiet: no deprecation warnings from the build.
    assert "Deprecat" not in log and "Deprecat" not in text, log[-4000:]
