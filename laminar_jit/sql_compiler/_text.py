"""SQL text to sqlglot trees: the Flink syntax sqlglot does not read, blanked out in place.

Flink writes window table functions as ``TABLE(TUMBLE(TABLE bids,
DESCRIPTOR(ts), INTERVAL '10' SECOND))`` and declares event time in ``CREATE
TABLE`` as ``WATERMARK FOR ts AS ts - INTERVAL '5' SECOND``. sqlglot's
parser reads neither, so the inner ``TABLE`` and ``DESCRIPTOR`` keywords and
each ``WATERMARK`` clause are replaced by spaces before parsing (every other
character keeps its line and column, so errors point into the user's text),
and the watermarks are returned apart.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp, tokens
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from ..errors import SqlError

__all__ = ["SESSION_FUNCTION", "SUPPORTED_WINDOWS", "WINDOW_FUNCTIONS", "interval_ms", "parse"]

#: Flink's window table functions.
WINDOW_FUNCTIONS = ("TUMBLE", "HOP", "CUMULATE", "SESSION")
#: Those planned so far.
SUPPORTED_WINDOWS = ("TUMBLE", "HOP", "CUMULATE", "SESSION")
#: What ``SESSION`` reads as once blanked (sqlglot takes ``SESSION`` for a keyword).
SESSION_FUNCTION = "LJ_SESS"



class LaminarSql(Dialect):
    """sqlglot's default dialect, with Flink's back-quoted identifiers (`` `dateTime` ``) as well as ``"x"``."""

    class Tokenizer(tokens.Tokenizer):
        IDENTIFIERS = ['"', "`"]


_UNIT_MS = {"MILLISECOND": 1, "SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}


def parse(text: str) -> tuple[list[exp.Expression], dict[str, tuple[str, int]], list[list[str]]]:
    """The statements of ``text``; per ``CREATE TABLE`` with a watermark: ``(column, delay in ms)``; and the
    ``PARTITION BY`` columns of each ``SESSION`` call, in the order they appear."""
    try:
        tokens = LaminarSql.Tokenizer().tokenize(text)
    except TokenError as e:
        raise SqlError(f"cannot read the SQL: {e}", construct="text") from None
    chars = list(text)
    watermarks: dict[str, tuple[str, int]] = {}
    sessions: list[list[str]] = []
    table = None
    for i, tok in enumerate(tokens):
        word = tok.text.upper()
        if tok.token_type == TokenType.CREATE and i + 2 < len(tokens) and tokens[i + 1].token_type == TokenType.TABLE:
            table = tokens[i + 2].text
        elif word in WINDOW_FUNCTIONS and _at(tokens, i + 1, TokenType.L_PAREN) and _at(tokens, i + 2, TokenType.TABLE):
            if word not in SUPPORTED_WINDOWS:
                raise SqlError(f"SQL: the {word} window table function is not supported yet (TUMBLE and HOP are)",
                               line=tok.line, column=tok.col, construct=word)
            _blank(chars, tokens[i + 2])
            if word == "SESSION":  # a keyword to sqlglot: renamed, in as many characters, to a function name
                chars[tok.start: tok.end + 1] = SESSION_FUNCTION
                sessions.append(_session_keys(chars, tokens, i + 3))
        elif word == "SESSION" and _at(tokens, i + 1, TokenType.L_PAREN):  # GROUP BY SESSION(ts, gap)
            chars[tok.start: tok.end + 1] = SESSION_FUNCTION
        elif word == "DESCRIPTOR" and _at(tokens, i + 1, TokenType.L_PAREN):
            _blank(chars, tok)
        elif word == "WATERMARK" and table is not None:
            watermarks[table] = _watermark(text, chars, tokens, i)
    try:
        statements = [s for s in sqlglot.parse("".join(chars), read=LaminarSql) if s is not None]
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        raise SqlError(f"cannot parse the SQL: {err.get('description', e)}", line=err.get("line"),
                       column=err.get("col"), construct=(err.get("highlight") or "").strip() or None) from None
    if not statements:
        raise SqlError("the SQL text holds no statement", construct="text")
    return statements, watermarks, sessions


def _session_keys(chars: list[str], tokens, i: int) -> list[str]:
    """Blank ``PARTITION BY k`` or ``PARTITION BY (k1, k2)`` after ``SESSION(TABLE t``; the key columns."""
    if not (i + 2 < len(tokens) and tokens[i + 1].token_type == TokenType.PARTITION_BY):
        return []
    j = i + 2
    if _at(tokens, j, TokenType.L_PAREN):
        end = j
        while end < len(tokens) and tokens[end].token_type != TokenType.R_PAREN:
            end += 1
        keys = [t.text for t in tokens[j + 1:end] if t.token_type != TokenType.COMMA]
    else:
        end, keys = j, [tokens[j].text]
    _blank(chars, *tokens[i + 1:end + 1])
    return keys


def _at(tokens, i: int, kind) -> bool:
    return i < len(tokens) and tokens[i].token_type == kind


def _blank(chars: list[str], *toks) -> None:
    for tok in toks:
        for p in range(tok.start, tok.end + 1):
            chars[p] = " "


def _watermark(text: str, chars: list[str], tokens, i: int) -> tuple[str, int]:
    """Blank ``[,] WATERMARK FOR col AS expr`` (up to the ``,`` or ``)`` that ends it); ``(col, delay ms)``."""
    wm = tokens[i]
    if not (_at(tokens, i + 1, TokenType.FOR) and _at(tokens, i + 3, TokenType.ALIAS)):
        raise SqlError("a watermark is declared as WATERMARK FOR <column> AS <column> - INTERVAL '<n>' <unit>",
                       line=wm.line, column=wm.col, construct="WATERMARK")
    column = tokens[i + 2].text
    depth, j = 0, i + 4
    while j < len(tokens):
        kind = tokens[j].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            if depth == 0:
                break
            depth -= 1
        elif kind == TokenType.COMMA and depth == 0:
            break
        j += 1
    body = text[tokens[i + 4].start: tokens[j - 1].end + 1]
    first = i - 1 if _at(tokens, i - 1, TokenType.COMMA) else i
    _blank(chars, *tokens[first:j])
    try:
        expr = sqlglot.parse_one(body, read=LaminarSql)
    except ParseError:
        expr = None
    if isinstance(expr, exp.Column) and expr.name == column:
        return column, 0
    if isinstance(expr, exp.Sub) and isinstance(expr.this, exp.Column) and expr.this.name == column:
        return column, interval_ms(expr.expression)
    raise SqlError(f"WATERMARK FOR {column}: expected {column} - INTERVAL '<n>' <unit>, got {body!r}",
                   line=wm.line, column=wm.col, construct="WATERMARK")


def interval_ms(node: exp.Expression) -> int:
    """Milliseconds of ``INTERVAL '10' SECOND`` (or ``'10 SECONDS'``, ``MINUTE``, ``HOUR``, ``DAY``, ...)."""
    if isinstance(node, exp.Interval):
        value = node.this.name if node.this is not None else ""
        unit = node.args.get("unit")
        unit = unit.name if unit is not None else ""
        if not unit and " " in value.strip():
            value, unit = value.split(None, 1)
        unit = unit.upper().rstrip("S") if unit.upper() != "MS" else "MILLISECOND"
        if unit in _UNIT_MS:
            try:
                return round(float(value) * _UNIT_MS[unit])
            except ValueError:
                pass
    raise SqlError(f"expected an interval such as INTERVAL '10' SECOND, got {node.sql()}",
                   construct=node.sql())
