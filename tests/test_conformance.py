"""The official Durable Streams server conformance suite against `fusebox streams serve`."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import NODE_DIR, StreamsProcess, node_available

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_official_conformance_suite(streams_server: StreamsProcess, capsys) -> None:
    if not node_available():
        pytest.fail("tests/node/node_modules is missing: run scripts/test, which installs it")
    result = subprocess.run(
        ["npx", "vitest", "run", "--config", "vitest.config.mjs", "conformance.test.mjs"],
        cwd=NODE_DIR,
        env={
            **os.environ,
            "CONFORMANCE_TEST_URL": streams_server.url,
            "CONFORMANCE_LONG_POLL_MS": str(int(streams_server.long_poll_timeout * 1000)),
            "CONFORMANCE_SUBSCRIPTIONS": "1",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = _ANSI.sub("", result.stdout + result.stderr)
    summary = [line.strip() for line in output.splitlines() if line.strip().startswith("Tests ")]
    failures = [line.strip() for line in output.splitlines() if line.strip().startswith("FAIL")]
    with capsys.disabled():
        print(f"\nDurable Streams conformance: {summary[-1] if summary else 'no summary'}")
        for line in failures:
            print(f"  {line}")
    assert result.returncode == 0, output[-5000:]
    assert summary, output[-5000:]
    passed = re.search(r"(\d+) passed", summary[-1])
    assert passed is not None and "failed" not in summary[-1] and "skipped" not in summary[-1]
    assert int(passed.group(1)) >= 338
