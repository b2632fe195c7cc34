"""The documents under docs/ and the README stay in step with the code.

- every route of the served OpenAPI document is described in docs/api.md;
- every environment variable the server reads is named in docs/configuration.md or README.md;
- every relative link in docs/*.md and README.md points to a file that exists (and, for a link
  into a Markdown file with a #fragment, to a heading that exists).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aichat.http import openapi
from aichat.settings.table import env_names

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_MD = DOCS / "api.md"
CONFIGURATION_MD = DOCS / "configuration.md"
README = ROOT / "README.md"
METHODS = ("get", "post", "put", "delete", "patch")

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return sorted(DOCS.glob("*.md")) + [README]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


# --- (a) docs/api.md describes every route ---

def documented_forms(path: str) -> list[str]:
    """The ways docs/api.md may write an OpenAPI path: `/api/models/:id` or `/api/models/{id}`."""
    return [re.sub(r"\{([^}/]+)\}", r":\1", path), path]


def mentions(text: str, method: str, path: str) -> bool:
    """`METHOD path` followed by something that cannot continue the path (a query, a backtick,
    punctuation, the end of the line)."""
    return any(
        re.search(rf"(?<![A-Za-z]){method}\s+{re.escape(form)}(?![\w/.:{{-])", text)
        for form in documented_forms(path))


def spec_operations() -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in openapi.spec()["paths"].items()
            for method in item if method in METHODS]


def test_the_spec_has_operations() -> None:
    assert len(spec_operations()) > 20, "aichat.http.openapi.spec() lists almost no routes"


def test_every_route_is_in_api_md() -> None:
    text = API_MD.read_text(encoding="utf-8")
    missing = [f"{method} {documented_forms(path)[0]}" for method, path in spec_operations()
               if not mentions(text, method, path)]
    assert not missing, (
        "docs/api.md does not describe these routes of the OpenAPI document "
        "(aichat.http.openapi.spec()); add a `**`METHOD /path`**` entry for each to docs/api.md "
        "(path parameters written :name), or remove the route from the router: "
        + ", ".join(missing))


@pytest.mark.parametrize("text,method,path,found", [
    ("**`GET /api/users/:id`** — admin", "GET", "/api/users/{id}", True),
    ("**`GET /api/users?page=&limit=`**", "GET", "/api/users", True),
    ("**`GET /api/users/:id`**", "GET", "/api/users", False),
    ("**`GET /api`**", "GET", "/", False),
    ("**`GET /`**, **`GET /api`**", "GET", "/", True),
    ("`GET /api/openapi.json`", "GET", "/api/openapi", False),
    ("`PUT /api/models/{id}`", "PUT", "/api/models/{id}", True),
    ("`POST /api/models/:id`", "PUT", "/api/models/{id}", False),
])
def test_route_matching(text: str, method: str, path: str, found: bool) -> None:
    assert mentions(text, method, path) is found


# --- (b) every environment variable is documented ---

def test_every_environment_variable_is_documented() -> None:
    text = CONFIGURATION_MD.read_text(encoding="utf-8") + README.read_text(encoding="utf-8")
    missing = [name for name in env_names()
               if not re.search(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])", text)]
    assert not missing, (
        "these environment variables (aichat/settings/table.py) are named neither in "
        "docs/configuration.md nor in README.md; regenerate the README table with "
        "`python -m aichat.settings.docs --write README.md` and describe them in "
        "docs/configuration.md: " + ", ".join(missing))


# --- (c) relative links resolve ---

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0)[1:-1], heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            links.append((number, target))
    return links


def test_markdown_files_are_found() -> None:
    names = {p.name for p in markdown_files()}
    assert {"api.md", "README.md"} <= names


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(doc: Path) -> None:
    broken = []
    for number, target in relative_links(doc):
        file_part = target.split("#", 1)[0].split("?", 1)[0]
        if not file_part:
            continue  # a link within the same document: checked below
        if not (doc.parent / file_part).exists():
            broken.append(f"{doc.relative_to(ROOT)}:{number}: ({target}) -> "
                          f"{(doc.parent / file_part).resolve().relative_to(ROOT)} does not exist")
    assert not broken, ("relative links to missing files; fix the path (it is relative to the "
                        "document's own folder) or remove the link:\n" + "\n".join(broken))


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_link_fragments_name_headings(doc: Path) -> None:
    broken = []
    for number, target in relative_links(doc):
        file_part, _, fragment = target.partition("#")
        file_part = file_part.split("?", 1)[0]
        linked = (doc.parent / file_part) if file_part else doc
        if not fragment or linked.suffix != ".md" or not linked.is_file():
            continue
        if fragment.lower() not in anchors(linked):
            broken.append(f"{doc.relative_to(ROOT)}:{number}: ({target}) -> no heading with "
                          f"the anchor #{fragment} in {linked.resolve().relative_to(ROOT)}")
    assert not broken, ("links to headings that do not exist (renamed or removed?); point them "
                        "at a current heading's anchor:\n" + "\n".join(broken))


def test_slug_follows_github() -> None:
    assert slug("2. Run-time settings: the environment gives the default") == \
        "2-run-time-settings-the-environment-gives-the-default"
    assert slug("3.3 Accounts: single and multi mode") == "33-accounts-single-and-multi-mode"
    assert slug("5. The chat stream: `POST /api/chat/stream`") == \
        "5-the-chat-stream-post-apichatstream"
