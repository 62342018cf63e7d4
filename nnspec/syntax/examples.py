"""Friendly messages for common syntax mistakes (Lark's `match_examples`).

Each message maps to snippets that fail the same way; a parse error whose parser state and
token match one of them gets that message instead of "unexpected token".
"""

SYNTAX_EXAMPLES: dict[str, list[str]] = {
    "two layers on one line: join them with `->` or put each on its own line": [
        "model m { relu relu }",
        "model m { linear(3) relu }",
        "block b { linear(3) linear(4) }",
    ],
    "missing value after `=`": [
        "const a =",
        "const a = \n",
        "model m { linear(3, bias = ) }",
        "block b(x = ) { relu }",
    ],
    "missing `=` in a const: write `const name = value`": [
        "const a 1",
    ],
    "a block or model needs a body in braces: `block name(params) { ... }`": [
        "block b\n",
        "model m\n",
        "block b(x)\n",
    ],
    "unclosed `(`": [
        "model m { linear(3 }",
        "loss mse(reduction = mean",
    ],
    "unclosed `[`": [
        "model m { input [3, 4 }",
    ],
    "a keyword argument needs a name before `=`: `name = value`": [
        "model m { linear(3, 4 = 5) }",
    ],
    "arguments go in parentheses right after the name: `linear(64)`": [
        "model m { linear 64 }",
    ],
    "`->` must be followed by a layer": [
        "model m { relu -> }",
        "model m { relu -> \n}",
    ],
    "a line cannot start with `->` here: put it at the end of the previous line": [
        "model m { -> relu }",
    ],
}
