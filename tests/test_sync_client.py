"""The official @electric-sql/client against `fusebox sync serve` and a real Postgres."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import NODE_DIR, SyncProcess, node_available

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_electric_typescript_client(sync_server: SyncProcess, capsys) -> None:
    assert node_available(), "tests/node/node_modules is missing: run scripts/test"
    result = subprocess.run(
        ["npx", "vitest", "run", "--config", "vitest.config.mjs", "electric.test.mjs"],
        cwd=NODE_DIR,
        env={
            **os.environ,
            "ELECTRIC_URL": f"{sync_server.url}/v1/shape",
            "ELECTRIC_SECRET": sync_server.secret,
            "DATABASE_URL": sync_server.database_url,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = _ANSI.sub("", result.stdout + result.stderr)
    summary = [line.strip() for line in output.splitlines() if line.strip().startswith("Tests ")]
    with capsys.disabled():
        print(f"\n@electric-sql/client: {summary[-1] if summary else 'no summary'}")
    assert result.returncode == 0, output[-6000:]
    assert summary and "failed" not in summary[-1], output[-6000:]
