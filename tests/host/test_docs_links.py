"""Every relative link in the project's Markdown leads somewhere (issue #17).

README.md, docs/*.md and the other Markdown files of the repository (policies/README.md, …):
a link to a file that does not exist, or to a `#anchor` that no heading of the target produces,
fails. Anchors follow GitHub's rules: the heading's text without its Markdown (code spans keep
their text, links their label), lower-cased, every character that is not a letter, a digit, a
space, `-` or `_` dropped, spaces turned into `-`; a repeated anchor gets `-1`, `-2`, ….
Links inside code (fenced blocks, `code spans`) are not links; absolute URLs are not checked.
"""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"node_modules", "build", "dist", "python_modules", "mutants", "__pycache__"}

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [label](target "title") and ![alt](target); the label may hold a code span but no newline.
LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        found += [Path(folder) / name for name in sorted(files) if name.endswith(".md")]
    return found


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = None
    for number, line in enumerate(text.split("\n"), 1):
        match = FENCE.match(line)
        if match:
            if fenced is None:
                fenced = match.group(1)
            elif match.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            yield number, line


def slug(heading: str) -> str:
    text = CODE_SPAN.sub(lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its label
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    # Explicit anchors: <a name="x"> / <a id="x">.
    found |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", path.read_text(encoding="utf-8")))
    return found


def links(path: Path):
    """(line number, target) of every link in the prose of a Markdown file."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        reference = REFERENCE.match(line)
        if reference:
            yield number, reference.group(1)
            continue
        prose = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        for match in LINK.finditer(prose):
            yield number, match.group(2)


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    anchor_cache: dict[Path, set[str]] = {}
    for number, target in links(path):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?", 1)[0]
        where = f"{path.relative_to(root)}:{number}: {target}"
        destination = (path.parent / file_part).resolve() if file_part else path
        if file_part and file_part.startswith("/"):
            destination = (root / file_part.lstrip("/")).resolve()
        if not destination.exists():
            problems.append(f"{where}: no such file")
            continue
        if not anchor:
            continue
        if destination.is_dir() or destination.suffix.lower() != ".md":
            problems.append(f"{where}: an anchor into something that is not Markdown")
            continue
        if destination not in anchor_cache:
            anchor_cache[destination] = anchors(destination)
        if anchor not in anchor_cache[destination]:
            problems.append(f"{where}: no heading makes #{anchor} in {destination.relative_to(root)}")
    return problems


def test_the_files_that_must_be_checked_are():
    checked = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert "README.md" in checked
    assert {"docs/CONFIGURATION.md", "docs/SECURITY.md", "docs/BENCHMARKS.md"} <= checked
    assert not any(name.startswith(("node_modules/", ".venv/")) for name in checked)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(path):
    assert broken_links(path) == []


def test_benchmark_figures_are_written_in_one_place():
    """bench/run.py --docs writes the figures between these markers; the issue: figures
    quoted twice disagree. Only docs/BENCHMARKS.md holds them."""
    holders = [path.relative_to(ROOT).as_posix() for path in markdown_files()
               if "<!-- bench:start -->" in path.read_text(encoding="utf-8")]
    assert holders == ["docs/BENCHMARKS.md"]
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert text.count("<!-- bench:start -->") == text.count("<!-- bench:end -->") == 1
    assert text.index("<!-- bench:start -->") < text.index("<!-- bench:end -->")


# ---------------------------------------------------------------- the checker itself


@pytest.mark.parametrize("heading, anchor", [
    ("Running locally: workerd, offline", "running-locally-workerd-offline"),
    ("CORS (browsers on other origins)", "cors-browsers-on-other-origins"),
    ("1. Register the protected API in Entra ID", "1-register-the-protected-api-in-entra-id"),
    ("Tokens (`credential.py`, `tokens.py`)", "tokens-credentialpy-tokenspy"),
    ("The `idtyp` claim", "the-idtyp-claim"),
    ("Groups assigned to the application (`ApplicationGroup`)", "groups-assigned-to-the-application-applicationgroup"),
    ("Paths (`paths.py`) — the exact rules", "paths-pathspy--the-exact-rules"),
    ("snake_case and CAPS", "snake_case-and-caps"),
    ("See [the docs](x.md)", "see-the-docs"),
])
def test_anchors_follow_github(heading, anchor):
    assert slug(heading) == anchor


def test_the_checker_finds_what_is_broken_and_passes_what_is_not(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# A\n\n## Same\n\n## Same\n\n```\n## Not a heading\n```\n")
    (tmp_path / "README.md").write_text(
        "# Top\n\n"
        "[ok](docs/A.md) [ok](docs/A.md#same) [ok](docs/A.md#same-1) [ok](#top) ![img](docs/A.md)\n"
        "[bad file](docs/B.md) [bad anchor](docs/A.md#other) [bad here](#nowhere)\n"
        "[fenced heading](docs/A.md#not-a-heading) [dir anchor](docs#x)\n"
        "`[in code](missing.md)` [web](https://example.com/x#y) [mail](mailto:a@b.c)\n"
        "```\n[in a fence](missing.md)\n```\n"
        "[ref]: docs/missing.md\n"
    )
    problems = broken_links(tmp_path / "README.md", root=tmp_path)
    assert [problem.split(": ", 1)[1].split(":")[0] for problem in problems] == [
        "docs/B.md", "docs/A.md#other", "#nowhere", "docs/A.md#not-a-heading", "docs#x", "docs/missing.md",
    ], problems
