"""Near-miss guards: a cached prompt similar in meaning to a new one is reused only if every
part that changes the right answer is the same in both.

Measured on hand-written pairs (evals/semantic/pairs.jsonl, see docs/rubrics/semantic-pairs.md):
the sentence embeddings put most near-misses ("capital of Austria" / "capital of Australia",
"from JFK to Times Square" / "from Times Square to JFK", "vitamin D" / "vitamin C") *closer*
than many true paraphrases, so no similarity threshold alone separates them. Each guard names
what differs; any difference is a miss.

    number      the numbers (digits, decimals, times, dates written in digits), as a multiset
    negation    negation words (not, no, never, without, ne...pas, sin, nicht, kein, ohne, ...)
    unit        units next to a number, and scale units anywhere (km/miles, °C/°F, currencies, %), in order
    date        month, weekday and time-of-day words
    comparison  comparatives, superlatives and before/after, yesterday/tomorrow, ...
    entity      proper names and acronyms (capitalised or all-caps words not opening a sentence),
                compared without case: each must occur in the other prompt. German capitalises
                every noun: there, a capitalised word right after an article or possessive
                ("mein Passwort", "die Symptome") is a common noun, not a name, unless it is one
                of the few countries that take an article ("die Schweiz")
    order       with a from/to-like pair of words, the names must come in the same order
    intent      the action asked for (reverse, sort, cancel, pause, cost, ...): the same set
    language    the language of the two prompts (`tasks.core.language`)

Guards are rules, not a model: cheap (~20 µs a pair), explainable, and biased to refuse. What
they refuse is a miss, answered by the model, never a wrong answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from tasks.core.language import identify

__all__ = ["GUARDS", "first_difference"]

_WORD = re.compile(r"[^\W_]+(?:[-/][^\W_]+)*|[$€£%°]", re.U)
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_NUMBER_UNIT = re.compile(r"(\d+(?:[.,]\d+)?)\s?([a-zA-Z°$€£%µ/]+)")

NEGATIONS = frozenset(
    "not no never nothing none nobody nowhere neither nor without cannot can't don't doesn't didn't isn't aren't wasn't "
    "won't shouldn't couldn't wouldn't ne pas jamais sans aucun aucune rien personne nulle non ni nunca sin ningún "
    "ninguna ninguno nadie nada tampoco nicht kein keine keinen keinem keiner keines nie niemals ohne nichts niemand "
    "weder".split()
)
COMPARISONS = frozenset(
    "before after more less fewer higher lower above below over under max maximum min minimum most least increase "
    "decrease larger smaller bigger greater faster slower cheaper dearer older younger longer shorter better worse "
    "largest smallest biggest greatest fastest slowest cheapest oldest youngest longest shortest best worst first last "
    "earlier later next previous yesterday today tomorrow avant après plus moins grand petit meilleur pire premier "
    "dernier hier demain aujourd'hui prochain précédent antes después más menos mayor menor mejor peor primero último "
    "ayer hoy mañana próximo anterior vor nach mehr weniger höher niedriger größer kleiner größte kleinste besser "
    "schlechter erste letzte gestern heute morgen nächste vorherige früher später billiger teurer älter jünger".split()
)
DATES = frozenset(
    "january february march april may june july august september october november december janvier février mars avril "
    "mai juin juillet août septembre octobre novembre décembre enero febrero marzo abril mayo junio julio agosto "
    "septiembre octubre noviembre diciembre januar februar märz juni juli oktober dezember monday tuesday wednesday "
    "thursday friday saturday sunday lundi mardi mercredi jeudi vendredi samedi dimanche lunes martes miércoles jueves "
    "viernes sábado domingo montag dienstag mittwoch donnerstag freitag samstag sonntag am pm morning afternoon evening "
    "night noon midnight matin après-midi soir nuit midi minuit tarde noche mediodía medianoche vormittag nachmittag "
    "abend nacht mittag mitternacht weekend week-end wochenende".split()
)
#: units that change an answer wherever they appear (a number nearby or not)
SCALE_UNITS = frozenset(
    "km mi mile miles kilometer kilometers kilometre kilometres kg lb lbs pound pounds celsius fahrenheit kelvin °c °f "
    "usd eur gbp jpy chf $ € £ % percent mph km/h gb mb tb kb inch inches feet foot ft yard yards meile meilen "
    "kilómetro kilómetros kilomètre kilomètres euro euros dollar dollars dólar dólares yen franc francs metric imperial "
    "liter liters litre litres gallon gallons ounce ounces oz gram grams gramm gramme gramos".split()
)
#: units that count only next to a number ("5 days" vs "5 hours")
NEAR_NUMBER_UNITS = SCALE_UNITS | frozenset(
    "m cm mm g mg l ml h hr hrs hour hours min mins minute minutes s sec secs second seconds ms day days week weeks month "
    "months year years yr yrs w kw kwh v a mah mhz ghz px pt heure heures jour jours semaine semaines mois an ans année "
    "années mètre mètres hora horas día días semana semanas mes meses año años metro metros stunde stunden tag tage tagen "
    "woche wochen monat monate jahr jahre jahren meter sekunde sekunden minuten".split()
)
#: action words (as stems): the thing asked to be done; paraphrases keep it, near-miss intents change it
INTENTS = (
    "revers invert invier kehr umdreh sort tri orden sortier delet remov supprim elimin borr lösch entfern "
    "cancel annul kündig baja pause paus suspend renew renouvel renov renuev verläng add ajout añad hinzufüg "
    "merg fusion combin zusammenf split divis divid teil "
    "cost coût cuest kost price prix preci preis "
    "track suiv seguim verfolg return retour devol rücksend "
    "upgrad downgrad install désinstall uninstall deinstall "
    "encrypt chiffr cifr verschlüss decrypt déchiffr descifr entschlüss "
    "compress décompress unzip zip "
    "convert conver umwand umrechn translat tradu übersetz "
    "increas augment aument erhöh decreas diminu disminu verringer"
).split()
_INTENT_STEMS = frozenset(INTENTS)  # a word's prefixes are looked up: ~10x fewer steps than a startswith per stem
#: a from-word and a to-word make a pair of names a route or a direction: the names' order then matters
ROUTE_FROM = frozenset("from de du des depuis desde del von vom aus".split())
ROUTE_TO = frozenset("to into à au aux vers a al hacia hasta nach zum zur bis".split())
_NEGATED_VERB = re.compile(r"n['’]t\b", re.I)
_SENTENCE = re.compile(r"(?:^|[.!?:;]\s+)[¿¡\"«“„(\s]*([^\W\d_][\w-]*)", re.U)
#: capitalised words that are not names
NOT_NAMES = frozenset({"i"})
#: German articles and possessives: the capitalised word right after one is a common noun
GERMAN_DETERMINERS = frozenset(
    "der die das den dem des ein eine einen einem einer eines mein meine meinen meinem meiner meines dein deine "
    "deinen deinem deiner sein seine seinen seinem seiner ihr ihre ihren ihrem ihrer unser unsere unseren unserem "
    "euer eure kein keine keinen keinem keiner dieser diese dieses diesen diesem jeder jede jedes jeden jedem "
    "welcher welche welches welchen welchem".split()
)
#: names that take an article in German (folded): still names after one
GERMAN_NAMES_WITH_ARTICLE = frozenset(
    "schweiz turkei slowakei ukraine mongolei niederlande philippinen malediven bahamas vereinigten staaten emirate "
    "karibik antarktis arktis".split()
)


def _words(text: str) -> list[str]:
    # elisions split (l'Autriche -> l, Autriche); "n't" stays with its verb
    return _WORD.findall(unicodedata.normalize("NFKC", text).replace("’", "'").replace("'", " ' ").replace(" ' t ", "'t "))


def _plain(word: str) -> str:
    """Case and accents folded: Montréal and montreal are one name."""
    return "".join(ch for ch in unicodedata.normalize("NFKD", word.casefold()) if not unicodedata.combining(ch))


@dataclass(frozen=True)
class Facts:
    """What the guards compare, extracted once per text."""

    numbers: list[str]
    negations: list[str]
    units: list[str]
    dates: list[str]
    comparisons: list[str]
    intents: list[str]
    entities: list[str]
    words: frozenset[str]
    routes: bool


@lru_cache(maxsize=4096)
def _facts(text: str) -> Facts:
    """Everything the guards compare, extracted once per text."""
    words = _words(text)
    folded = [w.casefold() for w in words]
    shouting = text.upper() == text
    openers = {m.group(1) for m in _SENTENCE.finditer(text.strip())}
    entities: list[str] = []
    for word in words:
        capitalised = word[:1].isupper() and not word.isupper()
        acronym = word.isupper() and len(word) > 1 and not shouting and any(ch.isalpha() for ch in word)
        single = len(word) == 1 and word.isupper() and word.isalpha() and not shouting  # vitamin D, plan B
        if ((capitalised and word not in openers and not shouting) or acronym or single) and word.casefold() not in NOT_NAMES:
            entities.append(_plain(word))
    if entities and language_of(text) == "de":
        nouns = {
            _plain(word)
            for before, word in zip(["", *words], words, strict=False)
            if before.casefold() in GERMAN_DETERMINERS and word[:1].isupper() and not word.isupper()
        }
        entities = [e for e in entities if e not in nouns or e in GERMAN_NAMES_WITH_ARTICLE]
    near_numbers = {u for m in _NUMBER_UNIT.finditer(text) if (u := m.group(2).casefold()) in NEAR_NUMBER_UNITS}
    units = _dedupe([w for w in folded if w in SCALE_UNITS or w in near_numbers])  # in order: km->miles is not miles->km
    negations = [w for w in folded if w in NEGATIONS] + ["n't"] * len(_NEGATED_VERB.findall(text))
    return Facts(
        numbers=sorted(n.replace(",", ".") for n in _NUMBER.findall(text)),
        negations=sorted(negations),
        units=units,
        dates=sorted({w for w in folded if w in DATES}),
        comparisons=sorted({w for w in folded if w in COMPARISONS}),
        intents=sorted({w[:n] for w in folded for n in range(1, len(w) + 1) if w[:n] in _INTENT_STEMS}),
        entities=entities,
        words=frozenset(_plain(w) for w in words),
        routes=any(w in ROUTE_FROM for w in folded) and any(w in ROUTE_TO for w in folded),
    )


def _same(field: str) -> Callable[[str, str], bool]:
    return lambda a, b: getattr(_facts(a), field) == getattr(_facts(b), field)


def _entities(a: str, b: str) -> bool:
    fa, fb = _facts(a), _facts(b)
    return all(e in fb.words for e in fa.entities) and all(e in fa.words for e in fb.entities)


def _order(a: str, b: str) -> bool:
    fa, fb = _facts(a), _facts(b)
    if not (fa.routes and fb.routes):
        return True
    ea = [e for e in fa.entities if e in fb.entities]
    eb = [e for e in fb.entities if e in fa.entities]
    return _dedupe(ea) == _dedupe(eb)


def _dedupe(items: list[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


@lru_cache(maxsize=4096)
def language_of(text: str) -> str:
    return identify(text)[0]


def _language(a: str, b: str) -> bool:
    return language_of(a) == language_of(b)


#: (reason code, test that passes when the two prompts agree), cheapest first
GUARDS: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    ("number", _same("numbers")),
    ("negation", _same("negations")),
    ("unit", _same("units")),
    ("date", _same("dates")),
    ("comparison", _same("comparisons")),
    ("intent", _same("intents")),
    ("entity", _entities),
    ("order", _order),
    ("language", _language),
)


def first_difference(cached: str, new: str) -> str | None:
    """The reason code of the first guard the two prompts fail, or None: same question."""
    for reason, agree in GUARDS:
        if not agree(cached, new):
            return reason
    return None
