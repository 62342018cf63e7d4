"""Stage 1, syntax: the grammar (nnspec.lark, shipped as package data), the AST with spans
(nodes.py), the parser and its error recovery (parser.py, examples.py) and the formatter (fmt.py)."""
