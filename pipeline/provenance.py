"""What made an artifact: the code version (package version and git commit) and package versions."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

PROJECT = "fas-dg"
KEY_PACKAGES = ("torch", "torchvision", "facenet-pytorch", "face-alignment", "opencv-python", "numpy",
                "h5py", "dask", "distributed", "pandas", "luigi", "scikit-image", "scikit-learn", "scipy")


def code_version() -> dict:
    """The project's version, and the git commit and dirty flag of the checkout it runs from."""
    info = {"name": PROJECT, "version": _version(PROJECT), "git_commit": None, "git_dirty": None}
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10)
            info["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def package_versions(names=KEY_PACKAGES) -> dict:
    """Installed versions of the named distributions (None where absent), and Python's."""
    versions = {name: _version(name) for name in names}
    versions["python"] = platform.python_version()
    return versions


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def program_name(module: str, script: str) -> str:
    """The command as the user typed it: ``script`` (the console script) or ``python -m <module>``."""
    import sys
    return f"python -m {module}" if Path(sys.argv[0]).name == "__main__.py" else script


def version_line() -> str:
    """``--version``'s text: the project's version and, from a checkout, its git commit."""
    info = code_version()
    dirty = ", modified" if info["git_dirty"] else ""
    commit = f" (git {info['git_commit'][:12]}{dirty})" if info["git_commit"] else ""
    return f"{PROJECT} {info['version']}{commit}"
