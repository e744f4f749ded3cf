"""A small Dockerfile reader for the tests (no engine here): instructions with their
arguments, continuation lines joined, exec-form arguments parsed as JSON."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, RUN, ENV, ...
    args: str  # the rest of the line, continuations joined

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


def parse(path: Path) -> list[Instruction]:
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        name, _, args = text.partition(" ")
        out.append(Instruction(name.upper(), args.strip()))
    assert not pending, "unterminated continuation"
    return out


def env(instructions: list[Instruction]) -> dict[str, str]:
    """The image's environment from its ENV instructions (``K=V`` pairs, quotes honoured)."""
    out: dict[str, str] = {}
    for ins in instructions:
        if ins.name != "ENV":
            continue
        for pair in shlex.split(ins.args):
            key, sep, value = pair.partition("=")
            assert sep, f"legacy 'ENV key value' form: {ins.args}"
            out[key] = value
    return out


def healthcheck_command(ins: Instruction) -> list[str]:
    """The exec-form command of ``HEALTHCHECK [options] CMD [...]``."""
    _, sep, cmd = ins.args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {ins.args}"
    value = json.loads(cmd.strip())
    assert isinstance(value, list)
    return value


def options(ins: Instruction) -> dict[str, str]:
    """``--name=value`` options before a HEALTHCHECK's CMD."""
    head = ins.args.partition("CMD ")[0]
    return dict(opt[2:].split("=", 1) for opt in head.split() if opt.startswith("--"))
