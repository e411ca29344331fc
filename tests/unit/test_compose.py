"""compose.yaml: the vault's environment in it is a complete, valid configuration,
every variable it sets is documented, its secrets are wired, and its scripts parse.

Docker is not available where the tests run, so the stack is not started here; what
the vault reads from it is checked with the vault's own configuration loaders.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from singura_vault.config.environment import load_settings
from singura_vault.service.access import load_auth_secret
from singura_vault.service.data_keys import load_key_manager
from singura_vault.service.key_admin import create_keyring_file
from tests.support.docs import variables_in_docs

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
OURS = re.compile(r"^(SINGURA|DATABASE|ENCRYPTION|OTEL)_")


def _environment(service: str) -> dict[str, str]:
    environment: dict[str, Any] = COMPOSE["services"][service]["environment"]
    return {name: str(value) for name, value in environment.items()}


def test_every_vault_variable_in_compose_is_documented() -> None:
    """Every vault variable compose.yaml sets is documented in docs/configuration.md."""
    ours = {name for name in _environment("vault") if OURS.match(name)}
    assert {"DATABASE_URL", "SINGURA_KEYRING_FILE", "SINGURA_AUTH_SECRET_FILE"} <= ours
    assert sorted(ours - variables_in_docs()) == []


def test_every_secret_file_is_declared_and_mounted() -> None:
    """Every /run/secrets path a compose service reads is a declared secret mounted into that
    service, kept under deploy/compose/secrets/."""
    declared = set(COMPOSE["secrets"])
    for name, service in COMPOSE["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= declared, name
        for value in _environment(name).values():
            for secret in re.findall(r"^/run/secrets/([a-z_]+)$", value):
                assert secret in mounted, (name, secret)
    for secret in COMPOSE["secrets"].values():
        assert secret["file"].startswith("./deploy/compose/secrets/")
    assert "deploy/compose/secrets/" in (ROOT / ".gitignore").read_text()
    assert "deploy/compose/secrets/" in (ROOT / ".dockerignore").read_text()


def test_the_vaults_compose_environment_loads(tmp_path: Path) -> None:
    """With the secret files make-secrets.sh writes, the vault's settings, auth secret
    and root keys load: `serve` would get as far as connecting."""
    files = {
        "keyring": tmp_path / "keyring.json",
        "auth_secret": tmp_path / "auth_secret",
        "pgpass": tmp_path / "pgpass",
    }
    create_keyring_file(files["keyring"])
    files["auth_secret"].write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    files["pgpass"].write_text("postgres:5432:singura:singura_service:x\n")
    for path in files.values():
        path.chmod(0o600)
    env = {
        name: str(files[value.removeprefix("/run/secrets/")])
        if value.startswith("/run/secrets/")
        else value
        for name, value in _environment("vault").items()
    }
    settings = load_settings(env)
    assert not settings.embedded
    assert settings.db_wait_s == 60
    assert len(load_auth_secret(settings)) == 32
    load_key_manager(settings)


def test_the_role_script_creates_what_the_dba_sql_does() -> None:
    """The compose role script runs every role, grant and database statement of the DBA SQL in
    docs/operations.md."""
    script = (ROOT / "deploy/compose/init-roles.sh").read_text()
    operations = (ROOT / "docs/operations.md").read_text()
    dba_sql = operations[operations.index("### SQL for the DBA") :]
    dba_sql = dba_sql[dba_sql.index("```sql") : dba_sql.index("```\n", dba_sql.index("```sql") + 6)]
    for statement in re.findall(
        r"^(CREATE ROLE \w+|GRANT [^;]+|CREATE DATABASE [^;]+|REVOKE [^;]+)", dba_sql, re.M
    ):
        assert statement in script, statement


@pytest.mark.parametrize("script", ["init-roles.sh", "make-secrets.sh"])
def test_the_compose_scripts_parse(script: str) -> None:
    """The compose shell scripts parse with sh -n."""
    shell = shutil.which("sh")
    assert shell is not None
    checked = subprocess.run(
        [shell, "-n", str(ROOT / "deploy/compose" / script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
