"""Rules: ``{key: initializer}`` that override a preset by module type, path glob or parameter name (any of
a tied tensor's names). The first match wins, the plan names the rule (and what the preset had chosen), and
a rule that matches nothing is an error."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from ..initializers import Initializer, get
from ..initializers.fans import Fans
from ..initializers.fans import fans as compute_fans
from .context import PresetContext
from .labels import _init_label
from .sites import Choice, ParamSite

_GLOB = set("*?[")


def _rule_matcher(key: Any) -> tuple[str, Any]:
    if isinstance(key, type):
        return f"{key.__name__} (type)", lambda s: isinstance(s.module, key)
    if isinstance(key, str) and key:
        # A tied tensor is one site under its first name; a rule naming any of its names applies to it.
        if _GLOB & set(key) or "." in key or "/" in key:
            return repr(key), lambda s: any(fnmatch.fnmatchcase(p, key) for p in (s.path, *s.aliases))

        def by_name(s: ParamSite) -> bool:
            return any(p.replace("/", ".").rsplit(".", 1)[-1] == key for p in (s.path, *s.aliases))

        return repr(key), by_name
    raise TypeError(
        f"rules: a key must be a module type (e.g. nn.Embedding), a path glob (e.g. '*.out_proj.weight') or a "
        f"parameter name (e.g. 'bias'); got {key!r}."
    )


def _rule_value(key_label: str, value: Any) -> Initializer | None:
    if value is None:
        return None
    try:
        return get(value)
    except (ValueError, TypeError) as e:
        raise ValueError(f"rules[{key_label}]: {e}") from e


def _whole_fans(site: ParamSite) -> Fans | None:
    if site.info is not None:
        return site.info.fans.get("true")
    shape = tuple(site.param.shape)
    try:
        return compute_fans(shape, "torch")
    except ValueError:
        return None


def _parse_rules(rules: Mapping[Any, Any]) -> list[tuple[str, Any, Initializer | None]]:
    if not isinstance(rules, Mapping):
        raise TypeError(f"rules: expected a dict {{key: initializer}}, got {type(rules).__name__}.")
    parsed = []
    for key, value in rules.items():
        label, match = _rule_matcher(key)
        parsed.append((label, match, _rule_value(label, value)))
    return parsed


def _apply_rules(ctx: PresetContext, parsed: list[tuple[str, Any, Initializer | None]]) -> None:
    used: set[str] = set()
    for site in ctx.sites:
        for label, match, init in parsed:
            if not match(site):
                continue
            used.add(label)
            old = ctx.choices.get(site.path, [])
            prior = ", ".join(_init_label(c.initializer) if c.initializer else "left as is" for c in old
                              if not c.fixed) or "nothing"
            if init is None:
                ctx.choices[site.path] = [Choice(None, f"left as is (the preset chose {prior})", None, rule=label)]
                break
            why = f"{_init_label(init)} (the preset chose {prior})"
            if site.info is None:
                why += "; initlab does not know this module, so fans are read in torch layout (out, in, *k)"
            fixed = [c for c in old if c.fixed]
            parts = [c for c in old if c.partition]
            if parts:
                new = [Choice(init, why, c.fans, c.label, c.index, c.shape, partition=True, rule=label) for c in parts]
            else:
                new = [Choice(init, why, _whole_fans(site), rule=label)]
            ctx.choices[site.path] = new + fixed
            break
    unused = [label for label, _, _ in parsed if label not in used]
    if unused:
        examples = ", ".join(repr(s.path) for s in ctx.sites[:4])
        raise ValueError(
            f"rules: {', '.join(unused)} matched no parameter of the model (a rule that matches nothing is an "
            f"error, not a no-op); parameter paths look like {examples}."
        )
