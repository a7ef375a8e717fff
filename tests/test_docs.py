"""The documentation holds together: relative links and anchors in docs/*.md and README.md resolve, the mkdocs nav
lists every page, the API reference names every top-level export, and (when mkdocs is installed) the site builds
with `mkdocs build --strict`."""

import importlib.util
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

import segvit_hf

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"

_FENCED_BLOCK = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.I)
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def markdown_files() -> list[Path]:
    files = sorted(DOCS.glob("*.md"))
    if (REPO / "README.md").is_file():
        files.append(REPO / "README.md")
    return files


def _without_code(text: str) -> str:
    return _INLINE_CODE.sub("", _FENCED_BLOCK.sub("", text))


def link_targets(text: str) -> list[str]:
    """Targets of inline links, images, reference definitions and HTML links outside code."""
    prose = _without_code(text)
    return [
        match.group(1)
        for pattern in (_INLINE_LINK, _REFERENCE_DEFINITION, _HTML_LINK)
        for match in pattern.finditer(prose)
    ]


def _heading_text(raw: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)  # links keep their text
    return re.sub(r"<[^>]+>|[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", text)


def heading_anchors(path: Path) -> set[str]:
    """Anchors of the headings of a markdown file, as mkdocs (Python-Markdown's toc) and GitHub spell them."""
    anchors, seen_mkdocs, seen_github = set(), {}, {}
    for match in _HEADING.finditer(_FENCED_BLOCK.sub("", path.read_text(encoding="utf-8"))):
        text = _heading_text(match.group(2))
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        mkdocs = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
        github = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        for slug, seen, separator in ((mkdocs, seen_mkdocs, "_"), (github, seen_github, "-")):
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}{separator}{count}")
    return anchors


def broken_links(files: list[Path], must_stay_inside: Path | None = None) -> list[str]:
    """`file: target (why)` for every relative link that does not resolve to an existing file and heading anchor."""
    problems = []
    for source in files:
        for target in link_targets(source.read_text(encoding="utf-8")):
            if _SCHEME.match(target) or target.startswith("//"):
                continue
            path_part, _, anchor = target.partition("#")
            destination = (source.parent / path_part).resolve() if path_part else source.resolve()
            if not destination.exists():
                problems.append(f"{source.name}: {target} (no such file)")
                continue
            unconstrained = must_stay_inside is None or source.parent != must_stay_inside
            if not unconstrained and must_stay_inside.resolve() not in (destination, *destination.parents):
                problems.append(f"{source.name}: {target} (outside {must_stay_inside.name}/: mkdocs cannot serve it)")
                continue
            if anchor and destination.suffix == ".md" and anchor not in heading_anchors(destination):
                problems.append(f"{source.name}: {target} (no heading with anchor #{anchor})")
    return problems


def test_link_checker_finds_broken_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Title\n\n## Sharing on the `Hub`\n\n## Sharing on the `Hub`\n\n"
        "[ok](b.md) [ok](b.md#getting-started) [ok](#sharing-on-the-hub) [ok](#sharing-on-the-hub_1)\n"
        "[bad](missing.md) [bad](b.md#nowhere) ![bad](img/none.png) [web](https://example.org/x.md)\n"
        "`[not a link](gone.md)`\n\n```python\n[not a link](gone.md)\n# not a heading\n```\n"
        '[ref]: c.md\n<a href="d.md">d</a> [outside](../README.md)\n'
    )
    (tmp_path / "docs" / "b.md").write_text("# Getting started\n")
    (tmp_path / "README.md").write_text("[docs](docs/a.md#title) [bad](docs/a.md#not-a-heading-1)\n")
    problems = broken_links(
        [tmp_path / "docs" / "a.md", tmp_path / "docs" / "b.md", tmp_path / "README.md"],
        must_stay_inside=tmp_path / "docs",
    )
    assert sorted(problems) == sorted([
        "a.md: missing.md (no such file)",
        "a.md: b.md#nowhere (no heading with anchor #nowhere)",
        "a.md: img/none.png (no such file)",
        "a.md: c.md (no such file)",
        "a.md: d.md (no such file)",
        "a.md: ../README.md (outside docs/: mkdocs cannot serve it)",
        "README.md: docs/a.md#not-a-heading-1 (no heading with anchor #not-a-heading-1)",
    ])


def test_every_relative_link_in_the_docs_and_readme_resolves():
    files = markdown_files()
    assert len(files) >= 6, f"expected the documentation pages in {DOCS}"
    problems = broken_links(files, must_stay_inside=DOCS)
    assert not problems, "Broken documentation links:\n" + "\n".join(problems)


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def test_mkdocs_nav_lists_every_page_and_only_existing_ones():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = _nav_pages(config["nav"])
    assert [page for page in pages if not (DOCS / page).is_file()] == []
    assert sorted(path.name for path in DOCS.glob("*.md")) == sorted(pages)
    for required in ("quickstart.md", "architecture.md", "inference.md", "training.md", "evaluation.md",
                     "conversion.md", "hub.md", "benchmarks.md", "api.md"):
        assert required in pages


def test_api_reference_names_every_top_level_export():
    reference = (DOCS / "api.md").read_text(encoding="utf-8")
    undocumented = [name for name in segvit_hf.__all__ if not re.search(rf"`{re.escape(name)}[`(.]", reference)]
    assert not undocumented, f"add these exports of segvit_hf to docs/api.md: {undocumented}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (the docs extra)")
def test_mkdocs_build_strict(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
