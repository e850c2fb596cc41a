"""Pieces every Markdown section of bench results uses."""

from __future__ import annotations


def interval(figures: dict) -> str:
    low, high = figures["block_ci95"]
    return f"**{figures['median_block_difference']:+.2f}** [{low:+.2f}, {high:+.2f}]"


def heading(title: str, doc: dict, when: str = "date") -> str:
    return f"## {title} (`{doc['command']}`, {doc[when]})\n\n"


def machine(doc: dict) -> str:
    m = doc["machine"]
    # The CPU by name: figures from these noisy, changing machines mean little without it.
    return f"{m['cpus']} CPU cores ({m.get('cpu') or m['arch']})"
