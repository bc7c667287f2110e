"""The configuration table in docs/ is the one the settings models make, and every variable is cleared between tests."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.core.settings import MODELS, settings_table, variables
from tests.conftest import _CLEARED

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_the_documented_table_is_the_one_the_models_make():
    text = DOC.read_text(encoding="utf-8")
    documented = re.search(r"<!-- settings-table:start -->\n(.*)<!-- settings-table:end -->", text, re.S)
    assert documented is not None, "docs/configuration.md lost its settings-table markers"
    assert documented.group(1) == settings_table(), "the settings changed: run `make docs` and commit docs/configuration.md"


def test_every_field_reads_a_variable_that_tests_clear():
    assert sum(len(model.model_fields) for model in MODELS) <= len(variables())
    for name in variables():
        assert name == "XDG_DATA_HOME" or name in _CLEARED, name
