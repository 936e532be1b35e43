"""Loading the config directory: detectors, rules, tool/entity map and model prices.

Files (all YAML, in one directory, ``config/`` by default):

- ``semwatch.yaml``: ``engine:`` options, ``detectors:`` and ``rules:`` lists, ``runbook_base_url``.
- ``tools.yaml``: which tool calls have side effects and which arguments name entities.
- ``prices.yaml``: model prices per million tokens, for events that carry no ``cost_usd``.

A bad file fails at start-up with the file, the line and the field::

    config/semwatch.yaml:14: detectors[1] (refusal-spike).min_volume: Input should be greater than 0
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from semwatch.engine.core import Engine, EngineOptions
from semwatch.engine.detector import REGISTRY, Detector, DetectorEnv, DetectorParams
from semwatch.engine.tools import ToolMap
from semwatch.enrich import Enrichment
from semwatch.enrich.prices import PriceTable, Pricing
from semwatch.enrich.refusal import RefusalVerdict

#: Packages whose modules register detector and rule types (``@register``). They are imported by
#: name, as plugins: the core never imports a detector module itself.
DETECTOR_PACKAGES = ("detectors", "rules")


class ConfigError(ValueError):
    """A configuration problem, with file, line and field in the message."""


# -- YAML with line numbers ---------------------------------------------------------------------
def _load_yaml_with_lines(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML and remember the line of every mapping key / sequence item by its path."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[tuple, int] = {}

    def walk(n, loc: tuple) -> None:
        lines[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                lines[loc + (k.value,)] = k.start_mark.line + 1
                walk(v, loc + (k.value,))
                lines[loc + (k.value,)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, loc + (i,))

    if node is not None:
        walk(node, ())
    return data, lines


def _line_for(lines: dict[tuple, int], loc: tuple) -> Optional[int]:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _raise_validation(path: Path, lines: dict, base: tuple, label: str, exc: ValidationError):
    msgs = []
    for e in exc.errors():
        loc = base + tuple(e["loc"])
        line = _line_for(lines, loc)
        field = ".".join(str(p) for p in e["loc"]) or "(entry)"
        msgs.append(f"{path}:{line or '?'}: {label}{'.' if label else ''}{field}: {e['msg']}")
    raise ConfigError("\n".join(msgs))


# -- the whole directory ------------------------------------------------------------------------
ENGINE_OPTION_FIELDS = frozenset(f.name for f in fields(EngineOptions))


class EngineSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_lateness_s: float = Field(default=30.0, ge=0)
    tick_s: float = Field(default=5.0, gt=0)
    sweep_s: float = Field(default=600.0, gt=0)
    change_lookback_s: float = Field(default=6 * 3600.0, gt=0)
    # Triggers of related scope this close in time are one problem (one page); 0 = never grouped.
    correlation_window_s: float = Field(default=900.0, ge=0)
    # A resolve is held this long; a re-trigger of the same incident meanwhile cancels it (no
    # flapping: one page at most). 0 = resolves go out at once.
    resolve_cooldown_s: float = Field(default=600.0, ge=0)
    # Isolation (semwatch/engine/core.py): an app not heard from while the partition's time went on
    # this long is quiet (its time goes on with the partition's); an app this far ahead of it is
    # not believed; ids remembered this long per app;
    # an app is on probation (evicted first, evicts no learnt state) until it has sent this many
    # events; one app holds at most this many segments per detector; new problems per detector
    # per hour beyond the budget are counted and summarised, not paged (0 = no budget).
    idle_app_s: float = Field(default=600.0, gt=0)
    max_clock_lead_s: float = Field(default=6 * 3600.0, gt=0)
    dedup_window_s: float = Field(default=300.0, ge=0)
    established_events: int = Field(default=200, ge=0)
    max_segments_per_app: int = Field(default=5000, ge=1)
    max_new_problems_per_hour: int = Field(default=20, ge=0)
    # Which labels partition the stream: every detector's state must live inside one partition,
    # so each detector's group_by must include these (checked below).
    partition_by: tuple[str, ...] = ("app",)
    classify_refusals: bool = True


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineSection = EngineSection()
    runbook_base_url: Optional[str] = None
    detectors: list[dict[str, Any]] = Field(default_factory=list)
    rules: list[dict[str, Any]] = Field(default_factory=list)


@dataclass
class SemwatchConfig:
    directory: Path
    engine: EngineSection
    detector_params: list[DetectorParams]
    env: DetectorEnv

    def build_detectors(self) -> list[Detector]:
        return [REGISTRY[p.type](p, self.env) for p in self.detector_params]

    def build_engine(self, data=None) -> Engine:
        # The config's engine section names EngineOptions' fields; the rest (partition_by,
        # classify_refusals) is read where it is used.
        opts = EngineOptions(**self.engine.model_dump(include=ENGINE_OPTION_FIELDS))
        return Engine(self.build_detectors(), opts, data=data, enrich=self.build_enrichment())

    def build_enrichment(self) -> Enrichment:
        """The enrichment steps this config asks for: refusal verdicts, then prices."""
        steps: list = []
        if self.engine.classify_refusals:
            steps.append(RefusalVerdict())
        if self.env.prices is not None:
            steps.append(Pricing(self.env.prices))
        return Enrichment(steps)

    def with_params(self, params: list[DetectorParams]) -> "SemwatchConfig":
        return SemwatchConfig(self.directory, self.engine, params, self.env)


def import_all_detectors(packages: tuple[str, ...] = DETECTOR_PACKAGES) -> None:
    """Import every module of the detector packages so that their ``@register`` runs."""
    for pkg_name in packages:
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg_name}.{mod.name}")


def load_config(directory: str | Path) -> SemwatchConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: config directory does not exist")
    import_all_detectors()
    main_path = directory / "semwatch.yaml"
    data, lines = _load_yaml_with_lines(main_path)
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{main_path}:1: expected a mapping with engine/detectors/rules")
    for section in ("detectors", "rules"):
        if section in data and data[section] is None:  # a section with only comments
            data[section] = []
    try:
        cfg = ConfigFile.model_validate(data)
    except ValidationError as exc:
        _raise_validation(main_path, lines, (), "", exc)

    params: list[DetectorParams] = []
    for section, default_type in (("detectors", None), ("rules", "threshold")):
        for i, raw in enumerate(getattr(cfg, section)):
            raw = dict(raw)
            if default_type and "type" not in raw:
                raw["type"] = default_type
            label = f"{section}[{i}]" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")
            type_name = raw.get("type")
            if type_name not in REGISTRY:
                line = _line_for(lines, (section, i, "type")) or _line_for(lines, (section, i))
                known = ", ".join(sorted(REGISTRY))
                raise ConfigError(f"{main_path}:{line}: {label}.type: unknown type {type_name!r} "
                                  f"(known: {known})")
            cls = REGISTRY[type_name]
            try:
                p = cls.Params.model_validate(raw)
            except ValidationError as exc:
                _raise_validation(main_path, lines, (section, i), label, exc)
            missing = [f for f in cfg.engine.partition_by if f not in p.group_by]
            if missing:
                line = _line_for(lines, (section, i, "group_by")) or _line_for(lines, (section, i))
                raise ConfigError(
                    f"{main_path}:{line}: {label}.group_by: must include the partition labels "
                    f"{list(cfg.engine.partition_by)} (missing {missing}), because each segment's "
                    "state lives in one partition")
            params.append(p)
    names = [p.name for p in params]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{main_path}: detector and rule names must be unique; repeated: {dupes}")

    env = DetectorEnv(runbook_base_url=cfg.runbook_base_url)
    prices_path = directory / "prices.yaml"
    if prices_path.exists():
        pdata, plines = _load_yaml_with_lines(prices_path)
        try:
            env.prices = PriceTable.model_validate(pdata or {})
        except ValidationError as exc:
            _raise_validation(prices_path, plines, (), "", exc)
    tools_path = directory / "tools.yaml"
    if tools_path.exists():
        tdata, tlines = _load_yaml_with_lines(tools_path)
        try:
            env.tools = ToolMap.model_validate(tdata or {})
        except ValidationError as exc:
            _raise_validation(tools_path, tlines, (), "", exc)
    else:
        env.tools = ToolMap()
    return SemwatchConfig(directory, cfg.engine, params, env)
