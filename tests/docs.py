"""The vendor's examples, read out of the vendor's documentation pages.

``tests/samples/docs`` holds the pages of ``../shared/api`` verbatim (test_docs_are_verbatim
checks that when the originals are beside the checkout); each example is the fenced block that
follows a marker in a page, so no example is copied by hand.
"""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).parent / "samples" / "docs"
ORIGINALS = Path(__file__).resolve().parents[2] / "shared" / "api"

# name -> (page, a marker the example follows)
EXAMPLES: dict[str, tuple[str, str]] = {
    "character_get_200": ("character-get-api.md", '{% tab title="200'),
    "character_get_400": ("character-get-api.md", '{% tab title="400'),
    "character_list_200": ("character-list-api.md", '{% tab title="200'),
    "character_update_200": ("core-ai-settings-api.md", '{% tab title="200: OK The model'),
    "character_update_401": ("core-ai-settings-api.md", '{% tab title="401'),
    "temperature_update_200": ("core-ai-settings-api.md", '{% tab title="200: OK Temperature'),
    "llm_error_401": ("custom-llm-api.md", "Example error for missing/invalid key"),
    "llm_register_200": ("custom-llm-api.md", "### 2.1 Register a Model"),
    "llm_update_200": ("custom-llm-api.md", "### 2.2 Update a Model"),
    "llm_deregister_200": ("custom-llm-api.md", "### 2.3 Deregister a Model"),
    "llm_list_200": ("custom-llm-api.md", "### 2.4 List Models"),
    "llm_error_404": ("custom-llm-api.md", "Example Error:"),
}


def doc_example(name: str) -> bytes:
    """The first fenced JSON (or untyped) block after the example's marker, as bytes."""
    page, marker = EXAMPLES[name]
    text = (DOCS / page).read_text(encoding="utf-8")
    position = text.index(marker)
    while True:
        fence = text.index("```", position)
        line_end = text.index("\n", fence)
        language = text[fence + 3 : line_end].strip()
        close = text.index("\n```", line_end)
        if language in ("", "json"):
            return text[line_end + 1 : close + 1].encode()
        position = close + 4
