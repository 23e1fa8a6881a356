"""Run nox with nothing installed but Python.

``python3 noxw.py -s tests`` creates ``.noxw/`` (a private virtual environment holding nox and uv) the
first time, then runs nox from it with the given arguments. Like a Gradle wrapper: it is the only entry
point the README asks for, so a fresh machine needs no other set-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_DIR = HERE / ".noxw"
REQUIREMENTS = ["nox>=2024.4.15", "uv>=0.4"]


def _env_python() -> Path:
    return ENV_DIR / "bin" / "python"


def _ensure_env() -> Path:
    marker = ENV_DIR / ".installed"
    wanted = "\n".join(REQUIREMENTS)
    if marker.exists() and marker.read_text() == wanted:
        return _env_python()
    print(f"noxw: creating {ENV_DIR} with {', '.join(REQUIREMENTS)}", file=sys.stderr)
    venv.EnvBuilder(with_pip=True, clear=True).create(ENV_DIR)
    subprocess.run(
        [
            str(_env_python()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        check=True,
    )
    marker.write_text(wanted)
    return _env_python()


def main() -> int:
    python = _ensure_env()
    env = dict(os.environ)
    # nox finds uv (its fast venv backend) on PATH.
    env["PATH"] = f"{ENV_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.call(
        [str(python), "-m", "nox", "-f", str(HERE / "noxfile.py"), *sys.argv[1:]], env=env
    )


if __name__ == "__main__":
    sys.exit(main())
