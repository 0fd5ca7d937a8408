"""Strings a button's pattern accepts, made from the pattern itself: what a press no button of ours
sent may carry (a forged one, or one from an older version), for tests of every handler."""

from __future__ import annotations

import itertools
import re
from re import _constants as C  # the regex parser's own names
from re import _parser as parser

MOST = 12  # repeats are made this long at most: 12 digits are an id no row has
DIGIT, LETTER = "9", "z"


def examples(pattern: re.Pattern[str] | str) -> list[str]:
    """Every alternative, each optional part with and without, each repeat as long as allowed
    (up to MOST): digits 9 (ids nothing has) and letters z (values nobody chose)."""
    source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return sorted(set(_sequence(parser.parse(source))))


def _sequence(items) -> list[str]:
    made = [""]
    for op, av in items:
        made = [head + tail for head, tail in itertools.product(made, _options(op, av))]
    return made


def _options(op, av) -> list[str]:
    if op is C.LITERAL:
        return [chr(av)]
    if op is C.AT:
        return [""]
    if op is C.IN:
        return [_one_of(av)]
    if op is C.SUBPATTERN:
        return _sequence(av[-1])
    if op is C.BRANCH:
        return [s for branch in av[1] for s in _sequence(branch)]
    if op in (C.MAX_REPEAT, C.MIN_REPEAT):
        low, high, inner = av
        counts = {low, min(high, MOST)} if low == 0 else {min(high, max(low, MOST))}
        return [option * n for option in _sequence(inner) for n in sorted(counts)]
    raise NotImplementedError(f"no examples for {op} in a button's pattern")


def _one_of(items) -> str:
    op, av = items[0]
    if op is C.LITERAL:
        return chr(av)
    if op is C.RANGE:
        return chr(av[1])
    if op is C.CATEGORY:
        return DIGIT if av is C.CATEGORY_DIGIT else LETTER
    raise NotImplementedError(f"no example character for {op}")


MISSING_ID = DIGIT * MOST  # what the examples hold where a pattern takes a track's id
