"""The embedded default runs the same tasks in-process, on procrastinate's in-memory connector."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.receivers import webhook_receiver

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_embedded_default_delivers_in_process(tmp_path: Path) -> None:
    with webhook_receiver() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
        result = subprocess.run(
            [
                sys.executable,
                str(HERE / "embedded_run.py"),
                str(tmp_path),
                receiver.url,
                os.environ.get("B2BSCORE_TEST_MODELS_DIR", str(REPO / "models")),
            ],
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        receiver.secrets["embedded"] = result.stdout.strip().splitlines()[-1]
        # The process ran its worker until the queue was empty: the delivery is done.
        assert len(receiver.ok()) == 1
        got = receiver.ok()[0]
        assert got.payload["type"] == "company.closed"
        assert (tmp_path / "b2bscore.db").exists()
    # Verified after the fact: the secret is only known once the process printed it.
    import standardwebhooks.webhooks as sw

    sw.Webhook(receiver.secrets["embedded"]).verify(got.body, got.headers)
