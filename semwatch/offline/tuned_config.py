"""The tuned config directory: ``semwatch.yaml`` with the chosen values edited in place, comments kept."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import yaml

from semwatch.config import ConfigError, SemwatchConfig, load_config
from semwatch.engine.detector import DetectorParams


# -- the tuned config ----------------------------------------------------------------------------------
def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    return text.removesuffix("...").strip()


def rewrite_semwatch_yaml(text: str, changes: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """Set ``changes`` (detector/rule name -> {param: value}) in the YAML text, keeping comments
    and layout: values are replaced where they are; missing keys are added after the entry's last
    key, marked ``# tuned``."""
    root = yaml.compose(text)
    edits: list[tuple[int, int, str]] = []
    found = set()
    if root is not None and isinstance(root, yaml.MappingNode):
        for knode, vnode in root.value:
            if knode.value not in ("detectors", "rules") or not isinstance(vnode, yaml.SequenceNode):
                continue
            for item in vnode.value:
                if not isinstance(item, yaml.MappingNode):
                    continue
                keys = {k.value: (k, v) for k, v in item.value}
                name = keys.get("name", (None, None))[1]
                if name is None or name.value not in changes:
                    continue
                found.add(name.value)
                indent = " " * item.value[0][0].start_mark.column
                last_end = max(v.end_mark.index for _, v in item.value)
                line_end = text.find("\n", last_end)
                line_end = len(text) if line_end < 0 else line_end
                for param, value in changes[name.value].items():
                    if param in keys:
                        v = keys[param][1]
                        old = text[v.start_mark.index:v.end_mark.index]
                        new = _yaml_scalar(value)
                        eol = text.find("\n", v.end_mark.index)
                        eol = len(text) if eol < 0 else eol
                        rest = text[v.end_mark.index:eol]
                        if len(new) < len(old) and rest.startswith(" "):
                            new = new.ljust(len(old))  # keep the comment column
                        elif len(new) > len(old) and rest.startswith(" " * (len(new) - len(old) + 1)):
                            rest = rest[len(new) - len(old):]
                        mark = f"[tuned; was {old}]"
                        rest = f"{rest}  {mark}" if "#" in rest else f"{rest.rstrip()}  # {mark}"
                        edits.append((v.start_mark.index, eol, new + rest))
                    else:
                        edits.append((line_end, line_end,
                                      f"\n{indent}{param}: {_yaml_scalar(value)}  # tuned"))
    missing = set(changes) - found
    if missing:
        raise ConfigError(f"semwatch.yaml: no detector or rule named {sorted(missing)} to tune")
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + new + text[end:]
    return header + text


def changed_fields(before: DetectorParams, after: DetectorParams) -> dict[str, Any]:
    a, b = before.model_dump(), after.model_dump()
    return {k: b[k] for k in b if a.get(k) != b[k]}


def write_tuned_config(src: Path, out: Path, chosen: Mapping[str, DetectorParams],
                       header: str = "") -> SemwatchConfig:
    """Copy ``src`` to ``out`` with the chosen parameters in ``semwatch.yaml``; verify by loading it.

    Every field of a chosen detector that differs from what the source file says *now* is
    written, so the tuned file holds exactly what was evaluated even if the source was edited
    during the sweep.
    """
    src, out = Path(src), Path(out)
    if src.resolve() == out.resolve():
        raise ConfigError(f"{out}: the tuned config must not overwrite its source directory")
    current = {p.name: p for p in load_config(src).detector_params}
    missing = sorted(set(chosen) - set(current))
    if missing:
        raise ConfigError(f"{src / 'semwatch.yaml'}: no detector or rule named {missing} any more")
    shutil.copytree(src, out, dirs_exist_ok=True)
    changes = {name: changed_fields(current[name], p) for name, p in chosen.items()}
    changes = {k: v for k, v in changes.items() if v}
    path = out / "semwatch.yaml"
    path.write_text(rewrite_semwatch_yaml((src / "semwatch.yaml").read_text(encoding="utf-8"),
                                          changes, header), encoding="utf-8")
    loaded = load_config(out)
    by_name = {p.name: p for p in loaded.detector_params}
    for name, p in chosen.items():
        if by_name.get(name) != p:
            raise ConfigError(f"{path}: {name} did not load back as tuned "
                              f"(differs in {sorted(changed_fields(p, by_name[name]))})")
    return loaded
