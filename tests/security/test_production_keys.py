"""Keys fail closed: production mode does not start without its keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from b2bscore.app import StartupRefused, load_secrets
from b2bscore.kit.settings import Settings
from tests.security.test_audit_cli import run_cli
from tests.servers import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B2BSCORE_")}
    env.update(B2BSCORE_ENV="production", B2BSCORE_VAR_DIR=str(tmp_path / "var"), **extra)
    return env


def _serve(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b2bscore", "serve", "--port", str(free_port())],
        env=_env(tmp_path, **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("missing", ["both", "data keys", "tokenization key"])
def test_production_serve_refuses_to_start_without_its_keys(tmp_path: Path, missing: str) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    given: dict[str, str] = {}
    if missing != "data keys":
        (secrets_dir / "data_keys").write_text("k1-00000000:" + "A" * 43 + "=\n")
        given["B2BSCORE_DATA_KEYS_FILE"] = str(secrets_dir / "data_keys")
    if missing != "tokenization key":
        given["B2BSCORE_TOKENIZATION_KEY"] = "t" * 32
    if missing == "both":
        given = {}
    result = _serve(tmp_path, **given)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    expected = (
        "B2BSCORE_TOKENIZATION_KEY" if missing == "tokenization key" else "B2BSCORE_DATA_KEYS"
    )
    assert expected in result.stderr
    # Nothing was made up on the way: no key file beside the data.
    assert not (tmp_path / "var" / "data_keys").exists()


async def test_generated_keys_are_accepted_from_secrets_files(tmp_path: Path) -> None:
    generated = await run_cli(["audit", "generate-keys"], {})
    assert generated.exit_code == 0, generated.output
    lines = dict(line.split("=", 1) for line in generated.stdout.strip().splitlines())
    data_file, token_file = tmp_path / "data_keys", tmp_path / "tokenization_key"
    data_file.write_text(lines["B2BSCORE_DATA_KEYS"] + "\n")
    token_file.write_text(lines["B2BSCORE_TOKENIZATION_KEY"] + "\n")
    keyring, tokenizer = load_secrets(
        Settings(env="production", data_keys_file=data_file, tokenization_key_file=token_file)
    )
    assert keyring.current_key_id == lines["B2BSCORE_DATA_KEYS"].split(":")[0]
    assert tokenizer.token("x").startswith("tok_")
    # The same in production through the environment variables themselves.
    load_secrets(
        Settings(
            env="production",
            data_keys=SecretStr(lines["B2BSCORE_DATA_KEYS"]),
            tokenization_key=SecretStr(lines["B2BSCORE_TOKENIZATION_KEY"]),
        )
    )
    with pytest.raises(StartupRefused, match="cannot read"):
        load_secrets(Settings(env="production", data_keys_file=tmp_path / "nope"))
