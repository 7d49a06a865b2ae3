from num2words import num2words

from ctxprune.data.synth import LANGUAGES
from ctxprune.data.templates import TEMPLATES, template_sentences


def test_every_template_exists_in_every_language_with_the_same_slots():
    import string

    for template, patterns in TEMPLATES.items():
        slots = {f for _, f, _, _ in string.Formatter().parse(patterns["en"]) if f}
        for lang in LANGUAGES:
            assert {f for _, f, _, _ in string.Formatter().parse(patterns[lang]) if f} == slots, (
                template,
                lang,
            )


def test_instances_are_distinct_deterministic_and_paired_with_english():
    a = template_sentences("de", 300, seed=1)
    assert a == template_sentences("de", 300, seed=1)
    assert a != template_sentences("de", 300, seed=2)
    assert len({s.key for s in a}) == 300 and len({s.template for s in a}) == len(TEMPLATES)
    chairs = next(s for s in a if s.template == "chairs")
    count = int(chairs.key.split("=")[1])
    assert num2words(count, lang="de") in chairs.text and num2words(count, lang="en") in chairs.english
    assert all("\u00a0" not in s.text for s in a)
