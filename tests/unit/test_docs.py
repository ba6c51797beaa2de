"""The documentation holds together: the README stays a front door, links lead somewhere, the recipes are there.

The REST recipes of ``docs/rest-api.md`` run only in the end-to-end tests (real servers); here the same parser
checks, in a second, that every recipe those tests ask for is on the page, so a moved or renamed recipe fails fast.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e import recipes

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "expectations" / "README.md"]

#: Pages other branches are writing; a link to one is accepted while it does not exist yet, checked once it does.

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *$", re.M)
# recipes.run("name", "lang", ...) or recipes.run("name", lang, ...) (a loop over both), and recipes.recipes()[(...)].
_RUN = re.compile(r"recipes\.run\(\s*\"(?P<name>[\w-]+)\",\s*(?:\"(?P<lang>bash|python)\"|\w+)")
_INDEX = re.compile(r"recipes\.recipes\(\)\[\(\"(?P<name>[\w-]+)\",\s*\"(?P<lang>bash|python)\"\)\]")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code (a link there is an example, not a link)."""
    return _CODE.sub("", _FENCE.sub("", text))


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    plain = re.sub(r"[^\w\- ]", "", _CODE.sub(lambda m: m.group(0).strip("`"), title).lower())
    return plain.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(m["title"]) for m in _HEADING.finditer(_FENCE.sub("", page.read_text()))}


def _links(page: Path) -> list[str]:
    """Relative link targets of a page (web addresses and mail left out)."""
    targets = [m["target"] for m in _LINK.finditer(_prose(page.read_text()))]
    return [t for t in targets if not re.match(r"^[a-z][a-z+.-]*:", t)]


def _asked_for() -> set[tuple[str, str]]:
    """(name, language) of every recipe an end-to-end test runs; a language given as a variable means both."""
    asked: set[tuple[str, str]] = set()
    for test in sorted((ROOT / "tests" / "e2e").glob("test_*.py")):
        text = test.read_text()
        for m in _RUN.finditer(text):
            asked |= {(m["name"], m["lang"])} if m["lang"] else {(m["name"], "bash"), (m["name"], "python")}
        asked |= {(m["name"], m["lang"]) for m in _INDEX.finditer(text)}
    return asked


def test_readme_is_a_front_door_of_at_most_200_lines() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; keep it at most 200 and move reference to docs/"


def test_every_e2e_recipe_is_on_the_rest_api_page() -> None:
    asked = _asked_for()
    # The scan itself works: the recipes the demo and approval tests are known to run are among those found.
    assert {("token", "bash"), ("train", "python"), ("approvals", "bash"), ("failed-log", "python")} <= asked, asked
    found = recipes.recipes()
    missing = sorted(asked - set(found))
    assert not missing, (
        f"docs/rest-api.md lacks recipes the end-to-end tests run: {missing}. Each is a fenced bash or python block "
        "right after a line `<!-- recipe: NAME -->`; restore it there or update the test that asks for it."
    )
    assert "api = af.ApiClient(" in recipes.client_setup(), "the client set-up block must build `api`"


def test_the_recipe_parser_refuses_a_recipe_written_twice(tmp_path: Path) -> None:
    block = "<!-- recipe: train -->\n```bash\necho one\n```\n"
    page = tmp_path / "rest-api.md"
    page.write_text(block + "\n" + block)
    with pytest.raises(AssertionError, match="two bash blocks for recipe 'train'"):
        recipes.recipes(page)
    page.write_text("<!-- recipe: train -->\n\n```bash\necho one\n```\n")  # a blank line: not a recipe
    assert recipes.recipes(page) == {}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page):
        path_part, _, fragment = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
            continue
        if fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)} has broken links: " + "; ".join(broken)


def test_the_add_a_model_example_is_a_valid_spec_with_a_loading_suite(tmp_path: Path) -> None:
    """The spec and suite that docs/extending.md tells a reader to copy load as they are written."""
    from airloop.adapters.expectations import load_suites
    from airloop.core.spec import load_spec

    text = (ROOT / "docs" / "extending.md").read_text()
    spec_block = re.search(r"```yaml\n(?P<code>name: (?P<name>\w+)\n.*?)```", text, re.S)
    suite_block = re.search(r"```json\n(?P<code>\{.*?)```", text, re.S)
    assert spec_block and suite_block, "docs/extending.md lost its example spec (```yaml) or suite (```json)"
    name = spec_block["name"]
    spec_file = tmp_path / "models" / f"{name}.yaml"
    spec_file.parent.mkdir()
    spec_file.write_text(spec_block["code"])
    spec = load_spec(spec_file)
    assert spec.name == name and spec.target.task == "regression"
    (tmp_path / "expectations" / name).mkdir(parents=True)
    (tmp_path / "expectations" / name / "schema.json").write_text(suite_block["code"])
    (suite,) = load_suites(spec, tmp_path / "expectations")
    assert suite.expectation_count == 3


def test_the_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\n[ok](#a-title) [web](https://example.com) `[code](nowhere.md)`\n[gone](nowhere.md)\n")
    assert _links(page) == ["#a-title", "nowhere.md"]
    assert _anchors(page) == {"a-title"}
    assert _anchor("The model spec (`include/models/<model>.yaml`)") == "the-model-spec-includemodelsmodelyaml"


def test_the_table_of_metrics_is_the_registry() -> None:
    """docs/model-spec.md's table of metrics is what ``python -m airloop.core.metrics`` prints: a metric added,
    renamed or redirected in the registry fails here until the page is regenerated."""
    from airloop.core import metrics

    text = (ROOT / "docs" / "model-spec.md").read_text()
    found = re.search(r"<!-- metrics: generated by [^\n]*-->\n(?P<table>.*?)<!-- end metrics -->", text, re.S)
    assert found, "docs/model-spec.md lost its metrics markers (<!-- metrics: ... --> ... <!-- end metrics -->)"
    assert found["table"] == metrics.metrics_markdown(), (
        "docs/model-spec.md's table of metrics differs from core/metrics.py: replace the lines between the markers "
        "with the output of `python -m airloop.core.metrics`"
    )
    rows = found["table"].splitlines()[2:]
    assert len(rows) == len(metrics.metrics_for("regression")) + len(
        {m.name for t in ("binary", "multiclass") for m in metrics.metrics_for(t)}
    )
    assert "| `roc_auc` | binary | higher is better | class probabilities |" in found["table"]


def test_the_classification_variant_of_the_example_spec_loads(tmp_path: Path) -> None:
    """docs/extending.md's classification block, put in place of the example spec's sections, is a valid spec."""
    import yaml

    from airloop.core.spec import load_spec

    text = (ROOT / "docs" / "extending.md").read_text()
    spec_block = re.search(r"```yaml\n(?P<code>name: \w+\n.*?)```", text, re.S)
    variant = re.search(r"```yaml\n(?P<code>target:\n.*?)```", text, re.S)
    assert spec_block and variant, "docs/extending.md lost its example spec or its classification variant"
    raw = {**yaml.safe_load(spec_block["code"]), **yaml.safe_load(variant["code"])}
    spec_file = tmp_path / f"{raw['name']}.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    spec = load_spec(spec_file)
    assert spec.target.task == "classification" and spec.gate_metric == "roc_auc"
    assert spec.performance_metric == "log_loss" and spec.estimator_class.endswith("HistGradientBoostingClassifier")
