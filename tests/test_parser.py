"""The grammar and parser: structure, spans, comments, limits and friendly syntax errors."""
from __future__ import annotations

import json

import lark
import pytest

from nnspec.syntax import nodes as n
from nnspec.errors import NnspecError
from nnspec.limits import LIMITS
from nnspec.syntax.parser import _grammar_dir, _tables_key, grammar_text, parse


def errors_of(text: str):
    with pytest.raises(NnspecError) as info:
        parse(text, "t.nn")
    return info.value.diagnostics


def test_grammar_is_lalr_without_conflicts():
    pytest.importorskip("interegular")
    lark.Lark(grammar_text(), parser="lalr", lexer="contextual", strict=True)


def test_shipped_tables_match_the_grammar():
    tables = json.loads((_grammar_dir() / "nnspec.tables.json").read_text())
    assert tables["key"] == _tables_key(grammar_text()), "run `python -m nnspec.syntax.parser --write-tables`"


def test_statements_spans_and_continuations():
    m = parse('const w = 2 * (3 + 1)  # width\nmodel x {\n    input [3, 8, 8]\n    conv2d(w, 3)\n'
              '        -> relu; flatten\n}\n', "t.nn")
    const, model = m.items
    assert isinstance(const, n.Const) and isinstance(const.value, n.BinOp)
    assert (const.span.line, const.span.column) == (1, 1)
    body = model.body
    assert isinstance(body[0], n.InputDecl)
    assert isinstance(body[1], n.Chain) and [x.name for x in body[1].nodes] == ["conv2d", "relu"]
    assert body[1].span.line == 4 and body[1].span.end_line == 5
    assert isinstance(body[2], n.Chain) and body[2].nodes[0].name == "flatten"
    assert m.comments == ((23, "# width"),)


def test_settings_forms():
    m = parse("train { epochs 3; early_stop(monitor = val_loss) }\nschedule warmup(steps = 5)\n"
              "    then cosine()\noptimizer sgd(lr = 0.1) { group bias, \"head.*\" { weight_decay 0 } }\n", "t.nn")
    train, schedule, optimizer = m.items
    assert [s.name for s in train.body] == ["epochs", "early_stop"]
    assert train.body[1].args[0].name == "monitor"
    assert isinstance(schedule.values[0], n.Then) and len(schedule.values[0].items) == 2
    group = optimizer.body[0]
    assert group.name == "group" and isinstance(group.values[1], n.String) and group.body[0].name == "weight_decay"


def test_graph_constructs():
    m = parse("block b(c, s = 1) {\n residual { relu } shortcut { relu }\n parallel concat(dim = 0) { relu; tanh }\n"
              " shared p = linear(4)\n x = p -> p\n x -> b(1) * 3\n}", "t.nn")
    body = m.items[0].body
    assert isinstance(body[0].nodes[0], n.Residual) and body[0].nodes[0].shortcut is not None
    assert isinstance(body[1].nodes[0], n.Parallel) and len(body[1].nodes[0].branches) == 2
    assert isinstance(body[2], n.Shared) and isinstance(body[3], n.Bind)
    assert isinstance(body[4].nodes[1], n.Repeat)


@pytest.mark.parametrize("text,code,line,col,fragment", [
    ("model m {\n  linear(2) relu\n}", "E100", 2, 13, "two layers on one line"),
    ("const a =\n", "E100", 2, 1, "missing value"),
    ('data csv(path = "x) {}', "E102", 1, 17, "unterminated string"),
    ("model m { relu $ }", "E101", 1, 16, "unexpected character"),
    ("model m {\n  relu\n  linear(2\n", "E105", 3, 9, "`(` opened here is never closed"),
    ("const x = 1e999", "E104", 1, 11, "out-of-range"),
    ('const s = "\\q"', "E103", 1, 11, "unknown escape"),
])
def test_syntax_errors_are_located_and_friendly(text, code, line, col, fragment):
    (d,) = errors_of(text)
    assert (d.code, d.span.line, d.span.column) == (code, line, col)
    assert fragment in d.message


def test_deep_nesting_is_a_located_error_not_a_crash():
    text = "const x = " + "[" * 10_000 + "]" * 10_000
    (d,) = errors_of(text)
    assert d.code == "E601"
    text = "const x = " + " + ".join(["1"] * 5000)
    (d,) = errors_of(text)
    assert d.code == "E601"


def test_size_and_binary_limits():
    (d,) = errors_of("#" * (LIMITS.max_file_bytes + 1))
    assert d.code == "E600"
    (d,) = errors_of("model m {\x00}")
    assert d.code == "E101" and d.span.column == 10


def test_many_blank_lines_before_a_continuation_are_linear():
    text = "model m {\n relu" + "\n" * 200_000 + " -> relu\n}"
    assert len(parse(text, "t.nn").items[0].body[0].nodes) == 2


@pytest.mark.parametrize("text", ["loss f(1\n)", "const a = [1\n]", "const a = (1\n+ 2)", 'loss f("x"\n, 2)',
                                  "model m {\n input [3,\n 4]\n (relu\n) -> (residual {\n relu\n relu\n})\n}"])
def test_newlines_inside_brackets_are_whitespace(text):
    parse(text, "t.nn")


def test_each_broken_top_level_item_reports_its_first_syntax_error():
    text = ('model m {\n    input [4]\n    linear(3) -> relu ->\n}\n'
            'data digits { split(train = 0.8, val = 0.1, test = 0.1); batch 32 }   # a { in a comment\n'
            'loss cross_entropy(label = "{")\n'
            'optimizer adam(lr = = 1e-3)\n'
            'train { epochs 2 2 }\n')
    diags = errors_of(text)
    assert [(d.code, d.span.line) for d in diags] == [("E100", 4), ("E100", 7), ("E100", 8)]
    assert "missing value" in diags[1].message


def test_no_restart_after_an_unclosed_bracket_or_inside_an_unindented_body():
    unclosed = 'model m {\n    input [4]\n    linear(3 -> relu\n}\noptimizer adam(lr = = 1)\n'
    assert len(errors_of(unclosed)) == 1
    unindented = 'model m {\ninput [4]\nlinear(3) ->\n}\nloss cross_entropy\n'
    assert [d.span.line for d in errors_of(unindented)] == [4]


@pytest.mark.parametrize("text,line,col,bracket", [
    ("const a = (1 + 2\nconst b = 3\n", 1, 11, "("),
    ("const a = [1, 2\n\nmodel m {\n  input [4]\n}\n", 1, 11, "["),
    ("model m {\n  input [4]\n  linear(2)\n\nloss cross_entropy\n", 1, 9, "{"),
    ("model m {\n  relu\n", 1, 9, "{"),
    ("model m {\n    input [4]\n    linear(3 -> relu\n}\n", 3, 11, "("),
    ("loss f(1, [2, 3)\n", 1, 11, "["),
])
def test_an_unclosed_bracket_is_reported_where_it_was_opened(text, line, col, bracket):
    diags = errors_of(text)
    assert (diags[0].code, diags[0].span.line, diags[0].span.column) == ("E105", line, col)
    assert diags[0].message == f"`{bracket}` opened here is never closed"
    assert diags[0].hint and {"(": ")", "[": "]", "{": "}"}[bracket] in diags[0].hint


def test_a_closed_bracket_with_a_mistake_inside_is_not_called_unclosed():
    (d,) = errors_of("loss f(1\n = 2)\n")
    assert d.code == "E100" and d.span.line == 2
    (d,) = errors_of("model m {\ninput [4]\n-> relu\n}\n")
    assert d.code == "E100" and (d.span.line, d.span.column) == (3, 1)


def test_a_byte_order_mark_is_ignored_and_columns_stay_right():
    module = parse("\ufeffconst a = 1\n", "t.nn")
    (const,) = module.items
    assert (const.name_span.line, const.name_span.column) == (1, 7)
    (d,) = errors_of("\ufeffmodel m { relu $ }")
    assert (d.code, d.span.line, d.span.column) == ("E101", 1, 16)
