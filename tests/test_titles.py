import pytest

from preprocessing.fsutil import atomic_dir, atomic_file
from preprocessing.titles import Redirects, normalize_title


@pytest.mark.parametrize(
    "raw, lang, expected",
    [
        ("london_(city)#History", "en", "London (city)"),
        ("  foo__bar \u00a0baz ", "en", "Foo bar baz"),
        ("AT&amp;T", "en", "AT&T"),
        # Only references with ";" are decoded, as in MediaWiki (not "&reg" of "&reggae").
        ("Rock&reggae &copyright Caf&eacute;", "en", "Rock&reggae &copyright Café"),
        ("New%20York", "en", "New York"),
        ("#History", "en", ""),
        (":Berlin", "de", "Berlin"),
        ("istanbul", "tr", "İstanbul"),
        ("istanbul", "en", "Istanbul"),
        ("ßeta", "de", "ßeta"),  # no single upper-case letter: MediaWiki leaves it
        ("東京", "ja", "東京"),
        ("\u200eParis\u200f", "fr", "Paris"),
        ("e\u0301clair", "fr", "\u00c9clair"),  # NFC first, then upper-case
    ],
)
def test_normalize_title(raw, lang, expected):
    assert normalize_title(raw, lang) == expected


def test_fast_path_for_normalized_titles_changes_nothing(monkeypatch):
    """Titles that are already normalized skip the steps; the result must be the same."""
    import re

    from preprocessing import titles

    raws = ["Berlin", "Berlin 1234", "berlin", "Rock 'n' roll", "Der \"Rock\" (Musik), 1950er", "東京都",
            "Обединено кралство", "istanbul", "İstanbul", "ßeta", "ǆungla", "e\u0301clair", "E\u0301clair",
            "Cafe\u0301", "Éclair", "Å", "\u212bngstrom",
            ":Berlin", "Berlin ", " Berlin", "Berlin  Wall", "A_B", "A&amp;B", "A&B", "100%", "50%25",
            "a#b", "x\u200ey", "x\u00a0y", "x\u3000y", "x\ty", "x\u180ey", "C:\\Windows\\", "ǅ", "ﬀ",
            "\U0001d4d0", "1990", "-", "ʻOkina", "Ὀδυσσεύς", "ﬁsh", "a:b", "x\u2028y"]
    langs = ["en", "tr", "az", "de", "bg", None]
    fast = {(raw, lang): normalize_title(raw, lang) for raw in raws for lang in langs}
    monkeypatch.setattr(titles, "_PLAIN", re.compile(r"(?!)"))  # every title takes the full path
    assert fast == {(raw, lang): normalize_title(raw, lang) for raw in raws for lang in langs}


def test_redirects_follow_chains_and_stop_on_cycles(tmp_path):
    path = tmp_path / "redirects.tsv"
    path.write_text("A\tB\nB\tC\nX\tY\nY\tX\nbroken line\n", encoding="utf-8")
    redirects = Redirects.load(path)
    assert len(redirects) == 4
    assert redirects.resolve("A") == "C"
    assert redirects.resolve("C") == "C"
    # A cycle stops at the last title before one repeats.
    assert (redirects.resolve("X"), redirects.resolve("Y")) == ("Y", "X")


def test_atomic_dir_keeps_nothing_on_failure(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole").write_text("x")
    assert (final / "whole").read_text() == "x"
    with atomic_dir(final) as tmp:  # replaces a previous result
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in final.iterdir()) == ["new"]


def test_atomic_file(tmp_path):
    final = tmp_path / "f.json"
    with pytest.raises(KeyError):
        with atomic_file(final) as tmp:
            tmp.write_text("{")
            raise KeyError
    assert list(tmp_path.iterdir()) == []
    with atomic_file(final) as tmp:
        tmp.write_text("{}")
    assert final.read_text() == "{}"
