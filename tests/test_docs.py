"""The docs match the repository (issue 24): every relative link resolves to a
file of the repository (and a #section of a page to one of its headings), and
no page points outside the repository."""

import glob
import os
import re

import pytest
from conftest import REPO

PAGES = sorted(
    [os.path.join(REPO, "README.md")]
    + glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    + glob.glob(os.path.join(REPO, "bench", "*.md"))
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"\.\./shared|(?<![\w.])/work/|/tmp/pytest")


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page):
    with open(page, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def links(page):
    with open(page, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    return [m for m in LINK.findall(text) if not re.match(r"[a-z]+://|mailto:", m)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_links_resolve_inside_the_repository(page):
    problems = []
    for link in links(page):
        target, _, anchor = link.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), target or page))
        if target and not os.path.abspath(path).startswith(REPO + os.sep):
            problems.append(f"{link}: outside the repository")
        elif not os.path.exists(path):
            problems.append(f"{link}: no such file")
        elif anchor and path.endswith(".md") and anchor not in anchors(path):
            problems.append(f"{link}: no heading #{anchor} in {target or 'this page'}")
    assert not problems, problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_no_page_names_a_path_outside_the_repository(page):
    with open(page, encoding="utf-8") as f:
        found = [line for line in f if OUTSIDE.search(line)]
    assert not found, found


# "409 tests passed", "the 13 slow ones", "344 + 12 tests": a count of tests
# is stale as soon as a test is added (issue 34: the README said 409 when
# there were 411). The docs give times; `pytest --collect-only -q` the count.
TEST_COUNT = re.compile(
    r"\b\d+(?: \+ \d+)? (?:tests|slow ones|SLURM ones)\b|\bthe \d+ (?:tests )?marked\b"
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_no_page_states_how_many_tests_there_are(page):
    with open(page, encoding="utf-8") as f:
        found = [line.strip() for line in f if TEST_COUNT.search(line)]
    assert not found, found
