"""Defaults are written once: RunConfig's fields. The key table in docs/run-config.md is generated from
them and pyproject's [tool.flwr.app.config] must agree, key for key and type for type."""

from __future__ import annotations

import pytest

from common.config import RunConfig
from common.config_reference import DOC_PATH, key_table, pyproject_defaults, toml_literal, update


def test_the_readme_key_table_is_the_generated_one():
    text = DOC_PATH.read_text(encoding="utf-8")
    assert update(text) == text, "key table in docs/run-config.md is stale: run python -m common.config_reference --write"
    assert key_table().count("\n| `") == len(RunConfig.model_fields)


def test_pyproject_holds_every_key_with_the_runconfig_default_and_type():
    fields = {f.alias: f for f in RunConfig.model_fields.values()}
    toml = pyproject_defaults()
    assert sorted(toml) == sorted(fields)
    for key, value in toml.items():
        default = fields[key].default
        assert value == default and type(value) is type(default), (key, value, default)


def test_every_key_has_a_meaning():
    assert all(len(f.description or "") > 10 for f in RunConfig.model_fields.values())


@pytest.mark.parametrize(("value", "literal"), [
    (1e-6, "1e-6"), (600.0, "600.0"), (0.2, "0.2"), (5e4, "50000.0"), (False, "false"), (3, "3"), ("x", '"x"'),
    (1e-12, "1e-12"), (2.5e21, "2.5e21"),
])
def test_defaults_print_as_the_toml_literals_a_run_config_takes(value, literal):
    assert toml_literal(value) == literal
