"""The README flag table says what the code does (regenerate: kured.cli --markdown-flags)."""

from __future__ import annotations

from pathlib import Path

from kured.args import markdown_flags, value_options

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- flags:start -->", "<!-- flags:end -->"


def readme_table() -> str:
    text = README.read_text()
    return text[text.index(START) + len(START) : text.index(END)].strip()


def cells(row: str) -> list[str]:
    return [cell.strip().strip("`") for cell in row.strip().strip("|").split("|")]


def test_readme_rows_match_the_command_flags() -> None:
    rows = [cells(row) for row in readme_table().splitlines()[2:]]
    documented = [(flag, env, default) for flag, env, default, _ in rows]
    actual = [(o.opts[0], o.envvar, o.default_text) for o in value_options()]
    assert documented == actual


def test_readme_table_is_the_generated_one() -> None:
    assert readme_table() == markdown_flags(), (
        "README flag table is stale; regenerate with .venv/bin/python -m kured.cli --markdown-flags"
    )
