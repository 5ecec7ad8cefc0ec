#!/usr/bin/env python3
"""Check requirements.lock against what it is made from, and (with --installed) against the virtualenv.

    python scripts/check_lock.py               # the lock satisfies pyproject.toml and constraints.txt
    python scripts/check_lock.py --installed   # ... and this interpreter's packages are exactly the lock
    python scripts/check_lock.py --installed --prune   # first uninstall what the lock does not list

`make install` runs the first before installing and the last after; exit 1 with one line per problem, each
naming the package and what to run. Standard library plus `packaging` (pip's own copy where it is not installed),
so it runs in a virtualenv that holds nothing but pip.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a fresh virtualenv: pip carries packaging
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = "constraints.txt"
RELOCK = "run `make lock` and commit requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\#]+))?")


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: exact version} of the pins that apply to this interpreter."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = PIN.match(line.strip())
        if not m:
            continue
        name, version, marker = m.groups()
        if marker and not Requirement(f"{name}; {marker.strip()}").marker.evaluate():
            continue
        pins[canonicalize_name(name)] = version
    return pins


def read_requirements(pyproject: Path, extras: list[str], constraints: Path | None) -> list[tuple[Requirement, str]]:
    """(requirement, where it comes from) for the project's dependencies, the extras and the constraints
    (a constraint only bounds a package that something else requires)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    found = [(Requirement(r), pyproject.name) for r in project.get("dependencies", [])]
    for extra in extras:
        found += [(Requirement(r), f"{pyproject.name} [{extra}]")
                  for r in project.get("optional-dependencies", {}).get(extra, [])]
    if constraints is not None and constraints.is_file():
        for line in constraints.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append((Requirement(line), CONSTRAINTS))
    env = default_environment()
    return [(r, src) for r, src in found if r.marker is None or r.marker.evaluate({**env, "extra": ""})]


def check_cpu_torch(lock: Path, pins: dict[str, str]) -> list[str]:
    """The lock must keep the CPU build of torch: a lock made where only PyPI's (CUDA) torch was found is wrong."""
    cuda = sorted(n for n in pins if n.startswith("nvidia-") or n == "triton")
    torch = pins.get("torch")
    problems = [f"{n}: {lock.name} pins a CUDA package" for n in cuda]
    if torch is not None and not torch.endswith("+cpu"):
        problems.append(f"torch: {lock.name} has {torch}, not the CPU build (+cpu)")
    if problems:
        problems.append("run `make lock` where the CPU torch wheel is (TORCH_WHEELS, default /opt/wheels)")
    return problems


def check_sources(lock: Path, pins: dict[str, str], requirements: list[tuple[Requirement, str]]) -> list[str]:
    problems = check_cpu_torch(lock, pins)
    for req, source in requirements:
        name = canonicalize_name(req.name)
        if name not in pins:
            if source == CONSTRAINTS:
                continue
            problems.append(f"{req.name}: required by {source} ({req}) but not in {lock.name}; {RELOCK}")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"{req.name}: {lock.name} has {pins[name]}, {source} asks for {req}; {RELOCK}")
    return problems


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}


def check_installed(lock: Path, pins: dict[str, str], project: str) -> tuple[list[str], list[str]]:
    """(problems, names installed but not locked)."""
    have = installed()
    problems = []
    for name, version in sorted(pins.items()):
        if name not in have:
            problems.append(f"{name}: {lock.name} has {version}, not installed; run `make install`")
        elif Version(have[name]) != Version(version):  # 2.13.0+cpu and 2.13.0 differ here
            problems.append(f"{name}: {lock.name} has {version}, installed {have[name]}; run `make install`")
    extra = sorted(set(have) - set(pins) - {project})
    for name in extra:
        problems.append(f"{name} {have[name]}: installed but not in {lock.name}; run `make install` "
                        f"(it removes it), or add it to pyproject.toml and {RELOCK}")
    return problems, extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    ap.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    ap.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    ap.add_argument("--extra", action="append", default=None, help="optional-dependency group (default: dev)")
    ap.add_argument("--installed", action="store_true", help="also compare this interpreter's packages")
    ap.add_argument("--prune", action="store_true", help="with --installed: first uninstall unlisted packages")
    args = ap.parse_args(argv)

    if not args.lock.is_file():
        print(f"check-lock: {args.lock} is missing; {RELOCK}", file=sys.stderr)
        return 1
    pins = read_lock(args.lock)
    problems = check_sources(args.lock, pins, read_requirements(args.pyproject, args.extra or ["dev"],
                                                                   args.constraints))
    if not problems and args.installed:
        project = canonicalize_name(tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]["name"])
        problems, extra = check_installed(args.lock, pins, project)
        if extra and args.prune:
            print(f"check-lock: removing packages that {args.lock.name} does not list: {', '.join(extra)}")
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
            problems, _ = check_installed(args.lock, pins, project)
    for p in problems:
        print(f"check-lock: {p}", file=sys.stderr)
    if problems:
        return 1
    what = "pyproject.toml, constraints.txt" + (" and the installed packages" if args.installed else "")
    print(f"check-lock: {args.lock.name} ({len(pins)} packages) matches {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
