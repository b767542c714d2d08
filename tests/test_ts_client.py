"""The official TypeScript client (@durable-streams/client) against `fusebox streams serve`.

Runs tests/node/clients.test.mjs with vitest against a real server and requires every test
in it to pass.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import NODE_DIR, StreamsProcess, node_available

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_typescript_client_suite(core_server: StreamsProcess) -> None:
    if not node_available():
        pytest.fail("tests/node/node_modules is missing: run scripts/test, which installs it")
    result = subprocess.run(
        ["npx", "vitest", "run", "--config", "vitest.config.mjs", "clients.test.mjs"],
        cwd=NODE_DIR,
        env={**os.environ, "STREAMS_URL": core_server.url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = _ANSI.sub("", result.stdout + result.stderr)
    summary = [line.strip() for line in output.splitlines() if line.strip().startswith("Tests ")]
    assert result.returncode == 0, output[-6000:]
    assert summary, output[-6000:]
    assert "failed" not in summary[-1] and "skipped" not in summary[-1], summary[-1]
    passed = re.search(r"(\d+) passed", summary[-1])
    assert passed is not None and int(passed.group(1)) >= 14, summary[-1]
