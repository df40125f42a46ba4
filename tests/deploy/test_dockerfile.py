"""deploy/Dockerfile: hadolint finds nothing (not even style), and the image keeps its promises: pinned base
and tools, non-root numeric user, the lock file installed without dev tools or the source tree, a health
check that needs no token."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.deploy.container import DEPLOY, ROOT, Dockerfile, compose

HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
DOCKERFILE = Dockerfile(DEPLOY / "Dockerfile")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    # --failure-threshold style: any finding at all fails; no config file can relax it.
    return subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def test_hadolint_finds_nothing() -> None:
    result = _hadolint(DEPLOY / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_really_checks(tmp_path: Path) -> None:
    """A Dockerfile with the classic mistakes fails: the linter is not a no-op."""
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nCMD python app.py\n")
    result = _hadolint(careless)
    assert result.returncode == 1
    assert {"DL3007", "DL3008", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_base_image_and_tools_are_pinned_like_the_repository() -> None:
    for stage in DOCKERFILE.stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", stage.base), stage.base
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    make_uv = re.search(r"^UV_VERSION := (\S+)", makefile, flags=re.MULTILINE)
    assert make_uv is not None
    installs = " ".join(DOCKERFILE.stage("build").all("RUN"))
    assert f"uv=={make_uv.group(1)}" in installs, "the image must build with the uv version the Makefile pins"
    assert "uv sync --frozen --no-dev --no-editable" in installs


def test_the_runtime_stage_runs_as_a_numeric_non_root_user_without_the_source_tree() -> None:
    runtime = DOCKERFILE.stage()
    user = runtime.last("USER") or ""
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can check it without an /etc/passwd lookup.
    assert uid.isdigit(), "USER must be numeric"
    assert gid.isdigit(), "USER must name a numeric group"
    assert int(uid) != 0
    assert int(gid) != 0
    copies = runtime.all("COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"], "only the built environment reaches the image"
    assert runtime.env()["CDS_ENVIRONMENT"] == "production"  # secure by default whatever compose says
    assert runtime.exec_form("ENTRYPOINT") == ["calcinosis-cds"]


def test_exposed_port_health_check_and_compose_agree() -> None:
    runtime = DOCKERFILE.stage()
    port = runtime.exec_form("CMD")[-1]
    assert runtime.all("EXPOSE") == [port]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(DOCKERFILE.healthcheck())
    published = compose()["services"]["cds"]["ports"]
    assert published == [f"127.0.0.1:{port}:{port}"]
