"""Template sentences with numbers, dates, times, money and units, rendered per language with
num2words (numbers and years as words), Babel/CLDR (dates, times, currency, units) and Faker
(names and cities), each with its English counterpart rendered from the same values."""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from functools import cache

from babel.dates import format_date, format_time
from babel.numbers import format_currency
from babel.units import format_unit
from faker import Faker
from num2words import num2words

# English, then each language; `{slot}` names are shared across languages.
TEMPLATES: dict[str, dict[str, str]] = {
    "meeting_date": {
        "en": "The meeting is on {date}.",
        "de": "Das Treffen ist am {date}.",
        "fr": "La réunion a lieu le {date}.",
        "es": "La reunión es el {date}.",
        "it": "La riunione è il {date}.",
    },
    "train_time": {
        "en": "The train leaves at {time}.",
        "de": "Der Zug fährt um {time} ab.",
        "fr": "Le train part à {time}.",
        "es": "El tren sale a las {time}.",
        "it": "Il treno parte alle {time}.",
    },
    "ticket_price": {
        "en": "The ticket costs {money}.",
        "de": "Die Fahrkarte kostet {money}.",
        "fr": "Le billet coûte {money}.",
        "es": "El billete cuesta {money}.",
        "it": "Il biglietto costa {money}.",
    },
    "distance": {
        "en": "The village is {distance} away.",
        "de": "Das Dorf ist {distance} entfernt.",
        "fr": "Le village est à {distance}.",
        "es": "El pueblo está a {distance}.",
        "it": "Il villaggio dista {distance}.",
    },
    "chairs": {
        "en": "We ordered {count} chairs for the office.",
        "de": "Wir haben {count} Stühle für das Büro bestellt.",
        "fr": "Nous avons commandé {count} chaises pour le bureau.",
        "es": "Pedimos {count} sillas para la oficina.",
        "it": "Abbiamo ordinato {count} sedie per l'ufficio.",
    },
    "company_founded": {
        "en": "The company of {name} was founded in {year} in {city}.",
        "de": "Die Firma von {name} wurde {year} in {city} gegründet.",
        "fr": "L'entreprise de {name} a été fondée en {year} à {city}.",
        "es": "La empresa de {name} fue fundada en {year} en {city}.",
        "it": "L'azienda di {name} è stata fondata nel {year} a {city}.",
    },
    "weight": {
        "en": "The parcel weighs {weight}.",
        "de": "Das Paket wiegt {weight}.",
        "fr": "Le colis pèse {weight}.",
        "es": "El paquete pesa {weight}.",
        "it": "Il pacco pesa {weight}.",
    },
    "temperature": {
        "en": "The temperature in {city} is {temperature} today.",
        "de": "Die Temperatur in {city} beträgt heute {temperature}.",
        "fr": "La température à {city} est aujourd'hui de {temperature}.",
        "es": "La temperatura en {city} hoy es de {temperature}.",
        "it": "La temperatura a {city} oggi è di {temperature}.",
    },
}
FAKER_LOCALES = {"en": "en_US", "de": "de_DE", "fr": "fr_FR", "es": "es_ES", "it": "it_IT"}


@dataclass(frozen=True)
class TemplateSentence:
    template: str
    key: str  # the template instance: template id and slot values; never shared across splits
    text: str
    english: str


def _space(s: str) -> str:
    return " ".join(s.replace("\u00a0", " ").replace("\u202f", " ").split())


@cache
def _people_and_places(language: str) -> tuple[list[str], list[str], list[str]]:
    """Sorted first names, last names and cities from Faker's locale data. Sorted, because some locales
    keep them in containers built from sets, whose order changes from one process to the next."""
    faker = Faker(FAKER_LOCALES[language])
    pool: dict[str, set[str]] = {"first_names": set(), "last_names": set(), "cities": set()}
    for provider in faker.factories[0].providers:
        for attr, names in pool.items():
            names.update(str(x) for x in getattr(provider, attr, ()))
    if not pool["cities"]:  # locales that compose city names from formats
        faker.seed_instance(0)
        pool["cities"] = {faker.city() for _ in range(500)}
    return tuple(sorted(pool[k]) for k in ("first_names", "last_names", "cities"))


def _values(rng: random.Random, language: str) -> dict[str, object]:
    first, last, cities = _people_and_places(language)
    return {
        "date": datetime.date(rng.randrange(1990, 2031), rng.randrange(1, 13), rng.randrange(1, 29)),
        "time": datetime.time(rng.randrange(0, 24), rng.choice((0, 5, 10, 15, 20, 30, 40, 45, 50))),
        "money": rng.randrange(100, 100_000) / 100,
        "distance": rng.randrange(2, 300),
        "count": rng.randrange(2, 1000),
        "year": rng.randrange(1850, 2030),
        "weight": rng.randrange(2, 2000) / 10,
        "temperature": rng.randrange(-15, 40),
        "name": f"{rng.choice(first)} {rng.choice(last)}",
        "city": rng.choice(cities),
    }


def _render(values: dict[str, object], language: str) -> dict[str, str]:
    v = values
    return {
        "date": format_date(v["date"], format="long", locale=language),
        "time": format_time(v["time"], format="short", locale=language),
        "money": format_currency(v["money"], "EUR", locale=language),
        "distance": format_unit(v["distance"], "length-kilometer", locale=language, length="long"),
        "count": num2words(v["count"], lang=language),
        "year": num2words(v["year"], lang=language, to="year"),
        "weight": format_unit(v["weight"], "mass-kilogram", locale=language, length="long"),
        "temperature": format_unit(v["temperature"], "temperature-celsius", locale=language, length="long"),
        "name": str(v["name"]),
        "city": str(v["city"]),
    }


def template_sentences(language: str, n: int, seed: int) -> list[TemplateSentence]:
    """`n` distinct template instances for `language` (English counterparts from the same values)."""
    rng = random.Random(f"templates/{language}/{seed}")
    names = sorted(TEMPLATES)
    out: dict[str, TemplateSentence] = {}
    attempts = 0
    while len(out) < n and attempts < 20 * n:
        attempts += 1
        template = rng.choice(names)
        values = _values(rng, language)
        pattern = TEMPLATES[template]
        slots = [s for s in _render(values, "en") if "{" + s + "}" in pattern["en"]]
        local, english = _render(values, language), _render(values, "en")
        text = _space(pattern[language].format(**{s: local[s] for s in slots}))
        key = f"{template}:" + "|".join(f"{s}={values[s]}" for s in slots)
        if key not in out:
            out[key] = TemplateSentence(
                template, key, text, _space(pattern["en"].format(**{s: english[s] for s in slots}))
            )
    return list(out.values())
