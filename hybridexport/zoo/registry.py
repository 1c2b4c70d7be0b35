"""Name → model specification: the three reference families from their cards, plus ``timm:<name>``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from hybridexport.errors import UnknownModelError
from hybridexport.zoo.cards import load_cards

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to, before anything is built."""

    name: str  # canonical name, e.g. "iformer-m" or "timm:repvit_m1_1"
    family: str  # "iformer" | "mobilevit" | "mobileformer" | "timm"
    variant: str  # e.g. "m", "xxs", "294m", or the timm name
    resolution: int  # default square input resolution
    source: str  # where the definition comes from, e.g. "timm:iformer_m"
    card: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: literal keyword arguments for the definition (``timm:iformer_m(features_only=True)``)
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def timm_name(self) -> str | None:
        """The timm model name for timm-defined models, else None."""
        return self.source[len(TIMM_PREFIX):] if self.source.startswith(TIMM_PREFIX) else None


def _card_specs() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for family, card in load_cards().items():
        for v in card["variants"]:
            if card["definition"] == "timm":
                source = TIMM_PREFIX + v["timm_name"]
            else:
                source = f"hybridexport.zoo.{family}"
            specs[v["name"]] = ModelSpec(
                name=v["name"],
                family=family,
                variant=v["name"].split("-", 1)[1],
                resolution=int(v["resolution"]),
                source=source,
                card=v,
            )
    return specs


def list_specs() -> list[ModelSpec]:
    """Every variant of the reference families, in card order."""
    return list(_card_specs().values())


def family_aliases() -> dict[str, str]:
    """Family name alone → its flagship variant (``iformer`` → ``iformer-m``)."""
    return {family: card["flagship"] for family, card in load_cards().items()}


def _timm_spec(timm_name: str) -> ModelSpec:
    import hybridexport._tvshim  # noqa: F401  (before timm imports torchvision)

    import timm

    if not timm.is_model(timm_name):
        near = difflib.get_close_matches(timm_name, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; closest timm names: {', '.join(near)}" if near else "; see `timm.list_models()`"
        raise UnknownModelError(f"unknown timm model '{timm_name}'{hint}")
    cfg = timm.get_pretrained_cfg(timm_name)
    size = cfg.input_size if cfg is not None and cfg.input_size else (3, 224, 224)
    return ModelSpec(
        name=TIMM_PREFIX + timm_name,
        family="timm",
        variant=timm_name,
        resolution=int(size[-1]),
        source=TIMM_PREFIX + timm_name,
    )


def resolve(name: str) -> ModelSpec:
    """Resolve a user-given model name; unknown names raise with the closest known names."""
    key = name.strip()
    if key.lower().startswith(TIMM_PREFIX) and key.endswith(")"):
        from dataclasses import replace

        from hybridexport.zoo.refs import canonical, timm_call

        base, kwargs = timm_call(key) or (key, {})
        spec = _timm_spec(base[len(TIMM_PREFIX):])
        return replace(spec, name=TIMM_PREFIX + canonical(spec.variant, kwargs), kwargs=tuple(sorted(kwargs.items())))
    if key.lower().startswith(TIMM_PREFIX):
        return _timm_spec(key[len(TIMM_PREFIX):])
    specs = _card_specs()
    aliases = family_aliases()
    lowered = key.lower().replace("_", "-")
    lowered = aliases.get(lowered, lowered)
    # Accept the paper's spellings too: "mobile-former-294m", "MobileViT-XXS".
    lowered = lowered.replace("mobile-former", "mobileformer")
    if lowered in specs:
        return specs[lowered]
    known = list(specs) + list(aliases)
    near = difflib.get_close_matches(lowered, known, n=5, cutoff=0.5)
    hint = f"; did you mean: {', '.join(near)}?" if near else ""
    raise UnknownModelError(
        f"unknown model '{name}'{hint} (`hybridexport list` shows every model; any timm model works as timm:<name>)"
    )
