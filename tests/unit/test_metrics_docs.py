"""The README's metrics table says what papertape.core.metrics.definitions says: every metric, the same words, and
the table's columns (infra/clickhouse/004_metrics.sql) are the metrics rows' fields."""
import dataclasses
import re

from builders import ROOT
from papertape.core.metrics.definitions import DEFINITIONS
from papertape.core.metrics.summary import MetricsRow


def readme_metrics_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Metrics\n"):]
    section = section[:min(section.index("\n## ", 1), section.index("\n### "))]  # before its subsections
    return {m[1]: m[2].replace("\\|", "|") for m in re.finditer(r"^\| `(\w+)` \| (.+) \|$", section, re.M)}


def test_the_readme_defines_every_metric_in_the_same_words():
    assert readme_metrics_table() == {name: text for name, (_, text) in DEFINITIONS.items()}


def test_every_metric_is_a_column_of_the_metrics_table_and_a_field_of_its_rows():
    sql = (ROOT / "infra" / "clickhouse" / "004_metrics.sql").read_text()
    columns = re.findall(r"^    (\w+) +[A-Z]\w*\(?", sql, re.M)
    fields = [f.name for f in dataclasses.fields(MetricsRow)]
    assert columns == fields[:4] + ["version"] + fields[4:]
    assert set(DEFINITIONS) <= set(fields)
