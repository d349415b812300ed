"""A small Dockerfile checker for the project's rules (hadolint covers the general ones).

``check(path, torch_version)`` returns a list of problems, empty when the file follows the rules:
every FROM pinned to an explicit tag (never ``latest``), a non-root USER before the final CMD,
a HEALTHCHECK, and the README's install order: ``pip install torch==<version>`` first, then
``pip install .``.
"""

from __future__ import annotations

import re
from pathlib import Path

import dockerfile

ROOT_USERS = {"root", "0", "0:0", "root:root"}


def _expand(text: str, args: dict[str, str]) -> str:
    """Substitute ``${NAME}`` / ``$NAME`` with ARG defaults, as the builder would."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def check(path: Path, torch_version: str) -> list[str]:
    """Problems found in the Dockerfile at ``path`` (empty list: it passes)."""
    commands = dockerfile.parse_file(str(path))
    problems: list[str] = []
    args: dict[str, str] = {}
    users: list[str] = []
    pip_steps: list[str] = []
    seen = {c.cmd for c in commands}
    for command in commands:
        value = " ".join(command.value)
        if command.cmd == "ARG" and "=" in value:
            name, default = value.split("=", 1)
            args[name] = default.strip("\"'")
        elif command.cmd == "FROM":
            image = _expand(command.value[0], args)
            last = image.split("/")[-1]
            tag = last.split(":", 1)[1] if ":" in last else ""
            if "@sha256:" not in image and tag in ("", "latest"):
                problems.append(f"line {command.start_line}: FROM {image} is not pinned to a tag")
        elif command.cmd == "USER":
            users.append(_expand(value, args))
        elif command.cmd == "RUN":
            for step in re.split(r"&&|;", _expand(value, args)):
                if re.search(r"\bpip3? install\b", step):
                    pip_steps.append(" ".join(step.replace('"', "").split()))
    if not users or users[-1] in ROOT_USERS:
        problems.append("the image does not switch to a non-root USER")
    if "HEALTHCHECK" not in seen:
        problems.append("no HEALTHCHECK")
    if "CMD" not in seen and "ENTRYPOINT" not in seen:
        problems.append("no CMD or ENTRYPOINT")
    torch_steps = [i for i, s in enumerate(pip_steps) if f"torch=={torch_version}" in s]
    project_steps = [i for i, s in enumerate(pip_steps) if re.search(r"pip3? install \.(\s|$)", s)]
    if not torch_steps:
        problems.append(f"no `pip install torch=={torch_version}` step (the README's first step)")
    if not project_steps:
        problems.append("no `pip install .` step (the README's second step)")
    if torch_steps and project_steps and min(torch_steps) > min(project_steps):
        problems.append("`pip install .` runs before torch is installed (README order)")
    return problems
