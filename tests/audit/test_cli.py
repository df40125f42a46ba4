"""``calcinosis-cds audit ...`` as an auditor uses it (security brief §3.4 verification, §3.5 queries):
exit codes, readable output, NDJSON exports that validate and re-verify, and every read of the log
leaving an access row behind (BALP). Both backends."""

from __future__ import annotations

import os
import stat
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.guidanceresponse import GuidanceResponse

from hooks.audit import AuditError
from hooks.audit.export import audit_event
from hooks.audit.factory import open_audit_log
from hooks.audit.schema import SCHEMA_VERSION
from hooks.audit.sql import AuditLog
from hooks.cli import main
from tests.audit.conftest import T0, TEST_KEY, call_record, drop_triggers, feedback, raw_execute

VENV_CLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "calcinosis-cds"


@pytest.fixture
def env(audit_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CDS_AUDIT_DSN", audit_dsn)
    monkeypatch.setenv("CDS_AUDIT_KEY", TEST_KEY.decode())
    monkeypatch.setenv("CDS_ENVIRONMENT", "production")
    monkeypatch.setenv("CDS_PUBLIC_BASE_URL", "https://cds.example.org")
    return audit_dsn


@pytest.fixture
def history(log: AuditLog, env: str) -> dict[str, Any]:
    """Two patients, a failure, and feedback on the first patient's cards."""
    first = call_record()
    other = call_record(patient_ref="Patient/456")
    failed = call_record(http_status=412, reason_class="data-unobtainable", cards=[], rules_fired=[])
    later = call_record(received_at=first.received_at.replace(year=2027))
    for record in (first, other, failed, later):
        log.append_call(record)
    log.append_feedback([
        feedback(first, 0, outcome="accepted", accepted_suggestions=["s1"], override_reason_code=None,
                 override_reason_display=None),
        feedback(first, 1),  # the red flag dismissed, with a reason
    ])
    return {"first": first, "other": other, "failed": failed, "later": later}


# The auditor reads the trail an hour after the first call: access rows carry this time, never the wall clock.
READ_AT = T0 + timedelta(hours=1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", *argv], clock=lambda: READ_AT)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def access_rows(log: AuditLog) -> list[dict[str, Any]]:
    return [orjson.loads(row["document"]) for row in log.rows(kinds=["access"])]


def test_verify_passes_then_fails_with_the_broken_seq(history: dict[str, Any], env: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "verify")
    assert code == 0
    assert "chain OK: 6 records" in out
    drop_triggers(env)
    raw_execute(env, "UPDATE audit_log SET http_status = 200 WHERE seq = 3")
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert "BROKEN at seq 3" in out


def test_the_installed_command_exits_non_zero_on_a_broken_chain(history: dict[str, Any], env: str) -> None:
    drop_triggers(env)
    raw_execute(env, "DELETE FROM card_index WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 2")
    result = subprocess.run([str(VENV_CLI), "audit", "verify"], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ), check=False)
    assert result.returncode == 1, result.stderr
    assert "BROKEN at seq 2" in result.stdout
    assert "deleted" in result.stdout


def test_verify_with_the_wrong_key_fails(history: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CDS_AUDIT_KEY", "not-the-key")
    code, out, _ = run(capsys, "verify")
    assert code == 1
    assert "BROKEN at seq 1" in out


def test_a_missing_sqlite_database_is_an_error_not_a_new_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CDS_AUDIT_KEY", "k")
    target = tmp_path / "nowhere.sqlite3"
    code, _, err = run(capsys, "verify", "--dsn", f"sqlite:///{target}")
    assert code == 2
    assert "no audit database" in err
    assert not target.exists()


def test_show_tells_the_story_of_one_patient_and_is_itself_audited(history: dict[str, Any], log: AuditLog,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    first = history["first"]
    code, out, _ = run(capsys, "show", "--patient", "Patient/123", "--since", "2026-01-01", "--until", "2026-12-31")
    assert code == 0
    assert "2026-11-21T09:00:00" in out
    assert "calcinosis-assessment" in out
    assert "patient-view" in out
    assert "HTTP 200" in out
    assert "HTTP 412" in out
    assert "data-unobtainable" in out
    for shown in first.cards:
        assert f"[{shown['indicator']}] {shown['summary']}" in out
    assert "rules fired: C1, R2" in out
    # Each feedback names its card, and an acceptance names the suggestion taken, by its label.
    assert (f'accepted card {first.cards[0]["uuid"]}: suggestion "Order serum phosphate (s1)" (uuid s1)'
            in out)
    assert f"overridden card {first.cards[1]['uuid']} (Not relevant)" in out
    assert "Patient/456" not in out
    assert "2027-" not in out.split("hook call(s)")[0]
    assert "3 hook call(s)" not in out
    assert "2 hook call(s)" in out
    (access,) = access_rows(log)
    assert access["action"] == "show"
    assert access["at"].startswith("2026-11-21T10:00:00")  # the injected clock, not the wall clock
    assert access["filters"]["patient"] == "Patient/123"
    assert access["filters"]["until"].startswith("2027-01-01")  # a bare --until date includes that day


@pytest.mark.parametrize(("fmt", "model", "expected"), [
    ("auditevent", AuditEvent, 6), ("guidanceresponse", GuidanceResponse, 4)])
def test_fhir_exports_are_valid_ndjson(history: dict[str, Any], capsys: pytest.CaptureFixture[str], fmt: str,
                                       model: Any, expected: int) -> None:
    code, out, err = run(capsys, "export", "--format", fmt)
    assert code == 0
    lines = out.splitlines()
    # The export's own access row is written first, so it appears in an AuditEvent export.
    assert len(lines) == expected + (1 if fmt == "auditevent" else 0)
    for line in lines:
        model.model_validate(orjson.loads(line))
    assert f"exported {len(lines)} {fmt}" in err
    assert "chain head seq" in err


def test_a_patient_export_holds_only_that_patient(history: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    target = tmp_path / "out" / "p123.ndjson"
    target.parent.mkdir()
    code, out, _ = run(capsys, "export", "--format", "auditevent", "--patient", "Patient/123",
                       "--since", "2026-11-01", "--until", "2026-11-30", "--output", str(target))
    assert code == 0
    assert out == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    events = [AuditEvent.model_validate(orjson.loads(line)) for line in target.read_bytes().splitlines()]
    patients = {e.what.reference for event in events for e in event.entity if e.role and e.role.code == "1"}
    assert patients == {"Patient/123"}
    # 2 calls of Patient/123 in November (one failed), 2 feedback items, and this export's access row.
    assert len(events) == 5


def test_a_raw_archive_reverifies_offline(history: dict[str, Any], log: AuditLog, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "archive.jsonl"
    code, _, _ = run(capsys, "export", "--format", "jsonl", "--output", str(archive))
    assert code == 0
    lines = archive.read_bytes().splitlines()
    assert orjson.loads(lines[0])["document"]["record_id"] == history["first"].record_id
    head_seq, head_hash = log.head()
    code, out, _ = run(capsys, "verify", "--file", str(archive), "--expect-head", f"{head_seq}:{head_hash}")
    assert code == 0
    assert "recorded head seq" in out

    edited = [orjson.loads(line) for line in lines]
    edited[1]["document"]["patient_ref"] = "Patient/000"
    archive.write_bytes(b"\n".join(orjson.dumps(item) for item in edited))
    code, out, _ = run(capsys, "verify", "--file", str(archive))
    assert code == 1
    assert "BROKEN at seq 2" in out


def test_expect_head_catches_a_chain_rewritten_with_the_key(history: dict[str, Any], log: AuditLog, env: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    head_seq, head_hash = log.head()
    # Someone holding the key drops the last rows and re-appends: the chain is valid, the head is not.
    drop_triggers(env)
    cut = head_seq - 1
    raw_execute(env, f"DELETE FROM card_index WHERE seq >= {cut}", f"DELETE FROM audit_log WHERE seq >= {cut}")  # noqa: S608
    # The instance that wrote the head refuses to extend the cut chain; the key holder's own tool does not.
    with pytest.raises(AuditError, match="newest records were deleted"):
        log.append_call(call_record())
    rewriter = open_audit_log(env, TEST_KEY)
    rewriter.open()
    try:
        rewriter.append_call(call_record())
        rewriter.append_call(call_record())
    finally:
        rewriter.close()
    code, out, _ = run(capsys, "verify", "--expect-head", f"{head_seq}:{head_hash}")
    assert code == 1
    assert "against the recorded head" in out


def test_stats_give_override_rates_per_rule_and_kind(history: dict[str, Any], log: AuditLog,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", "--since", "2026-01-01", "--until", "2026-12-31")
    assert code == 0
    assert "hook calls: 3 (HTTP 200: 2, HTTP 412: 1)" in out
    # Columns: shown | with suggestions | accepted | overridden | override rate. The red flag offers no
    # suggestion, so it can only be dismissed: counted, but it has no override rate (not "100 %").
    assert "| C1 | 2 | 2 | 1 | 0 | 0% |" in out
    assert "| subtype | 2 | 2 | 1 | 0 | 0% |" in out
    assert "| R2 | 2 | 0 | 0 | 1 | n/a (no suggestions) |" in out
    assert "| red-flag | 2 | 0 | 0 | 1 | n/a (no suggestions) |" in out
    assert [a["action"] for a in access_rows(log)] == ["stats"]


def test_reads_leave_access_rows_in_the_chain(history: dict[str, Any], log: AuditLog,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "show", "--patient", "Patient/123")
    run(capsys, "export", "--format", "jsonl")
    assert [a["action"] for a in access_rows(log)] == ["show", "export"]
    assert all(a["os_user"] and a["host"] for a in access_rows(log))
    code, out, _ = run(capsys, "verify")
    assert code == 0
    assert "8 records" in out


def test_migrate_reports_the_schema_version(history: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "migrate")
    assert code == 0
    assert f"version {SCHEMA_VERSION}" in out


def test_a_production_cli_without_a_key_refuses(env: str, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CDS_AUDIT_KEY")
    code, _, err = run(capsys, "verify")
    assert code == 2
    assert "CDS_AUDIT_KEY" in err


def test_a_period_archive_verifies_on_its_own(log: AuditLog, env: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    early, late, february = call_record(), call_record(), call_record()
    early.received_at = early.received_at.replace(month=1, day=30)
    late.received_at = late.received_at.replace(month=1, day=31, hour=23, minute=59)
    february.received_at = february.received_at.replace(month=2, day=1, hour=0, minute=0)
    # The late January call was slow: February's call committed before it (chain order != arrival order).
    for record in (early, february, late, call_record(received_at=february.received_at.replace(day=2))):
        log.append_call(record)
    archive = tmp_path / "january.jsonl"
    code, _, _ = run(capsys, "export", "--format", "jsonl", "--since", "2026-01-01", "--until", "2026-01-31",
                     "--output", str(archive))
    assert code == 0
    seqs = [orjson.loads(line)["seq"] for line in archive.read_bytes().splitlines()]
    assert seqs == [1, 2, 3]  # the run of seq covering January, February's edge row included
    code, out, _ = run(capsys, "verify", "--file", str(archive))
    assert code == 0, out


# --------------------------------------------------------------------------- archive anchors (review finding 6)


def export_archive(capsys: pytest.CaptureFixture[str], archive: Path, *period: str) -> tuple[str, str]:
    code, _, err = run(capsys, "export", "--format", "jsonl", *period, "--output", str(archive))
    assert code == 0, err
    command = next(line for line in err.splitlines() if "--expect-first" in line).split()
    return command[command.index("--expect-first") + 1], command[command.index("--expect-head") + 1]


def test_the_documented_archive_procedure_works(log: AuditLog, env: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """docs/audit.md "Retention and archiving a period", step by step."""
    january = [call_record(received_at=call_record().received_at.replace(month=1, day=day)) for day in (3, 9, 20)]
    for record in [*january, call_record(received_at=january[0].received_at.replace(month=2))]:
        log.append_call(record)
    archive = tmp_path / "audit-2026-01.jsonl"
    first, head = export_archive(capsys, archive, "--since", "2026-01-01", "--until", "2026-01-31")
    assert first == f"1:{'0' * 64}"
    assert head == f"3:{log.hash_at(3)}"
    manifest = orjson.loads(archive.with_name(archive.name + ".manifest.json").read_bytes())
    assert (manifest["first_seq"], manifest["last_seq"], manifest["records"]) == (1, 3, 3)
    assert stat.S_IMODE(archive.with_name(archive.name + ".manifest.json").stat().st_mode) == 0o600
    # Step 2: the archive alone, against the anchors export printed (and, without them, its manifest).
    code, out, _ = run(capsys, "verify", "--file", str(archive), "--expect-first", first, "--expect-head", head)
    assert code == 0, out
    assert "recorded head seq 3 matches" in out
    code, out, _ = run(capsys, "verify", "--file", str(archive))
    assert code == 0, out
    assert "manifest" in out
    # The archive's last anchor is also checked against the live chain.
    code, out, _ = run(capsys, "verify", "--expect-head", head)
    assert code == 0, out


@pytest.mark.parametrize("cut", ["first", "last"])
def test_an_archive_cut_at_either_end_fails_against_its_anchors(history: dict[str, Any], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str], cut: str) -> None:
    archive = tmp_path / "archive.jsonl"
    first, head = export_archive(capsys, archive)
    lines = archive.read_bytes().splitlines()
    archive.write_bytes(b"\n".join(lines[1:] if cut == "first" else lines[:-1]) + b"\n")
    # With explicit anchors (the manifest moved away)...
    archive.with_name(archive.name + ".manifest.json").rename(tmp_path / "manifest.json")
    code, out, _ = run(capsys, "verify", "--file", str(archive), "--expect-first", first, "--expect-head", head)
    assert code == 1
    assert f"archive cut at the {'start' if cut == 'first' else 'end'}" in out
    # ...and with the manifest, which also notices the file changed.
    code, out, _ = run(capsys, "verify", "--file", str(archive), "--manifest", str(tmp_path / "manifest.json"))
    assert code == 1
    assert "SHA-256 differs" in out
    # Without any anchor the cut archive still verifies, and verify says so.
    code, out, _ = run(capsys, "verify", "--file", str(archive))
    assert code == 0
    assert "no anchors" in out


def test_a_raw_archive_of_one_patient_is_refused(history: dict[str, Any], log: AuditLog,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "export", "--format", "jsonl", "--patient", "Patient/123")
    assert code == 2
    assert out == ""
    assert "--patient" in err
    assert access_rows(log) == []  # refused before anything was read


# --------------------------------------------------------------------------- nits (review finding 7)


def test_export_never_writes_through_a_planted_partial_file(history: dict[str, Any], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "export.ndjson"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "export.ndjson.partial").symlink_to(victim)
    code, _, _ = run(capsys, "export", "--format", "auditevent", "--output", str(target))
    assert code == 0
    assert victim.read_text() == "keep me"
    assert target.read_bytes().count(b"\n") == 7
    assert not target.is_symlink()
    assert sorted(path.name for path in tmp_path.iterdir() if "partial" in path.name) == ["export.ndjson.partial"]


def test_an_unexpected_error_exits_2_not_1(history: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(AuditLog, "verify", explode)
    code, _, err = run(capsys, "verify")
    assert code == 2
    assert "unexpected RuntimeError" in err


def test_access_rows_record_who_the_database_authenticated(history: dict[str, Any], log: AuditLog, env: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "stats")
    (access,) = access_rows(log)
    if env.startswith("postgresql"):
        assert access["db_user"] == "postgres"
        assert access["client_addr"] == "127.0.0.1/32"
        (row,) = log.rows(kinds=["access"])
        event = AuditEvent.model_validate(audit_event(row, "https://cds.example.org"))
        assert "database user postgres" in (event.agent[0].who.display or "")
    else:
        assert "db_user" not in access  # SQLite has no authenticated user: the OS user is all there is
