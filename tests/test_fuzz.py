"""Fuzzing the front end: whatever the input, only nnspec's own errors escape parse + check."""
from __future__ import annotations

import lark
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.lark import from_lark

from nnspec.check.checker import check_source
from nnspec.errors import NnspecError
from nnspec.syntax.parser import grammar_text, parse

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

TOKENS = ["model", "block", "const", "import", "input", "residual", "shortcut", "parallel", "shared", "then",
          "{", "}", "(", ")", "[", "]", "->", "=", ",", ";", "\n", "*", "+", "-", "/", "//", "%", "#c\n",
          "linear", "relu", "conv2d", "concat", "x", "train", "data", "loss", "optimizer", "epochs", "digits",
          "1", "0", "-1", "1e-3", "1e999", "99999999999999999999", '"s"', '"', "true", "false", " ", "\t"]


def _check(text: str) -> None:
    try:
        result = check_source(text, "fuzz.nn")
    except NnspecError:
        return
    for d in result.diagnostics:       # every diagnostic is located inside the text or an override
        assert d.span.line >= 1 and d.span.column >= 1


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data):
    _check(data.decode("utf-8", errors="replace"))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup(tokens):
    _check(" ".join(tokens))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(from_lark(lark.Lark(grammar_text(), parser="lalr", lexer="contextual"),
                 explicit={"_NL": st.sampled_from(["\n", ";", "\n\n  "])}))
def test_grammar_generated_text(text):
    try:
        parse(text, "gen.nn")
    except NnspecError as err:            # generated text can still break limits (huge numbers)
        assert all(d.code in ("E104", "E103", "E601", "E101", "E100", "E102", "E105") for d in err.diagnostics)
    _check(text)
