"""Ctrl-C in a terminal: SIGINT reaches `turnpike dev` and its children at once."""

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_ctrl_c_stops_the_whole_fleet_cleanly(tmp_path: Path) -> None:
    state_file = tmp_path / "dev.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turnpike", "dev", "--free-ports", "--state-file", str(state_file),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a shell job in a terminal has
    )  # fmt: skip
    reader = asyncio.create_task(proc.stdout.read() if proc.stdout else asyncio.sleep(0))
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists():
            assert proc.returncode is None, await reader
            assert time.monotonic() < deadline, "no state file after 60 s"
            await asyncio.sleep(0.1)
        # The file appears whole (written aside, then renamed) and only its owner may read it.
        state = json.loads(state_file.read_text())
        assert state_file.stat().st_mode & 0o777 == 0o600
        listing = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text()
        children = [int(pid) for pid in listing.split()]
        assert len(children) == 3
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    output = (await reader).decode(errors="replace")
    assert code == 0, output
    assert "stopping the whole fleet" not in output
    assert not state_file.exists()
    assert state["accountSid"] in output  # it had printed its banner
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived turnpike dev"
