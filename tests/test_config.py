"""The config directory: the repo's own config loads; broken configs fail naming file:line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from semwatch.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_repo_config_loads_and_builds():
    config = load_config(REPO / "config")
    names = [p.name for p in config.detector_params]
    assert len(names) == len(set(names))
    types = {p.type for p in config.detector_params}
    assert {"wrong_entity_action", "wrong_entity_rate", "threshold"} <= types
    assert config.env.tools is not None and "refund_order" in config.env.tools.tools
    engine = config.build_engine()
    assert len(engine.detectors) == sum(1 for p in config.detector_params if p.enabled)
    for p in config.detector_params:
        assert set(config.engine.partition_by) <= set(p.group_by), p.name


def write(tmp_path: Path, semwatch: str, tools: str | None = None) -> Path:
    (tmp_path / "semwatch.yaml").write_text(textwrap.dedent(semwatch).lstrip("\n"))
    if tools is not None:
        (tmp_path / "tools.yaml").write_text(textwrap.dedent(tools).lstrip("\n"))
    return tmp_path


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in {path}")


def fails(directory: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(directory)
    return str(err.value)


VALID_RULE = """
    rules:
      - name: error-rate
        field: error_type
        group_by: [app, model]
        above: 0.2
"""


def test_minimal_valid_config_loads(tmp_path):
    config = load_config(write(tmp_path, VALID_RULE))
    [p] = config.detector_params
    assert (p.type, p.name) == ("threshold", "error-rate")  # rules default to type threshold


def test_unknown_type(tmp_path):
    d = write(tmp_path, """
        detectors:
          - name: mystery
            type: no_such_detector
    """)
    msg = fails(d)
    path = d / "semwatch.yaml"
    assert f"{path}:{line_of(path, 'type: no_such_detector')}:" in msg
    assert "detectors[0] (mystery).type" in msg and "unknown type 'no_such_detector'" in msg
    assert "wrong_entity_action" in msg  # lists the known types


def test_bad_rule_aggregate(tmp_path):
    d = write(tmp_path, """
        rules:
          - name: ok-rule
            field: error_type
            above: 0.2
          - name: latency
            field: latency_s
            aggregate: median
            above: 30
    """)
    msg = fails(d)
    path = d / "semwatch.yaml"
    assert f"{path}:{line_of(path, 'aggregate: median')}: rules[1] (latency).aggregate:" in msg
    assert "'p95'" in msg  # says what is allowed


@pytest.mark.parametrize("body,needle,field,words", [
    ("field: x\n    above: 0.5\n    below: 0.1", "below: 0.1", "below", "exactly one"),
    ("field: x\n    above: 0.5\n    clear: 0.7", "clear: 0.7", "clear", "at or below"),
    ("aggregate: p95\n    above: 30", "rules:", "field", "numeric field"),
    ("field: x\n    above: 20", "above: 20", "above", "between 0 and 1"),
])
def test_bad_rule_fields(tmp_path, body, needle, field, words):
    d = write(tmp_path, "rules:\n  - name: r\n    " + body + "\n")
    msg = fails(d)
    path = d / "semwatch.yaml"
    assert f"rules[0] (r).{field}:" in msg and words in msg
    if needle != "rules:":
        assert f"{path}:{line_of(path, needle)}:" in msg
    else:
        assert f"{path}:{line_of(path, '- name: r')}:" in msg  # a missing field: the entry's line


def test_bad_tools_yaml_field(tmp_path):
    d = write(tmp_path, VALID_RULE, tools="""
        tools:
          get_order:
            side_effect: false
          refund_order:
            side_efect: true
    """)
    msg = fails(d)
    path = d / "tools.yaml"
    assert f"{path}:{line_of(path, 'side_efect')}: tools.refund_order.side_efect:" in msg
    assert "Extra inputs are not permitted" in msg


def test_bad_tools_yaml_type(tmp_path):
    d = write(tmp_path, VALID_RULE, tools="""
        tools:
          refund_order:
            money_moving: maybe
    """)
    msg = fails(d)
    path = d / "tools.yaml"
    assert f"{path}:{line_of(path, 'money_moving')}: tools.refund_order.money_moving:" in msg


def test_group_by_missing_partition_label(tmp_path):
    d = write(tmp_path, """
        engine:
          partition_by: [app]
        rules:
          - name: by-model
            field: error_type
            group_by: [model]
            above: 0.2
    """)
    msg = fails(d)
    path = d / "semwatch.yaml"
    assert f"{path}:{line_of(path, 'group_by: [model]')}: rules[0] (by-model).group_by:" in msg
    assert "partition" in msg and "'app'" in msg


def test_wrong_entity_params_errors_name_field_and_line(tmp_path):
    d = write(tmp_path, """
        detectors:
          - name: we
            type: wrong_entity_action
            auto_resolve_s: -5
    """)
    msg = fails(d)
    path = d / "semwatch.yaml"
    assert f"{path}:{line_of(path, 'auto_resolve_s')}: detectors[0] (we).auto_resolve_s:" in msg


def test_invalid_yaml_names_the_line(tmp_path):
    d = write(tmp_path, "rules:\n  - name: r\n    field: [unclosed\n")
    msg = fails(d)
    assert f"{d / 'semwatch.yaml'}:" in msg and "not valid YAML" in msg


def test_duplicate_names(tmp_path):
    d = write(tmp_path, VALID_RULE + "      - name: error-rate\n        field: x\n        above: 0.1\n")
    assert "unique" in fails(d)


def test_the_shipped_price_table_prices_every_model_the_simulator_uses_as_it_does():
    """A model the table does not know, or knows under a wider glob, is mispriced: a benign swap
    to gpt-4.1-nano priced as gpt-4.1 paged as a 20x cost spike."""
    from semwatch.config import load_config
    from semwatch.simulator.generate import PRICES

    table = load_config(REPO / "config").env.prices
    for model, (inp, out) in PRICES.items():
        price = table.price_for(model)
        assert price is not None and (price.input_per_mtok, price.output_per_mtok) == (inp, out), model
