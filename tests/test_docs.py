"""The front page and the guides stay usable: a short README, no broken relative links, and a
docstring on every public name (the API reference is generated from them).

The documentation site itself is built by CI (`mkdocs build --strict` in `.ci/run`), not here.
"""

import inspect
import re
from pathlib import Path

import pytest

import prosv_lens

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)")


def test_readme_is_a_front_page_under_10_kb():
    size = (ROOT / "README.md").stat().st_size
    assert size < 10 * 1024, f"README.md is {size} bytes; move detail into docs/ or reports/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_to_existing_files(page: Path):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_every_public_name_has_a_docstring():
    missing = []
    for name in prosv_lens.__all__:
        obj = getattr(prosv_lens, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj)):
            continue  # constants (DEFAULT_MODEL, __version__, position specs) carry no docstring
        doc = (obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""
        if not doc.strip() or doc.startswith(f"{obj.__name__}("):  # dataclasses invent one
            missing.append(name)
    assert not missing, f"public names without a docstring: {missing}"
