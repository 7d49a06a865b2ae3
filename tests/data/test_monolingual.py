"""Monolingual sentences from Debian's fortunes and the French Debian Reference."""

from ctxprune.data.monolingual import monolingual_sentences, sentences


def test_only_speakable_sentences_of_4_to_25_words_in_the_language_are_kept():
    text = (
        "Der Hund schläft im Garten. Zu kurz. Run sudo apt-get install foo now, bitte und danke. "
        "Er kam am 3. Mai. Das ist eine URL: http://example.org ganz sicher. "
        "This is the English sentence that the reference forgot to translate. " + "Und " * 30 + "Ende."
    )
    assert sentences(text, "de") == ["Der Hund schläft im Garten."]
    assert sentences("Das ist gut, sagte er leise.", "it") == []  # no Italian function word
    assert sentences("La casa es blanca y grande.", "es") == ["La casa es blanca y grande."]


def test_debian_ships_thousands_of_sentences_for_german_spanish_italian_and_french():
    for language, minimum in (("de", 10000), ("es", 5000), ("it", 5000), ("fr", 300)):
        found = monolingual_sentences(language)
        assert len(found) >= minimum, language
        assert all(source.startswith("mono:") for _, source in found)
        assert len({s.casefold() for s, _ in found}) == len(found)  # deduplicated
    assert monolingual_sentences("de")[:3] == monolingual_sentences("de")[:3]  # a stable order
