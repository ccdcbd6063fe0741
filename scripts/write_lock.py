"""Write requirements/lock.txt from the environment it runs in (``make lock`` runs it in a fresh virtual environment
where torch and the project's extras were just installed; README "Locked environment").

The lock is ``pip freeze`` of that environment, without the project itself and without torch's build: torch and the
packages that only its CUDA build brings (nvidia-*, triton, cuda-*) are left out, so that the Makefile's TORCH_SPEC /
TORCH_INDEX keep choosing the build (a local CPU wheel, PyPI's CUDA wheel, another index) on every machine. It is
used as pip constraints (``-c``), so a locked package that a platform does not need is simply not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import re
import subprocess
import sys
from pathlib import Path

# torch's build: chosen by the Makefile (TORCH_SPEC, TORCH_INDEX), never by the lock
TORCH_BUILD = re.compile(r"^(torch|triton|pytorch-triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)$")
PROJECT = "mtrank"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_lines(freeze: str) -> list[str]:
    out = []
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("-e "):
            continue
        if "==" not in line:
            raise SystemExit(f"write_lock: cannot lock '{line}' (installed from a path or URL, not a registry)")
        name, version = line.split("==", 1)
        if norm(name) == PROJECT or TORCH_BUILD.match(norm(name)):
            continue
        out.append(f"{norm(name)}=={version.split('+', 1)[0]}")
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("requirements/lock.txt"))
    ap.add_argument("--command", default="make lock")
    args = ap.parse_args()
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    lines = locked_lines(freeze)
    header = [
        "# The whole dependency set of mtrank (extras dev, serve, launchers), resolved and installed together.",
        f'# Refresh: {args.command}   (README "Locked environment")',
        f"# Made with CPython {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{dt.date.today().isoformat()}.",
        "# Used as pip constraints (-c) by `make setup`, `make train`, `make test`. torch and its CUDA packages are not",
        "# here: the Makefile's TORCH_SPEC / TORCH_INDEX choose the build on each machine.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text("\n".join(header + lines) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}: {len(lines)} packages")


if __name__ == "__main__":
    main()
