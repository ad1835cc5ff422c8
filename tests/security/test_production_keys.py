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


EXPECTED_IN_MESSAGE = {
    "all": "B2BSCORE_DATA_KEYS",
    "data keys": "B2BSCORE_DATA_KEYS",
    "tokenization key": "B2BSCORE_TOKENIZATION_KEY",
    "audit keys": "B2BSCORE_AUDIT_KEYS",
    "signing key": "B2BSCORE_AUDIT_SIGNING_KEY",
}


@pytest.mark.parametrize("missing", list(EXPECTED_IN_MESSAGE))
def test_production_serve_refuses_to_start_without_its_keys(tmp_path: Path, missing: str) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    given: dict[str, str] = {}
    if missing != "data keys":
        (secrets_dir / "data_keys").write_text("k1-00000000:" + "A" * 43 + "=\n")
        given["B2BSCORE_DATA_KEYS_FILE"] = str(secrets_dir / "data_keys")
    if missing != "tokenization key":
        given["B2BSCORE_TOKENIZATION_KEY"] = "t" * 32
    if missing != "audit keys":
        given["B2BSCORE_AUDIT_KEYS"] = "c1:" + "A" * 43 + "="
    if missing != "signing key":
        given["B2BSCORE_AUDIT_SIGNING_KEY"] = "B" * 43 + "="
    if missing == "all":
        given = {}
    result = _serve(tmp_path, **given)
    assert result.returncode == 2, result.stderr
    assert "refusing to start" in result.stderr
    expected = EXPECTED_IN_MESSAGE[missing]
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
    audit = {
        "audit_keys": SecretStr(lines["B2BSCORE_AUDIT_KEYS"]),
        "audit_signing_key": SecretStr(lines["B2BSCORE_AUDIT_SIGNING_KEY"]),
    }
    secrets = load_secrets(
        Settings(
            env="production",
            data_keys_file=data_file,
            tokenization_key_file=token_file,
            **audit,  # type: ignore[arg-type]
        )
    )
    assert secrets.keyring.current_key_id == lines["B2BSCORE_DATA_KEYS"].split(":")[0]
    assert secrets.tokenizer.token("x").startswith("tok_")
    assert secrets.chain_keys.current_key_id == "c1"
    # The same in production through the environment variables themselves.
    load_secrets(
        Settings(
            env="production",
            data_keys=SecretStr(lines["B2BSCORE_DATA_KEYS"]),
            tokenization_key=SecretStr(lines["B2BSCORE_TOKENIZATION_KEY"]),
            **audit,  # type: ignore[arg-type]
        )
    )
    with pytest.raises(StartupRefused, match="cannot read"):
        load_secrets(Settings(env="production", data_keys_file=tmp_path / "nope"))
