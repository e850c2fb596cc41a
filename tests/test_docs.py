"""The README's flags table is --help's: every flag, and its default."""

from __future__ import annotations

import argparse
import re

from helpers import REPO_ROOT
from inferserve.__main__ import build_parser

MAX_README_LINES = 220


def _readme_flags() -> dict[str, str]:
    rows = {}
    for line in (REPO_ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\|\s*`(--[a-z-]+)`\s*\|([^|]*)\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def _parser_flags() -> dict[str, argparse.Action]:
    return {option: action for action in build_parser()._actions for option in action.option_strings
            if option.startswith("--") and option != "--help"}


def test_the_flags_table_lists_exactly_the_flags_of_help() -> None:
    assert set(_readme_flags()) == set(_parser_flags())


def test_each_plain_default_in_the_table_is_the_parsers() -> None:
    table = _readme_flags()
    for flag, action in _parser_flags().items():
        if action.default not in (None, False, argparse.SUPPRESS) and not isinstance(action.default, bool):
            assert f"`{action.default}`" in table[flag] or str(action.default) in table[flag], flag


def test_help_shows_each_default_once() -> None:
    text = build_parser().format_help()
    for flag in _parser_flags():
        section = text.split(flag, 1)[1].split("\n  --", 1)[0]
        assert section.lower().count("default") <= 1, flag


def test_the_readme_is_short() -> None:
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= MAX_README_LINES
