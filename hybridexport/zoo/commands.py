"""``hybridexport list``: every variant of the reference families, with params and where it comes from."""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from typing import Any

HELP = "list the built-in models (iFormer, MobileViT, Mobile-Former variants) with params and sources"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON on stdout")


@cache
def built_params(name: str) -> int:
    """Parameters of ``name`` as built, counted on the ``meta`` device (no memory, no weight init)."""
    import torch

    from hybridexport.analyze.params import count_params
    from hybridexport.zoo import build_model

    with torch.device("meta"):
        return count_params(build_model(name).module)


def model_rows(count: bool = True) -> list[dict[str, Any]]:
    """One dict per variant: name, family, variant, resolution, params (built), paper figures, source."""
    from hybridexport.zoo import family_aliases, list_specs

    flagships = {v: k for k, v in family_aliases().items()}
    rows = []
    for spec in list_specs():
        row: dict[str, Any] = {
            "name": spec.name,
            "family": spec.family,
            "variant": spec.variant,
            "resolution": spec.resolution,
            "params": None,
            "paper_params_m": spec.card.get("params_m"),
            "paper_gmacs": spec.card.get("gmacs"),
            "paper_top1": spec.card.get("top1"),
            "source": spec.source,
            "alias": flagships.get(spec.name),
        }
        if count:
            try:
                row["params"] = built_params(spec.name)
            except Exception as exc:  # noqa: BLE001 - one broken definition must not hide the others
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
        rows.append(row)
    return rows


def _arxiv(card: dict[str, Any]) -> str:
    """The paper's arXiv id from a card's ``paper`` field ('' when it has none)."""
    paper = str(card.get("paper", ""))
    return next((part.strip() for part in paper.split(",") if part.strip().startswith("arXiv")), "")


def _footer(rows: list[dict[str, Any]]) -> str:
    from hybridexport.zoo import family_aliases

    aliases = ", ".join(f"{fam} → {name}" for fam, name in family_aliases().items())
    return (
        f"★ flagship: a family name alone picks it ({aliases}). Any timm model works as timm:<name> "
        "(e.g. timm:repvit_m1_1, timm:mobilenetv4_conv_small). params: counted as built (BatchNorm unfolded; "
        "`hybridexport info MODEL` gives the folded count the papers publish)."
    )


def run(args: argparse.Namespace) -> int:
    from hybridexport.console import console, err_console

    with err_console.status("counting parameters (meta device)…"):
        rows = model_rows()
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    from rich import box
    from rich.table import Table

    from hybridexport.zoo.cards import load_cards

    table = Table(title="hybridexport models", title_justify="left", caption=_footer(rows), caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("model", no_wrap=True)
    for header in ("input", "params\n(M)", "paper\nparams", "paper\nGMACs", "top-1\n(%)"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("definition", style="dim", overflow="fold")
    cards = load_cards()
    family = None
    for row in rows:
        if row["family"] != family:
            if family is not None:
                table.add_section()
            family = row["family"]
            table.add_row(f"[bold]{family}[/]", "", "", "", "", "", _arxiv(cards.get(family, {})))
        params = f"{row['params'] / 1e6:.2f}" if row["params"] is not None else "[red]n/a[/]"
        table.add_row(
            row["name"] + (" [yellow]★[/]" if row["alias"] else ""),
            f"{row['resolution']}²",
            params,
            f"{row['paper_params_m']}" if row["paper_params_m"] is not None else "–",
            f"{row['paper_gmacs']}" if row["paper_gmacs"] is not None else "–",
            f"{row['paper_top1']}" if row["paper_top1"] is not None else "–",
            row["source"] if "error" not in row else f"[red]{row['error']}[/]",
        )
    console.print(table)
    return 0
