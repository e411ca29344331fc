"""schema.sql, the whole schema in one file, is exactly what migrations/ builds.

scripts/dump_schema.py --check applies every migration to a throwaway embedded
PostgreSQL and compares its pg_dump with the checked-in file, so a migration without
its snapshot (or a hand edit of the snapshot) fails here."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_schema_snapshot_matches_the_migrations() -> None:
    """scripts/dump_schema.py --check finds schema.sql identical to what the migrations build."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "dump_schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_schema_snapshot_holds_the_security_of_the_schema() -> None:
    """The snapshot is the schema, not a stub: forced row-level security, the sequencer
    and the service role's grants are all in it."""
    schema = (REPO_ROOT / "schema.sql").read_text(encoding="utf-8")
    assert "ALTER TABLE ONLY singura.encrypted_credentials FORCE ROW LEVEL SECURITY;" in schema
    assert "CREATE FUNCTION singura.audit_sequence(p_limit integer)" in schema
    assert "GRANT SELECT,INSERT ON TABLE singura.audit_pending TO singura_app;" in schema
