"""uv.lock against the minimum safe versions of tests/security/floors.toml (packages with known advisories).

A lock that resolves any package below its floor fails, naming the package, the locked and minimum versions
and the advisories. The comparison itself is tested on synthetic locks, so a check that cannot fail would show.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "uv.lock"
FLOORS = ROOT / "tests" / "security" / "floors.toml"
ADVISORY_ID = re.compile(r"^(GHSA(-[23456789cfghjmpqrvwx]{4}){3}|CVE-\d{4}-\d{4,}|PYSEC-\d{4}-\d+)$")


@dataclass(frozen=True)
class Floor:
    package: str
    minimum: Version
    advisories: tuple[str, ...]


def load_floors(path: Path = FLOORS) -> list[Floor]:
    rows = tomllib.loads(path.read_text())["floor"]
    return [Floor(canonicalize_name(r["package"]), Version(r["minimum"]), tuple(r["advisories"])) for r in rows]


def locked_versions(lock: dict) -> dict[str, list[Version]]:
    """Every version the lock resolves, per canonical package name (a lock may fork one package by marker)."""
    found: dict[str, list[Version]] = {}
    for package in lock.get("package", []):
        if "version" in package:  # the editable project itself may have no version entry
            found.setdefault(canonicalize_name(package["name"]), []).append(Version(package["version"]))
    return found


def below_floor(lock: dict, floors: list[Floor]) -> list[str]:
    """One message per locked version below its floor; packages the lock does not hold are not checked here."""
    locked = locked_versions(lock)
    return [
        f"{floor.package} {version} is locked, below {floor.minimum} ({', '.join(floor.advisories)}): "
        f"raise it with `uv lock --upgrade-package {floor.package}`"
        for floor in floors
        for version in locked.get(floor.package, [])
        if version < floor.minimum
    ]


def _lock_text(**versions: str) -> dict:
    body = "version = 1\n" + "".join(
        f'\n[[package]]\nname = "{name}"\nversion = "{version}"\n' for name, version in versions.items()
    )
    return tomllib.loads(body)


def test_no_locked_package_is_below_its_floor():
    problems = below_floor(tomllib.loads(LOCK.read_text()), load_floors())
    assert not problems, "uv.lock holds versions with known advisories:\n" + "\n".join(problems)


def test_every_floor_is_a_package_the_lock_holds():
    locked = locked_versions(tomllib.loads(LOCK.read_text()))
    stale = [f.package for f in load_floors() if f.package not in locked]
    assert not stale, f"{FLOORS.name} has rows for packages uv.lock no longer holds: {stale}; remove them"


def test_the_table_names_the_packages_the_issue_asks_for_and_real_advisory_ids():
    floors = load_floors()
    assert {"apache-airflow", "mlflow", "jinja2"} <= {f.package for f in floors}
    assert len({f.package for f in floors}) == len(floors), "one row per package"
    for floor in floors:
        assert floor.advisories, f"{floor.package}: a floor needs the advisories it answers"
        bad = [a for a in floor.advisories if not ADVISORY_ID.match(a)]
        assert not bad, f"{floor.package}: not GHSA/CVE/PYSEC ids: {bad}"


def test_a_lock_below_a_floor_fails_naming_package_versions_and_advisories():
    floors = [Floor("jinja2", Version("3.1.6"), ("GHSA-cpwx-vrp4-4pq7",))]
    problems = below_floor(_lock_text(Jinja2="3.1.5", mlflow="1.0"), floors)
    assert problems == [
        "jinja2 3.1.5 is locked, below 3.1.6 (GHSA-cpwx-vrp4-4pq7): raise it with `uv lock --upgrade-package jinja2`"
    ]


@pytest.mark.parametrize("version", ["3.1.6", "3.1.10", "4.0.0"])
def test_a_lock_at_or_above_a_floor_passes_comparing_versions_not_strings(version):
    floors = [Floor("jinja2", Version("3.1.6"), ("GHSA-cpwx-vrp4-4pq7",))]
    assert below_floor(_lock_text(jinja2=version), floors) == []


def test_every_forked_version_of_a_package_is_checked():
    lock = tomllib.loads(
        'version = 1\n[[package]]\nname = "urllib3"\nversion = "2.6.0"\n'
        '[[package]]\nname = "urllib3"\nversion = "1.26.20"\n'
    )
    assert len(below_floor(lock, [Floor("urllib3", Version("2.6.0"), ("GHSA-gm62-xv2j-4w53",))])) == 1
