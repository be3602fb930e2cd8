"""Check dashboard JSON against Grafana's own dashboard and panel models (grafana-foundation-sdk, Grafana 12).

The SDK's Python models are generated from the schemas Grafana publishes. `problems` decodes a dashboard through
them (`Dashboard.from_json`, which hands each panel's options and field config to its panel plugin's model and each
target to the Prometheus query model), encodes it back, and compares both ways:

- a key of ours the model does not know, or drops on the way back out (a `null` included), is a problem;
- a field the model always writes (not optional in the schema) that we leave out is a problem, save the SDK's own
  artefacts in `SDK_ONLY`;
- a value the model's type refuses (a string for a number, a value outside an enum, an object where a list
  goes) is a problem, whether the decoder raises on it or keeps it.
"""

from __future__ import annotations

import copy
import enum
import json
import linecache
import re
import types
import typing
import warnings
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.cog import plugins

with warnings.catch_warnings():
    # The v1 model warns that v2 exists; v1 is what Grafana 11 and 12 provision and save.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.models import dashboard as sdk

plugins.register_default_plugins()

Json = dict[str, Any]
# Fields the SDK writes although Grafana does not: AnnotationQuery.placement is a constant ("inControlsMenu", Grafana
# 12's controls menu) that the generated model cannot leave out.
SDK_ONLY = {("AnnotationQuery", "placement")}
_PROBE = object()


@dataclass(frozen=True)
class Problem:
    """One disagreement between our JSON and Grafana's model, at a JSON path such as `$.panels[3].options`."""

    path: str
    kind: str  # "unknown or dropped", "missing", "refused type", "changed"
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


def _short(value: Any) -> str:
    text = json.dumps(value, default=lambda o: o.to_json(), sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def accepts(hint: Any, value: Any) -> bool:
    """Whether a decoded `value` fits the model's type annotation `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(accepts(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(accepts(args[1], v) for v in value.values())
    if hint is type(None):
        return value is None
    if isinstance(value, bool) and hint is not bool:
        return False  # JSON true is no number and no enum member
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return value in {m.value for m in hint}
    if hint is float:
        return isinstance(value, int | float)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _keys(model: Any) -> dict[str, str]:
    """Attribute name -> the JSON key `to_json` writes it under (found by planting a marker in a copy)."""
    out: dict[str, str] = {}
    for attribute in typing.get_type_hints(type(model)):
        probe = copy.copy(model)
        setattr(probe, attribute, _PROBE)
        out.update((attribute, key) for key, value in probe.to_json().items() if value is _PROBE)
    return out


def _compare(decoded: Any, ours: Any, path: str, found: list[Problem]) -> None:
    if hasattr(decoded, "to_json") and not isinstance(decoded, dict | list):
        _compare_model(decoded, ours, path, found)
    elif isinstance(decoded, list):
        if not isinstance(ours, list) or len(ours) != len(decoded):
            found.append(Problem(path, "changed", f"{_short(ours)} -> {_short(decoded)}"))
            return
        for i, (d, o) in enumerate(zip(decoded, ours, strict=True)):
            _compare(d, o, f"{path}[{i}]", found)
    elif isinstance(decoded, dict):
        if not isinstance(ours, dict):
            found.append(Problem(path, "changed", f"{_short(ours)} -> {_short(decoded)}"))
            return
        for key, value in ours.items():
            if key not in decoded:
                found.append(Problem(f"{path}.{key}", "unknown or dropped", _short(value)))
            else:
                _compare(decoded[key], value, f"{path}.{key}", found)
    elif decoded != ours or isinstance(decoded, bool) != isinstance(ours, bool):
        found.append(Problem(path, "changed", f"{_short(ours)} -> {_short(decoded)}"))


def _compare_model(decoded: Any, ours: Any, path: str, found: list[Problem]) -> None:
    name = type(decoded).__name__
    if not isinstance(ours, dict):
        found.append(Problem(path, "refused type", f"{_short(ours)} where {name} goes"))
        return
    out = decoded.to_json()
    for key, value in ours.items():
        if key not in out:
            found.append(Problem(f"{path}.{key}", "unknown or dropped", f"{_short(value)} ({name} has no such key)"))
    keys = _keys(decoded)
    for attribute, hint in typing.get_type_hints(type(decoded)).items():
        key = keys.get(attribute, attribute)
        if key in ours and not accepts(hint, getattr(decoded, attribute)):
            found.append(Problem(f"{path}.{key}", "refused type", f"{_short(ours[key])} is no {hint}"))
        elif key in out and key not in ours and not _optional(hint) and (name, attribute) not in SDK_ONLY:
            found.append(Problem(f"{path}.{key}", "missing", f"{name} always writes it ({_short(out[key])})"))
    for key, value in out.items():
        if key in ours:
            _compare(value, ours[key], f"{path}.{key}", found)


def _path_to(root: Any, target: Any, path: str = "$") -> str | None:
    if root is target:
        return path
    children = root.items() if isinstance(root, dict) else enumerate(root) if isinstance(root, list) else ()
    for key, child in children:
        found = _path_to(child, target, f"{path}.{key}" if isinstance(root, dict) else f"{path}[{key}]")
        if found:
            return found
    return None


def _decode(data: Json, found: list[Problem]) -> Any:
    """`Dashboard.from_json(data)`; where a decoder raises on a value, that value is a refused type, recorded and
    removed (from `data`, a copy) so that the rest is still checked."""
    while True:
        try:
            return sdk.Dashboard.from_json(data)
        except (TypeError, AttributeError, KeyError, ValueError) as error:
            frames: list[tuple[Any, str, int]] = []
            tb = error.__traceback__
            while tb is not None:
                if tb.tb_frame.f_code.co_name == "from_json":
                    frames.append((tb.tb_frame.f_locals.get("data"), tb.tb_frame.f_code.co_filename, tb.tb_lineno))
                tb = tb.tb_next
            if len(frames) < 2 or not isinstance(frames[-2][0], dict):
                raise
            # The parent decoder's failing line reads the refused value as data["key"].
            parent: Json = frames[-2][0]
            filename, line = frames[-2][1:]
            read = re.search(r'data\["(\w+)"\]', linecache.getline(filename, line))
            if read is None or read[1] not in parent:
                raise
            found.append(
                Problem(
                    f"{_path_to(data, parent) or '$'}.{read[1]}", "refused type", f"{_short(parent[read[1]])} ({error})"
                )
            )
            del parent[read[1]]


def problems(dashboard: Json) -> list[Problem]:
    """Every disagreement between `dashboard` and Grafana's dashboard and panel models."""
    found: list[Problem] = []
    data = copy.deepcopy(dashboard)
    decoded = _decode(data, found)
    _compare_model(decoded, data, "$", found)
    return found
