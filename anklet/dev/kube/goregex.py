r"""Go `regexp` patterns (RE2 syntax) run on Python's `re`: what a CRD's `pattern` means to kube-apiserver.

kube-apiserver checks `pattern` with Go's `regexp.MatchString`, an unanchored search, and refuses a
CRD whose pattern Go cannot compile. The same text means something else to Python's `re`:

- `$` also matches before a final newline in Python; in Go it matches only at the very end of the
  text (like `\z`), unless the `m` flag is set;
- `\d`, `\w`, `\s`, `\b` are ASCII-only in Go (Unicode in Python), and Go's `\s` has no `\v`;
- `\12` is an octal escape in Go and a backreference in Python; `x{,3}` is a literal in Go and a
  repetition in Python; Go's POSIX classes (`[[:alpha:]]`) and `\Q...\E` do not exist in Python;
- flags may be set mid-group in Go (`a(?i)b`), which Python 3.11 refuses, and `(?i)` folds case
  by Unicode simple case folding (Python's IGNORECASE also matches `i` for `İ`);
- lookarounds, backreferences and possessive quantifiers are not Go syntax at all.

`translate()` parses a pattern the way Go's `regexp/syntax` does (Perl flags, as `regexp.Compile`
uses them) and writes a Python expression with Go's meaning, spelling out the ASCII classes and
Go's case folding rather than using Python's IGNORECASE and ASCII flags; a pattern Go refuses raises
`GoRegexError` with Go's message. Only whether a match exists matters for validation, so groups
become non-capturing and greediness (`U`, `*?`) is kept as written. Not translated: Unicode classes
(`\pL`, `\p{Greek}`), which raise `GoRegexError` saying the emulator cannot check them.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass, field

_MAX_RUNE = 0x10FFFF
_MAX_REPEAT = 1000
_MAX_DEPTH = 1000
# Go's {n}, {n,} and {n,m}: decimal without leading zeros; anything else makes `{` a literal.
_BOUNDS = re.compile(r"\{(0|[1-9][0-9]*)(?:(,)(0|[1-9][0-9]*)?)?\}")

Ranges = list[tuple[int, int]]


def _r(*pairs: str) -> Ranges:
    return [(ord(pair[0]), ord(pair[-1])) for pair in pairs]


# Go's perl_groups.go: all ASCII.
_PERL: dict[str, Ranges] = {
    "d": _r("09"),
    "s": _r("\t\n", "\f\r", " "),
    "w": _r("09", "AZ", "_", "az"),
}
_POSIX: dict[str, Ranges] = {
    "alnum": _r("09", "AZ", "az"),
    "alpha": _r("AZ", "az"),
    "ascii": [(0, 0x7F)],
    "blank": _r("\t", " "),
    "cntrl": [(0, 0x1F), (0x7F, 0x7F)],
    "digit": _r("09"),
    "graph": _r("!~"),
    "lower": _r("az"),
    "print": _r(" ~"),
    "punct": _r("!/", ":@", "[`", "{~"),
    "space": _r("\t\r", " "),
    "upper": _r("AZ"),
    "word": _r("09", "AZ", "_", "az"),
    "xdigit": _r("09", "AF", "af"),
}
# Python's `\B` never matches in an empty text; Go's does (no word character on either side).
_NOT_WORD_BOUNDARY = r"(?a:(?<=\w)(?=\w)|(?<!\w)(?!\w))"
# The code points that case folding involves (Go's minFold and maxFold).
_FOLD_RANGE = range(0x41, 0x1E944)


class GoRegexError(ValueError):
    """A pattern Go's regexp refuses (message as Go prints it), or one the emulator cannot check."""

    def __init__(self, code: str, expr: str) -> None:
        super().__init__(f"error parsing regexp: {code}: `{expr}`")
        self.code = code
        self.expr = expr


def _clean(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _negate(ranges: Ranges) -> Ranges:
    out: Ranges = []
    next_lo = 0
    for lo, hi in _clean(ranges):
        if lo > next_lo:
            out.append((next_lo, lo - 1))
        next_lo = hi + 1
    if next_lo <= _MAX_RUNE:
        out.append((next_lo, _MAX_RUNE))
    return out


@functools.cache
def _orbits() -> tuple[list[int], dict[int, tuple[int, ...]]]:
    """Go's `unicode.SimpleFold` orbits from Python's Unicode data: each folding code point → its orbit.

    Simple case folding (CaseFolding.txt, status C and S) is the full folding where that is one
    character and the lowercase mapping otherwise; U+0130 (İ) has neither, so it folds with nothing,
    as in Go, and unlike in Python's own IGNORECASE (which would match `i`). Built once (~0.1 s),
    only for patterns with `(?i)`.
    """
    keyed: dict[str, list[int]] = {}
    for code in _FOLD_RANGE:
        char = chr(code)
        folded, lower = char.casefold(), char.lower()
        key = folded if len(folded) == 1 else lower if len(lower) == 1 else char
        keyed.setdefault(key, []).append(code)
    orbits = {code: tuple(orbit) for orbit in keyed.values() if len(orbit) > 1 for code in orbit}
    return sorted(orbits), orbits


def _fold(ranges: Ranges) -> Ranges:
    """The ranges plus every code point that folds with one of them (Go's appendFoldedRange)."""
    keys, orbits = _orbits()
    out = list(ranges)
    for lo, hi in ranges:
        for code in keys[bisect.bisect_left(keys, lo) : bisect.bisect_right(keys, hi)]:
            out += [(member, member) for member in orbits[code]]
    return _clean(out)


def _group(ranges: Ranges, negated: bool, fold: bool) -> Ranges:
    """A Perl or POSIX class as ranges; under `(?i)` folded before it is negated, as Go does."""
    folded = _fold(ranges) if fold else ranges
    return _negate(folded) if negated else folded


def _class_char(code: int) -> str:
    char = chr(code)
    if char.isascii() and char.isalnum():
        return char
    if char.isascii() and char.isprintable():
        return "\\" + char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _render_class(ranges: Ranges, negated: bool = False) -> str:
    body = "".join(
        _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}" for lo, hi in _clean(ranges)
    )
    return f"[{'^' if negated else ''}{body}]"


@dataclass
class _Piece:
    """One translated atom: a quantifier applies to the whole piece."""

    text: str
    assertion: bool = False  # Python refuses to repeat a bare anchor
    repeated: bool = False  # Python refuses `a**`-like stacking that Go reaches via `a*(?i)*`
    weight: int = 1  # product of the `{n,m}` counts inside (Go's repeatIsValid)


@dataclass
class _Group:
    start: int  # index of the group's first piece
    flags: frozenset[str]  # flags to restore when it closes


@dataclass
class _Parser:
    src: str
    i: int = 0
    flags: frozenset[str] = frozenset()
    pieces: list[_Piece | None] = field(default_factory=list)  # None: `|`
    groups: list[_Group] = field(default_factory=list)
    atom: int | None = None  # the piece a quantifier would repeat
    last_repeat: str = ""  # the quantifier just read (Go refuses a second one)

    def error(self, code: str, expr: str) -> GoRegexError:
        return GoRegexError(code, expr)

    # The main loop, as Go's parse().

    def run(self) -> str:
        src = self.src
        while self.i < len(src):
            repeat = ""
            char = src[self.i]
            if char == "(":
                self.open_group()
            elif char == "|":
                self.i += 1
                self.pieces.append(None)
                self.atom = None
            elif char == ")":
                self.close_group()
            elif char == "^":
                self.i += 1
                self.push("(?m:^)" if "m" in self.flags else "\\A", assertion=True)
            elif char == "$":
                self.i += 1
                self.push("(?m:$)" if "m" in self.flags else "\\Z", assertion=True)
            elif char == ".":
                self.i += 1
                self.push("(?s:.)" if "s" in self.flags else ".")
            elif char == "[":
                self.push(self.parse_class())
            elif char in "*+?{":
                repeat = self.parse_repeat()
            elif char == "\\":
                self.parse_escape()
            else:
                self.i += 1
                self.literal(ord(char))
            self.last_repeat = repeat
        if self.groups:
            raise self.error("missing closing )", src)
        return self.join(0)

    def push(self, text: str, *, assertion: bool = False) -> None:
        self.pieces.append(_Piece(text, assertion=assertion))
        self.atom = len(self.pieces) - 1

    def literal(self, code: int) -> None:
        if "i" in self.flags and code in _FOLD_RANGE and code in _orbits()[1]:
            self.push(_render_class(_fold([(code, code)])))
        else:
            self.push(re.escape(chr(code)))

    def join(self, start: int) -> str:
        return "".join("|" if piece is None else piece.text for piece in self.pieces[start:])

    # Groups and flags.

    def open_group(self) -> None:
        src, start = self.src, self.i
        if len(self.groups) >= _MAX_DEPTH:
            raise self.error("expression nests too deeply", src)
        if not src.startswith("(?", start):
            self.i += 1
            self.begin_group(self.flags)
            return
        rest = len(src) - start
        name_at = 4 if src.startswith("(?P<", start) and rest > 4 else 0
        name_at = name_at or (3 if src.startswith("(?<", start) and rest > 3 else 0)
        if name_at:
            end = src.find(">", start)
            if end < 0:
                raise self.error("invalid named capture", src[start:])
            name = src[start + name_at : end]
            if not name or not all(c == "_" or (c.isascii() and c.isalnum()) for c in name):
                raise self.error("invalid named capture", src[start : end + 1])
            self.i = end + 1
            self.begin_group(self.flags)
            return
        flags, sign, saw_flag = set(self.flags), 1, False
        self.i = start + 2
        while self.i < len(src):
            char = src[self.i]
            self.i += 1
            if char in "imsU":
                (flags.add if sign > 0 else flags.discard)(char)
                saw_flag = True
            elif char == "-" and sign > 0:
                sign, saw_flag = -1, False
            elif char in ":)" and (sign > 0 or saw_flag):
                if char == ":":
                    self.begin_group(self.flags)
                self.flags = frozenset(flags)
                return
            else:
                break
        raise self.error("invalid or unsupported Perl syntax", src[start : self.i])

    def begin_group(self, restore: frozenset[str]) -> None:
        self.groups.append(_Group(len(self.pieces), restore))
        self.atom = None

    def close_group(self) -> None:
        if not self.groups:
            raise self.error("unexpected )", self.src)
        self.i += 1
        group = self.groups.pop()
        inner = [piece for piece in self.pieces[group.start :] if piece is not None]
        text = f"(?:{self.join(group.start)})"
        del self.pieces[group.start :]
        self.pieces.append(_Piece(text, weight=max((p.weight for p in inner), default=1)))
        self.atom = len(self.pieces) - 1
        self.flags = group.flags

    # Repetition.

    def parse_repeat(self) -> str:
        src, start = self.src, self.i
        low = high = -2
        if src[start] == "{":
            bounds = _parse_bounds(src, start)
            if bounds is None:  # not a repetition: `{` is a literal
                self.i += 1
                self.literal(ord("{"))
                return ""
            low, high, self.i = bounds
            if low < 0 or low > _MAX_REPEAT or high > _MAX_REPEAT or 0 <= high < low:
                raise self.error("invalid repeat count", src[start : self.i])
        else:
            self.i += 1
        if self.i < len(src) and src[self.i] == "?":
            self.i += 1
        if self.last_repeat:
            raise self.error("invalid nested repetition operator", self.last_repeat + src[start : self.i])
        if self.atom is None:
            raise self.error("missing argument to repetition operator", src[start : self.i])
        piece = self.pieces[self.atom]
        assert piece is not None
        weight = piece.weight
        if low != -2:  # {n,m}: Go's repeatIsValid over the nested counts
            count = high if high >= 0 else low
            weight = 1 if count == 0 else weight * count
            if (low >= 2 or high >= 2) and weight > _MAX_REPEAT:
                raise self.error("invalid repeat count", src[start : self.i])
        text = f"(?:{piece.text})" if piece.assertion or piece.repeated else piece.text
        self.pieces[self.atom] = _Piece(text + src[start : self.i], repeated=True, weight=weight)
        return src[start : self.i]

    # Escapes outside classes.

    def parse_escape(self) -> None:
        src, start = self.src, self.i
        kind = src[start + 1] if start + 1 < len(src) else ""
        if kind in ("A", "z", "b", "B"):
            self.i += 2
            text = {"A": "\\A", "z": "\\Z", "b": "(?a:\\b)", "B": _NOT_WORD_BOUNDARY}[kind]
            self.push(text, assertion=True)
        elif kind == "C":
            raise self.error("invalid escape sequence", src[start : start + 2])
        elif kind == "Q":
            end = src.find("\\E", start + 2)
            text = src[start + 2 :] if end < 0 else src[start + 2 : end]
            self.i = len(src) if end < 0 else end + 2
            for char in text:
                self.literal(ord(char))
        elif kind in ("p", "P"):
            raise self.error("Unicode classes are not supported by the API emulator", src[start : start + 2])
        elif kind.lower() in _PERL:
            self.i += 2
            self.push(_render_class(_group(_PERL[kind.lower()], kind.isupper(), "i" in self.flags)))
        else:
            self.literal(self.char_escape())

    def char_escape(self) -> int:
        """Go's parseEscape: one escaped character, at `self.i` (a backslash)."""
        src, start = self.src, self.i
        if start + 1 >= len(src):
            raise self.error("trailing backslash at end of expression", "")
        char = src[start + 1]
        self.i = start + 2
        if char in "1234567" and not (self.i < len(src) and src[self.i] in "01234567"):
            raise self.error("invalid escape sequence", src[start : self.i])  # a backreference
        if char in "01234567":
            value = int(char)
            for _ in range(2):
                if self.i < len(src) and src[self.i] in "01234567":
                    value = value * 8 + int(src[self.i])
                    self.i += 1
            return value
        if char == "x":
            return self.hex_escape(start)
        named = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if char in named:
            return named[char]
        if char.isascii() and not char.isalnum():
            return ord(char)
        raise self.error("invalid escape sequence", src[start : self.i])

    def hex_escape(self, start: int) -> int:
        src = self.src
        if src.startswith("{", self.i):
            end = src.find("}", self.i)
            digits = src[self.i + 1 : end] if end >= 0 else ""
            if end < 0 or not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.error("invalid escape sequence", src[start : (end + 1) if end >= 0 else len(src)])
            self.i = end + 1
            if int(digits, 16) > _MAX_RUNE:
                raise self.error("invalid escape sequence", src[start : self.i])
            return int(digits, 16)
        digits = src[self.i : self.i + 2]
        self.i += len(digits)
        if len(digits) != 2 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise self.error("invalid escape sequence", src[start : self.i])
        return int(digits, 16)

    # Character classes, as Go's parseClass.

    def parse_class(self) -> str:
        src, start = self.src, self.i
        self.i += 1
        negated = src.startswith("^", self.i)
        if negated:
            self.i += 1
        fold = "i" in self.flags
        chars: Ranges = []
        groups: Ranges = []  # [:alpha:], \d, ...: folded (under (?i)) before a negation of their own
        first = True
        while first or self.i >= len(src) or src[self.i] != "]":
            if self.i >= len(src):
                raise self.error("missing closing ]", src[start:])
            first = False
            if src.startswith("[:", self.i) and (end := src.find(":]", self.i + 2)) >= 0:
                name = src[self.i + 2 : end]
                if name.removeprefix("^") not in _POSIX:
                    raise self.error("invalid character class range", src[self.i : end + 2])
                groups += _group(_POSIX[name.removeprefix("^")], name.startswith("^"), fold)
                self.i = end + 2
                continue
            if src.startswith(("\\p", "\\P"), self.i):
                raise self.error(
                    "Unicode classes are not supported by the API emulator", src[self.i : self.i + 2]
                )
            if src[self.i] == "\\" and src[self.i + 1 : self.i + 2].lower() in _PERL:
                kind = src[self.i + 1]
                groups += _group(_PERL[kind.lower()], kind.isupper(), fold)
                self.i += 2
                continue
            range_start = self.i
            low = high = self.class_char(start)
            if src[self.i : self.i + 1] == "-" and src[self.i + 1 : self.i + 2] not in ("", "]"):
                self.i += 1
                high = self.class_char(start)
                if high < low:
                    raise self.error("invalid character class range", src[range_start : self.i])
            chars.append((low, high))
        self.i += 1
        return _render_class((_fold(chars) if fold else chars) + groups, negated)

    def class_char(self, class_start: int) -> int:
        if self.i >= len(self.src):
            raise self.error("missing closing ]", self.src[class_start:])
        if self.src[self.i] == "\\":
            return self.char_escape()
        self.i += 1
        return ord(self.src[self.i - 1])


def _parse_bounds(src: str, start: int) -> tuple[int, int, int] | None:
    """Go's parseRepeat at `{`: (min, max, end), max -1 for `{n,}`; None when the `{` is a literal."""
    match = _BOUNDS.match(src, start)
    if match is None:
        return None
    low = int(match[1])
    high = low if match[2] is None else (-1 if match[3] is None else int(match[3]))
    return low, high, match.end()


def translate(pattern: str) -> str:
    """The Python `re` expression that matches where Go's regexp would; GoRegexError if Go refuses it."""
    return _Parser(pattern).run()


@functools.lru_cache(maxsize=512)
def compile_go(pattern: str) -> re.Pattern[str]:
    """Compiled once per pattern (the emulator checks the same few patterns on every write)."""
    return re.compile(translate(pattern))


def search(pattern: str, text: str) -> bool:
    """Go's `regexp.MustCompile(pattern).MatchString(text)`."""
    return compile_go(pattern).search(text) is not None
