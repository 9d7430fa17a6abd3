"""The docs stay true to the code: the settings table is the one generated from Settings, and every page the README
links exists."""
import re

from tests.helpers import ROOT
from tools import docs


def test_the_settings_table_is_generated_from_settings():
    text = docs.PAGE.read_text()
    assert docs.rendered(text) == text, "docs/configuration.md is stale: run python -m tools.docs"


def test_every_page_the_readme_links_exists_and_the_readme_is_short():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/)?[A-Za-z0-9_./-]+\.md)(?:#[^)]*)?\)", readme)
    assert links and all((ROOT / link).exists() for link in links), [l for l in links if not (ROOT / l).exists()]
    assert len(readme.splitlines()) <= 200


def test_every_link_between_docs_pages_resolves():
    missing = []
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([A-Za-z0-9_./-]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / link).exists():
                missing.append(f"{page.name} -> {link}")
    assert missing == []
