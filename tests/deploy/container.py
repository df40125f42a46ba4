"""What the Dockerfile, compose.yaml and .env.example say, read the way Docker reads them, so the tests can
start the service exactly as the image would without a Docker engine (none runs on these machines).

* ``Dockerfile``: instructions per stage (``ENV``, ``WORKDIR``, ``USER``, ``COPY``, ``RUN``, ``ENTRYPOINT``,
  ``CMD``, ``EXPOSE``, ``HEALTHCHECK``), continuation lines joined, exec-form arguments parsed as JSON.
* ``compose.yaml``: YAML with merge keys (``<<``), as Compose loads it.
* env files: ``KEY=VALUE`` lines as Compose's ``env_file`` reads them (an empty value is set, and empty).
* ``container_environment``: Dockerfile ``ENV`` < ``HOME`` of the ``USER`` < env file < ``environment:``,
  Compose's precedence.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEPLOY", "ROOT", "Dockerfile", "Stage", "compose", "container_environment", "read_env_file"]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# PATH of the Debian-based python images before the Dockerfile's own ENV.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for name, argument in self.instructions if name == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """``ENV`` in order; ``$NAME``/``${NAME}`` expand against what is set so far (the base PATH first)."""
        values: dict[str, str] = {"PATH": BASE_PATH}
        for argument in self.all("ENV"):
            for item in shlex.split(argument):
                name, _, value = item.partition("=")
                values[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), ""), value)
        return values

    def exec_form(self, keyword: str) -> list[str]:
        argument = self.last(keyword)
        if argument is None:
            return []
        parsed = json.loads(argument)
        if not isinstance(parsed, list):
            raise ValueError(f"{keyword} is not in exec form")
        return [str(item) for item in parsed]


class Dockerfile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.args: dict[str, str] = {}
        self.stages: list[Stage] = []
        for keyword, argument in self._instructions(path.read_text(encoding="utf-8")):
            if keyword == "ARG" and not self.stages:
                name, _, default = argument.partition("=")
                self.args[name] = default
            elif keyword == "FROM":
                parts = argument.split()
                base = re.sub(r"\$\{(\w+)\}", lambda m: self.args.get(m.group(1), ""), parts[0])
                self.stages.append(Stage(base, parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
            elif self.stages:
                self.stages[-1].instructions.append((keyword, argument))

    @staticmethod
    def _instructions(text: str) -> list[tuple[str, str]]:
        joined: list[str] = []
        current = ""
        for line in text.splitlines():
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                current += line.rstrip()[:-1] + " "
                continue
            joined.append(current + line)
            current = ""
        found = []
        for line in joined:
            keyword, _, argument = line.strip().partition(" ")
            found.append((keyword.upper(), argument.strip()))
        return found

    def stage(self, name: str | None = None) -> Stage:
        """The named stage, or the last one (what ``docker build`` produces)."""
        if name is None:
            return self.stages[-1]
        return next(stage for stage in self.stages if stage.name == name)

    def healthcheck(self) -> list[str]:
        argument = self.stage().last("HEALTHCHECK") or ""
        _, _, command = argument.partition("CMD ")
        return [str(item) for item in json.loads(command)]


def compose(path: Path = DEPLOY / "compose.yaml") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return document


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, separator, value = line.partition("=")
        if not separator:
            raise ValueError(f"{path.name}: not KEY=VALUE: {line!r}")
        values[name.strip()] = value.strip().strip("'\"")
    return values


def container_environment(stage: Stage, env_file: dict[str, str], service: dict[str, Any]) -> dict[str, str]:
    """What the process in the container sees: image ENV, then HOME of the image's user, then ``env_file``,
    then the service's ``environment:`` (Compose's order of precedence)."""
    environment = stage.env()
    homes = [m.group(1) for run in stage.all("RUN") for m in re.finditer(r"--home-dir\s+(\S+)", run)]
    environment["HOME"] = homes[-1] if homes else "/"
    environment.update(env_file)
    for name, value in (service.get("environment") or {}).items():
        environment[name] = "" if value is None else str(value)
    return environment
