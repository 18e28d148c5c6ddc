"""JSON from anywhere mednf does not control (a server's answer, a manifest on disk), parsed into plain values or
refused with one line: :func:`loads` (and :func:`parse`, whose :class:`JSONProblem` a caller words itself).

Refused, besides malformed JSON and text that is not UTF-8: nesting deeper than :data:`MAX_DEPTH` (the
standard parser recurses and would raise RecursionError at some depth that depends on the caller's stack),
and integers longer than :data:`MAX_INT_DIGITS` digits (Python refuses > 4300 digits with a ValueError, and
converting a long one costs quadratic time below that). No MedNF manifest, Zenodo record or Hub answer comes
near either limit. The size of the text is the caller's to bound (:mod:`mednf.io.http` reads at most a limit).
"""

from __future__ import annotations

import json
from typing import Any

from mednf.errors import FormatError, MednfError

MAX_DEPTH = 64
MAX_INT_DIGITS = 64


class JSONProblem(ValueError):
    """Why a text is not JSON mednf reads: ``detail`` (one short line); ``syntax`` when it is not JSON at all."""

    def __init__(self, detail: str, *, syntax: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.syntax = syntax


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JSONProblem(f"an integer of {digits} digits; mednf reads at most {MAX_INT_DIGITS}")
    return int(text)


def _check_depth(value: Any) -> None:
    """JSONProblem if ``value`` nests lists/objects deeper than :data:`MAX_DEPTH` (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JSONProblem(f"nested deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def parse(data: bytes | bytearray | str) -> Any:
    """The JSON value of ``data`` (UTF-8 when bytes); JSONProblem when it is not JSON mednf reads."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONProblem(f"not UTF-8 text (byte {err.start})", syntax=True) from None
    try:
        value = json.loads(data, parse_int=_integer)
    except RecursionError:
        raise JSONProblem(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as err:  # its message names the place, never the text
        raise JSONProblem(f"{err.msg} at line {err.lineno} column {err.colno}", syntax=True) from None
    except JSONProblem:
        raise
    except ValueError as err:  # e.g. a float Python cannot convert; the text is not repeated
        raise JSONProblem(f"a value Python cannot read ({type(err).__name__})") from None
    if isinstance(value, (dict, list)):
        _check_depth(value)
    return value


def loads(data: bytes | bytearray | str, where: str, fix: str, error: type[MednfError] = FormatError) -> Any:
    """The JSON value of ``data``; else one line ``"<where> is not valid JSON (<why>); <fix>"`` as ``error``."""
    try:
        return parse(data)
    except JSONProblem as problem:
        raise error(f"{where} is not valid JSON ({problem.detail}); {fix}") from None
