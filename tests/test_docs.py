"""The documentation pages the protocol tests read their examples from are the vendor's, verbatim."""

from __future__ import annotations

import pytest

from .docs import DOCS, EXAMPLES, ORIGINALS, doc_example


@pytest.mark.skipif(not ORIGINALS.is_dir(), reason="../shared/api is not beside this checkout")
def test_docs_are_verbatim_copies_of_the_vendor_pages() -> None:
    for original in sorted(ORIGINALS.glob("*.md")):
        assert (DOCS / original.name).read_bytes() == original.read_bytes(), original.name


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_is_found_in_its_page(name: str) -> None:
    example = doc_example(name)
    page, _ = EXAMPLES[name]
    assert example.strip()
    assert example.decode() in (DOCS / page).read_text(encoding="utf-8")
