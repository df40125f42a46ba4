"""``audit export`` when the audit database's disk is full (issue 16 item 9).

Every read of the log writes its access row first (no access row, no output), so with the database's disk full
the export cannot run: it must say so plainly (exit 2, what to do), write nothing, and leave the trail intact.
Once space is freed the same export to another disk works.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hooks.audit.factory import open_audit_log
from hooks.cli import main
from tests.audit.conftest import TEST_KEY, call_record
from tests.support.disk import fill, small_disk


def test_export_on_a_full_disk_fails_clearly_and_works_once_space_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_disk("4m") as disk:
        dsn = f"sqlite:///{disk}/audit.sqlite3"
        log = open_audit_log(dsn, TEST_KEY)
        log.open()
        try:
            for _ in range(3):
                log.append_call(call_record())
        finally:
            log.close()
        monkeypatch.setenv("CDS_AUDIT_DSN", dsn)
        monkeypatch.setenv("CDS_AUDIT_KEY", TEST_KEY.decode())
        monkeypatch.setenv("CDS_ENVIRONMENT", "production")
        monkeypatch.setenv("CDS_PUBLIC_BASE_URL", "https://cds.example.org")
        monkeypatch.setenv("CDS_DATA_DIR", str(disk))
        archive = tmp_path / "elsewhere" / "archive.jsonl"  # another disk than the database's
        archive.parent.mkdir()
        filler = fill(disk)

        code = main(["audit", "export", "--format", "jsonl", "--output", str(archive)])
        err = capsys.readouterr().err
        assert code == 2
        assert "the audit database's disk is full" in err
        assert "nothing was exported" in err
        assert not archive.exists()

        filler.unlink()
        assert main(["audit", "export", "--format", "jsonl", "--output", str(archive)]) == 0
        assert len(archive.read_text().splitlines()) == 4  # the three calls and this export's access row
        assert main(["audit", "verify"]) == 0
