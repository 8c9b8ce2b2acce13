"""Datasets (GSM8K, local files, the hub, reasoning-gym) and the prompt template shared by every stage."""

from pipeline.data.examples import ColumnMap, DataError, Example, example_from_row
from pipeline.data.gsm8k import (
    BUNDLED,
    GSM8KExample,
    GSM8KSplit,
    load_gsm8k,
    parse_solution,
    strip_calculator_annotations,
)
from pipeline.data.sources import DataSplits, grpo_holdout, load_splits, split_stages
from pipeline.data.templates import TEMPLATES, PromptTemplate, get_template, render_prompt

__all__ = [
    "BUNDLED",
    "TEMPLATES",
    "ColumnMap",
    "DataError",
    "DataSplits",
    "Example",
    "GSM8KExample",
    "GSM8KSplit",
    "PromptTemplate",
    "example_from_row",
    "get_template",
    "grpo_holdout",
    "load_gsm8k",
    "load_splits",
    "parse_solution",
    "render_prompt",
    "split_stages",
    "strip_calculator_annotations",
]
