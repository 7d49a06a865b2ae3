import struct

import pytest

from ctxprune.data.gettext_pairs import is_natural_sentence, read_pairs


@pytest.mark.parametrize(
    "text",
    [
        "Could not open %s for writing",
        "Deleted {0} files from the disk",
        "Click <b>here</b> to continue now",
        "_Open the selected file now",
        "Save the file to /usr/share/foo please",
        "See https://example.org for more details",
        "Use --force to override the check",
        "too short",
        "PRINT ALL THE LOGS NOW",
        "value of my_variable is not set",
    ],
)
def test_rejects_what_nobody_would_say(text):
    assert not is_natural_sentence(text)


@pytest.mark.parametrize("text", ["The file could not be opened.", "Choose a new password for this account"])
def test_keeps_natural_sentences(text):
    assert is_natural_sentence(text)


def _write_mo(path, messages: dict[str, str]):
    """A GNU .mo file (the format `msgfmt` writes): header, two offset tables, then the strings."""
    items = sorted(messages.items())
    ids = b"".join(k.encode() + b"\0" for k, _ in items)
    strs = b"".join(v.encode() + b"\0" for _, v in items)
    n = len(items)
    key_start = 7 * 4 + 16 * n
    value_start = key_start + len(ids)
    koffsets, voffsets, ko, vo = [], [], 0, 0
    for k, v in items:
        koffsets += [len(k.encode()), key_start + ko]
        voffsets += [len(v.encode()), value_start + vo]
        ko += len(k.encode()) + 1
        vo += len(v.encode()) + 1
    header = struct.pack("<7I", 0x950412DE, 0, n, 7 * 4, 7 * 4 + 8 * n, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + struct.pack(f"<{4 * n}I", *koffsets, *voffsets) + ids + strs)


def test_reads_pairs_from_catalogs_and_deduplicates(tmp_path):
    header = "Content-Type: text/plain; charset=UTF-8\n"
    _write_mo(
        tmp_path / "de/LC_MESSAGES/a.mo",
        {
            "": header,
            "The file could not be opened.": "Die Datei konnte nicht geöffnet werden.",
            "Could not open %s": "Konnte %s nicht öffnen",
            "Untranslated sentence stays the same": "Untranslated sentence stays the same",
        },
    )
    _write_mo(
        tmp_path / "de/LC_MESSAGES/b.mo",
        {"": header, "The file could not be opened.": "Datei nicht lesbar, sagt man hier."},
    )
    (tmp_path / "de/LC_MESSAGES/broken.mo").write_bytes(b"not a catalog")
    pairs = read_pairs("de", tmp_path)
    assert [(p.english, p.text, p.source) for p in pairs] == [
        ("The file could not be opened.", "Die Datei konnte nicht geöffnet werden.", "a.mo")
    ]


def test_installed_catalogs_give_thousands_of_pairs():
    pairs = read_pairs("de")
    assert len(pairs) > 5000
    assert len({p.english.casefold() for p in pairs}) == len(pairs)
