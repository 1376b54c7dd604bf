"""Person names: capitalised runs of words, decided by titles, context cues, a gazetteer, then NER.

A name is a run of capitalised words (particles such as "van", "de", "von der" allowed inside).
In order, cheapest first, a run is a name when
1. a title stands before it (Mr, Dr, Mme, Herr, Frau ...), or
2. a cue stands before it ("this is", "my name is", "je m'appelle", "ich heiße", "regards,") and it
   has two words, or one that the gazetteer knows, or
3. its first word is a given name of the gazetteer (EN/FR/DE; gazetteer.py) and a second word follows;
4. else, if it has two words or more, none of them also written in lower case elsewhere in the text
   (a heading such as "Context Managers"), a spaCy NER model (its `ner` component only) reads
   the sentence around it, and a PER entity overlapping the run, or a MISC entity that is exactly
   the run, makes the run a name.
Runs with a word of an organisation, place or thing ("Bank", "Centre", "-ungen") are no names.
So the model runs on a small share of the text: the sentences holding a multi-word capitalised
run that no cheaper rule decided (NER reads ~50 KB/s per core, the rest of the scan far more).
The model loads once per process (`_MODELS`) from its installed package: nothing downloads.
"""

from __future__ import annotations

import regex as rx

from forge_ray.prepare.pii.gazetteer_data import FIRST_NAMES, SURNAMES
from forge_ray.prepare.pii.spans import Span

_WORD = r"\p{Lu}(?:['’]\p{Lu}|\p{Ll}{1,3}\p{Lu})?\p{Ll}+(?:-\p{Lu}\p{Ll}+)?"
_PARTICLE = r"(?:van|von|de|der|den|du|di|da|del|della|dos|le|la|al|bin|ter|zu)"
RUN = rx.compile(rf"(?<![\p{{L}}\d_@./-]){_WORD}(?:[ \t](?:{_PARTICLE}[ \t]){{0,2}}{_WORD}){{0,4}}(?![\p{{L}}\d_@-])")
_TITLE = rx.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Mme|Mlle|Monsieur|Madame|Mademoiselle|Herr|Frau|Hr|Fr"
    r"|Sig|Sig\.ra|Sr|Sra|Dhr|Mevr)\.?|\bM\.)[ \t]+$")
_CUE = rx.compile(
    r"(?:\b(?:this is|my name is|name is|i am|i'm|signed|regards|thanks|cheers|sincerely|from|customer|client"
    r"|contact|patient|attn|name|je m['’]appelle|je suis|c['’]est|de la part de|cordialement|bien à vous|nom"
    r"|ich bin|ich heiße|mein name ist|hier ist|hier spricht|grüße|grüßen|kunde|kundin|ansprechpartner"
    r"|vorname|nachname|prénom)[ \t]*[:,]?[ \t]*\n?[ \t]*)$", rx.I)
# Capitalised words that open sentences or greet, never a name's first word: dropped from a run's start.
_OPENERS = frozenset("""
The This That These Those There Then When What Which Who Where Why How Our Your Their His Her Its My We You
They He She It Hello Hi Dear Thanks Thank Please Best Kind Regards Yesterday Today Tomorrow Also And But Or
If In On At By For From With Without After Before Since Until Last Next Every Each Monday Tuesday Wednesday
Thursday Friday Saturday Sunday January February March April May June July August September October
November December Le La Les Un Une Des Du De Je Nous Vous Il Elle Ils Elles Bonjour Merci Cordialement Hier
Demain Lundi Mardi Mercredi Jeudi Vendredi Samedi Dimanche Madame Monsieur Chère Cher Der Die Das Ein Eine
Ich Wir Sie Er Es Hallo Danke Bitte Gestern Heute Morgen Montag Dienstag Mittwoch Donnerstag Freitag
Samstag Sonntag Sehr Liebe Lieber Mit Viele Herr Frau Mr Mrs Ms Dr Prof Customer Client Kunde Name Nom
Good Guten Mon Ma Mes Notre Nos Votre Vos Ce Cette Ces Son Sa Ses Leur Mein Meine Meinen Meiner Unser Unsere
Unseren Ihr Ihre Ihren Dein Deine Sein Seine Kein Keine Dieser Diese Dieses Jede Jeder Alle
""".split())
# Runs holding one of these are organisations, places or things, not people: no name there.
_THING_WORDS = frozenset("""
Centre Center Service Services Société University Université Universität Bank Banque Institut Institute Group
Groupe Gruppe Company Compagnie Office Bureau Büro Department Ministry Ministère Ministerium Hospital Hôpital
Klinik Klinikum GmbH AG Ltd Inc SA SARL SAS Corp Foundation Stiftung Verein Association Street Road Avenue
Station Airport Aéroport Flughafen Hotel Museum Musée Square Place Cathedral Stadt City
Cloud Dashboard Desk Support Team Teams Drive Code Error Version Portal App Server Bahn Zeitung Times News
Sie Ihnen Uns Wir Ich Euch Vous Nous Je Il Elle On Ils You We They
""".split())
# German and French noun and adjective endings that given names and surnames do not have.
_THING_ENDING = rx.compile(r"(?:ungen|ung|keit|heit|schaft|nummer|dienst|isch|ische|ischen|ischer|isches|liche|lichen"
                           r"|licher|tion|tät|ismus|ment|ique|iques)$")
LOOKBEHIND = 40  # characters before a run searched for a title or a cue
_SENTENCE_END = rx.compile(r"[.!?\n]")
_LOWER_WORD = rx.compile(r"(?<![\p{L}])\p{Ll}{3,}(?![\p{L}])")


class NameFinder:
    def __init__(self, model: str | None):
        self.model = model
        self.memo: dict[str, tuple[tuple[int, int, str], ...]] = {}

    def find(self, text: str) -> list[Span]:
        spans, undecided = [], []
        for m in RUN.finditer(text):
            words = [w for w in m.group().split() if w[0].isupper()]
            start = m.start()
            while words and words[0] in _OPENERS:  # "Yesterday Anna Schmidt" -> "Anna Schmidt"
                start = text.index(words[0], start) + len(words[0])
                start += len(text[start:]) - len(text[start:].lstrip(" \t"))
                words.pop(0)
            if not words or any(_thing(w) for w in words):
                continue
            before = text[max(0, start - LOOKBEHIND) : start]
            known = words[0] in FIRST_NAMES or words[-1] in SURNAMES
            if (_TITLE.search(before) or (_CUE.search(before) and (len(words) > 1 or known))
                    or (len(words) > 1 and words[0] in FIRST_NAMES)):
                spans.append(Span(start, m.end(), "PERSON"))
            elif len(words) > 1 and self.model:
                undecided.append((start, m.end()))
        if undecided:  # a word also written in lower case in this text is a common word ("Context Managers")
            lower = set(_LOWER_WORD.findall(text))
            undecided = [(a, b) for a, b in undecided
                         if not any(w[0].isupper() and w.lower() in lower for w in text[a:b].split())]
        return spans + self._ner(text, undecided)

    def _ner(self, text: str, runs: list[tuple[int, int]]) -> list[Span]:
        """Runs that a PER entity of the model overlaps, or that a MISC entity spans exactly (the
        French model labels many foreign names MISC: "Belén Guzman"), read in their sentences."""
        out, done = [], -1
        for start, end in runs:
            if start < done:
                continue
            s = max(_last_end(text, start), start - 200)
            e = _SENTENCE_END.search(text, end, min(len(text), end + 200))
            e = e.end() if e else min(len(text), end + 200)
            for a, b, label in self._entities(text[s:e]):
                out += [Span(r0, r1, "PERSON") for r0, r1 in runs
                        if (label == "PER" and r0 < s + b and s + a < r1) or (label == "MISC" and (r0, r1) == (s + a, s + b))]
            done = e
        return out

    def _entities(self, window: str) -> tuple[tuple[int, int, str], ...]:
        found = self.memo.get(window)
        if found is None:
            doc = load_model(self.model)(window)
            found = tuple((e.start_char, e.end_char, "PER" if e.label_ == "PERSON" else e.label_) for e in doc.ents
                          if e.label_ in ("PER", "PERSON", "MISC"))
            if len(self.memo) >= 1 << 14:
                self.memo.clear()
            self.memo[window] = found
        return found


def _thing(word: str) -> bool:
    """A word of an organisation, place or thing ("Bank", "Geschäftsbedingungen"), unless the gazetteer
    knows it as a name ("Fischer" has an adjective's ending)."""
    if word in SURNAMES or word in FIRST_NAMES:
        return False
    return word in _THING_WORDS or (len(word) > 6 and _THING_ENDING.search(word) is not None)


def _last_end(text: str, pos: int) -> int:
    i = max(text.rfind(c, 0, pos) for c in ".!?\n")
    return i + 1


_MODELS: dict = {}


def load_model(name: str):
    """The installed spaCy pipeline `name` with only its tokenizer and `ner` (once per process)."""
    if name not in _MODELS:
        import spacy

        try:
            nlp = spacy.load(name, exclude=["tok2vec", "morphologizer", "tagger", "parser", "senter",
                                            "attribute_ruler", "lemmatizer"])
        except OSError as e:
            raise RuntimeError(f"NER model {name!r} is not installed (prepare.pii.ner_model): "
                               f"`pip install {name.replace('_', '-')}`, or set ner_model to null") from e
        _MODELS[name] = nlp
    return _MODELS[name]
