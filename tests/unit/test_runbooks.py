"""The DAGs' runbooks: Markdown files in the package, filled in per model, read once per process."""

from __future__ import annotations

import re
import string

import pytest

from airloop.core.spec import get_spec
from airloop.orchestration import build

TRIAGE = build.runbook_template("triage").rstrip("\n")


@pytest.mark.parametrize("stage", build.RUNBOOKS)
def test_each_runbook_is_filled_in_and_ends_with_the_shared_triage(stage: str) -> None:
    spec = get_spec("bikes")
    text = getattr(build, f"{stage}_runbook")(spec)
    assert text.startswith(f"# {spec.name}_{stage}\n")
    assert f"**Owner:** {spec.owner}" in text
    assert text.count(TRIAGE) == 1 and text.endswith(TRIAGE + "\n")
    assert "## Triage" in text.split(TRIAGE)[0], "the shared paragraphs close the Triage section"
    assert not re.findall(r"\{[a-z_]+(?:[:!][^}]*)?\}", text), "a field was left unfilled"


@pytest.mark.parametrize("stage", build.RUNBOOKS)
def test_each_template_ends_with_the_triage_field(stage: str) -> None:
    fields = [f for _, f, _, _ in string.Formatter().parse(build.runbook_template(stage)) if f is not None]
    assert fields.count("triage") == 1 and build.runbook_template(stage).endswith("{triage}\n")


def test_the_shared_triage_has_no_fields() -> None:
    assert all(f is None for _, f, _, _ in string.Formatter().parse(TRIAGE))
    assert "is unreachable" in TRIAGE and "airloop view" in TRIAGE


def test_templates_are_read_once_per_process() -> None:
    spec = get_spec("bikes")
    build.ingest_runbook(spec)
    before = build.runbook_template.cache_info()
    for _ in range(3):
        build.ingest_runbook(spec)
    after = build.runbook_template.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 6  # ingest.md and triage.md, each time


def test_an_unknown_runbook_names_the_file() -> None:
    with pytest.raises(FileNotFoundError, match=r"nosuch\.md"):
        build.runbook_template("nosuch")
