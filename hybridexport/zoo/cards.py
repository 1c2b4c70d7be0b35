"""Model cards: one TOML file per family under ``models/``, the single source of paper figures."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

CARDS_DIR = Path(__file__).resolve().parents[2] / "models"


@cache
def load_cards(cards_dir: Path = CARDS_DIR) -> dict[str, dict[str, Any]]:
    """Every family card keyed by family name (``iformer``, ``mobilevit``, ``mobileformer``)."""
    cards: dict[str, dict[str, Any]] = {}
    for path in sorted(cards_dir.glob("*.toml")):
        with path.open("rb") as fh:
            card = tomllib.load(fh)
        card["card_path"] = str(path)
        cards[card["family"]] = card
    return cards


def variant_card(name: str) -> dict[str, Any]:
    """The card entry of one variant (e.g. ``iformer-m``), with its family's fields under ``family_card``."""
    for card in load_cards().values():
        for variant in card["variants"]:
            if variant["name"] == name:
                return {**variant, "family_card": {k: v for k, v in card.items() if k != "variants"}}
    raise KeyError(name)
