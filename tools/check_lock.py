"""Checks that the running environment holds exactly the packages of a lock file (``make test`` runs it).

A ``.venv`` left from an earlier lock, or changed by hand with pip, hides drift: the suite would pass
here and fail on a fresh machine. This compares every installed distribution with the lock's pins that
apply to this interpreter (environment markers evaluated) and fails, naming each difference, unless
they are the same set at the same versions.

It also checks, like ``pip check``, that every installed package's requirements are installed at
versions they accept — except the ones left out on purpose (``ABSENT_ON_PURPOSE``).

Usage: python tools/check_lock.py requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

# The project itself (installed editable from the checkout) and the installer the venv was made with.
_NOT_LOCKED = {"initlab", "pip"}
# Requirements that no lock can satisfy here, with the reason (tools/lock-overrides.txt removes them).
ABSENT_ON_PURPOSE = {
    "torchvision": "PyPI's torchvision wheels for x86-64 link CUDA torch and fail to import beside "
    "torch==2.13.0+cpu; timm's model code needs none of it beyond what tests/zoo.py provides, and mup does not import it",
}


def pins(lock: Path) -> dict[str, str]:
    """{canonical name: version} for the lock's requirements whose markers hold here."""
    text = re.sub(r"\\\n", " ", lock.read_text())
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec = line.split(" --hash", 1)[0].strip()
        req, _, marker = spec.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, sep, version = req.strip().partition("==")
        if not sep:
            raise SystemExit(f"{lock}: {req.strip()!r} is not pinned with ==; regenerate it with `make lock`.")
        out[canonicalize_name(name)] = version.strip()
    return out


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def unmet() -> list[str]:
    """Requirements of installed packages that are missing or at a version they do not accept."""
    have = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    out = []
    for name, dist in sorted(have.items()):
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep in ABSENT_ON_PURPOSE:
                continue
            if dep not in have:
                out.append(f"{name} requires {req}, which is not installed")
            elif not req.specifier.contains(have[dep].version, prereleases=True):
                out.append(f"{name} requires {req}, but {have[dep].version} is installed")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    lock = Path(argv[1])
    want, have = pins(lock), installed()
    problems = []
    for name, version in sorted(want.items()):
        if name not in have:
            problems.append(f"{name}=={version} is in {lock} but not installed")
        elif Version(have[name]) != Version(version):
            problems.append(f"{name} is {have[name]}, {lock} pins {version}")
    for name in sorted(set(have) - set(want) - _NOT_LOCKED):
        problems.append(f"{name}=={have[name]} is installed but not in {lock}")
    problems += unmet()
    if problems:
        print(f"The environment at {sys.prefix} differs from {lock}:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print("Rebuild it from the lock: make clean test", file=sys.stderr)
        return 1
    print(f"environment matches {lock}: {len(want)} packages, every requirement met "
          f"(left out on purpose: {', '.join(sorted(ABSENT_ON_PURPOSE))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
