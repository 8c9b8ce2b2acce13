"""GSM8K data and the prompt template shared by every stage."""

from pipeline.data.gsm8k import (
    BUNDLED,
    DataError,
    GSM8KExample,
    GSM8KSplit,
    load_gsm8k,
    parse_solution,
    split_train,
    strip_calculator_annotations,
)
from pipeline.data.templates import TEMPLATES, PromptTemplate, get_template, render_prompt

__all__ = [
    "BUNDLED",
    "TEMPLATES",
    "DataError",
    "GSM8KExample",
    "GSM8KSplit",
    "PromptTemplate",
    "get_template",
    "load_gsm8k",
    "parse_solution",
    "render_prompt",
    "split_train",
    "strip_calculator_annotations",
]
