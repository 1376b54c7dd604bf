"""PII benchmark: recall and precision per entity type on a generated EN/FR/DE evaluation set.

    .venv/bin/python benchmarks/pii.py [--quick]

Evaluation set (seeded, generated here): for every entity type and language, sentences from
templates holding one fake value (names from Faker's person providers of 11 locales, half of
them locales the gazetteer was not built from; identifiers with correct check digits; addresses
in US/UK/SG/FR/IT/ES/DE/NL layouts), each beside 0-2 distractor sentences (organisations,
places, dates that are not birth dates, order numbers, identifiers with a wrong check digit
after their keyword) and distractor-only texts. A value counts as found when spans of its type
cover every character of it; a found span counts as right when it overlaps a value of its type.

Compared, same run, same texts: the scanner as configured by default (names by titles, cues,
gazetteer and NER), the same with NER off (`ner_model: null`), and the scanner of before this
benchmark (its six structured kinds only: presidio's pattern recognisers, detect-secrets).
Also measured: scanner throughput (KB/s, one core) on the evaluation set and on the embedded
tickets and docs corpora, with NER on and off.

Writes benchmarks/results/pii.json (not with --quick); the last line printed is the ratio of
mean recall over entity types, default scanner / NER off.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULT = REPO / "benchmarks" / "results" / "pii.json"

from forge_ray.config.prepare import BUILTIN_ENTITIES, PiiConfig  # noqa: E402
from forge_ray.corpora import fake_pii as fp  # noqa: E402
from forge_ray.corpora.tickets import PHONE_FORMATS, card_number, iban, secret  # noqa: E402
from forge_ray.prepare.pii import PiiScanner  # noqa: E402

LANGS = ("en", "fr", "de")
GAZETTEER_LOCALES = ("en_US", "en_GB", "fr_FR", "de_DE")
HELD_OUT_LOCALES = ("it_IT", "es_ES", "nl_NL", "sv_SE", "pt_PT", "en_IN", "ja_JP")

# {v}: the value; {s}: a surname (the value) after a title.
TEMPLATES = {
    "PERSON": {
        "en": ["Hello, this is {v} from the lab in Leeds.", "Yesterday I spoke with {v} about the invoice.",
               "{v} called again about the broken logger.", "Please forward this to {v} in accounting.",
               "The order was placed by {v} last week.", "Best regards,\n{v}", "Our technician {v} will visit on Monday.",
               "Dear Ms {s}, thank you for your patience.", "I have copied {v} and the site manager on this ticket."],
        "fr": ["Bonjour, je m'appelle {v} et j'ai un problème avec le logiciel.", "Hier j'ai parlé avec {v} de la facture.",
               "{v} a encore appelé au sujet de l'enregistreur.", "Merci de transmettre ce message à {v} au service comptable.",
               "Cordialement,\n{v}", "Notre technicien {v} passera lundi.", "Madame {s} a signé le contrat.",
               "J'ai mis {v} en copie de ce ticket."],
        "de": ["Guten Tag, mein Name ist {v} und ich habe eine Frage.", "Gestern habe ich mit {v} über die Rechnung gesprochen.",
               "{v} hat wegen des defekten Loggers wieder angerufen.", "Bitte leiten Sie das an {v} in der Buchhaltung weiter.",
               "Mit freundlichen Grüßen,\n{v}", "Unser Techniker {v} kommt am Montag vorbei.",
               "Sehr geehrte Frau {s}, vielen Dank für Ihre Nachricht.", "Ich habe {v} in Kopie gesetzt."],
    },
    "ADDRESS": {
        "en": ["Please ship the replacement to {v}.", "My address is {v}.", "Our office moved to {v} last month."],
        "fr": ["Merci d'envoyer le colis à {v}.", "Mon adresse est {v}.", "Nos bureaux sont au {v} depuis mars."],
        "de": ["Bitte schicken Sie das Gerät an {v}.", "Meine Adresse lautet {v}.", "Unser Büro ist jetzt in der {v}."],
    },
    "DATE_OF_BIRTH": {
        "en": ["I was born on {v}, if you need it for the warranty.", "Date of birth: {v}", "DOB {v}, customer since 2019."],
        "fr": ["Je suis né le {v} à Lyon.", "Date de naissance : {v}", "Ma fille, née le {v}, utilise aussi l'appareil."],
        "de": ["Ich bin am {v} geboren.", "Geburtsdatum: {v}", "Der Kunde (geboren am {v}) hat angerufen."],
    },
    "US_SSN": {"en": ["My SSN is {v}.", "Social Security number: {v}"], "fr": ["Son numéro SSN américain est {v}."],
               "de": ["Die US-Sozialversicherungsnummer (SSN) lautet {v}."]},
    "UK_NHS": {"en": ["My NHS number is {v}.", "NHS no. {v}"], "fr": ["Numéro NHS : {v}"], "de": ["NHS-Nummer {v}"]},
    "FR_NIR": {"en": ["French social security number {v}"], "fr": ["Mon numéro de sécurité sociale est le {v}.", "NIR : {v}"],
               "de": ["Französische Sozialversicherungsnummer: {v}"]},
    "DE_TAX_ID": {"en": ["German tax ID {v}"], "fr": ["Identifiant fiscal allemand : {v}"],
                  "de": ["Meine Steuer-ID ist {v}.", "Steueridentifikationsnummer: {v}"]},
    "IT_FISCAL_CODE": {"en": ["Italian tax code {v}"], "fr": ["Code fiscal italien : {v}"],
                       "de": ["Italienische Steuernummer {v}", "Codice fiscale {v}"]},
    "ES_DNI": {"en": ["Spanish ID card (DNI) {v}"], "fr": ["DNI espagnol : {v}"], "de": ["Spanischer Ausweis, DNI {v}"]},
    "ES_NIE": {"en": ["My NIE is {v}."], "fr": ["Numéro NIE : {v}"], "de": ["NIE-Nummer {v}"]},
    "NL_BSN": {"en": ["Dutch citizen service number (BSN) {v}"], "fr": ["Numéro BSN : {v}"], "de": ["BSN {v}"]},
    "SG_NRIC": {"en": ["My NRIC is {v}.", "FIN {v}"], "fr": ["NRIC singapourien : {v}"], "de": ["Singapurische NRIC {v}"]},
    "PASSPORT": {"en": ["Passport number {v}", "My passport no. is {v}."], "fr": ["Numéro de passeport : {v}", "passeport n° {v}"],
                 "de": ["Reisepassnummer {v}", "Passnummer: {v}"]},
    "EMAIL": {"en": ["You can reach me at {v} if anything is unclear."], "fr": ["Écrivez-moi à {v} si besoin."],
              "de": ["Sie erreichen mich unter {v}."]},
    "PHONE": {"en": ["My direct line is {v}, best in the mornings."], "fr": ["Mon numéro direct est le {v}."],
              "de": ["Meine Durchwahl ist {v}."]},
    "IBAN": {"en": ["Please send the refund to our account {v}."], "fr": ["Merci de rembourser sur le compte {v}."],
             "de": ["Bitte überweisen Sie auf das Konto {v}."]},
    "CREDIT_CARD": {"en": ["The card that was charged is {v}."], "fr": ["La carte débitée est la {v}."],
                    "de": ["Belastet wurde die Karte {v}."]},
    "IP_ADDRESS": {"en": ["The device is reachable at {v} on our network."], "fr": ["L'appareil répond à l'adresse {v}."],
                   "de": ["Das Gerät ist unter {v} erreichbar."]},
    "SECRET": {"en": ["Our integration uses this credential:\n{v}\n"], "fr": ["Voici la clé utilisée :\n{v}\n"],
               "de": ["Unser Zugang nutzt diesen Schlüssel:\n{v}\n"]},
}
DISTRACTORS = {
    "en": ["The meeting moved to 12 March 2024 at 10:00.", "Order 20240518 shipped from our Leeds warehouse.",
           "The Kestrel Cloud Dashboard shows Error Code 42.", "We use Microsoft Teams and Google Drive.",
           "The New York office closed on Friday.", "Baker Street station was closed for repairs.",
           "Please call the Help Desk before noon.", "Version 3.11.2 fixed the Unicode Standard issue.",
           "The Royal Mail parcel left Manchester on Tuesday.", "Firmware 4.2 was released on 2023-11-05."],
    "fr": ["La réunion est fixée au 12 mars 2024.", "La Société Générale a validé le virement.",
           "Le Centre Pompidou est fermé le mardi.", "Commande 98765432 expédiée depuis Lyon.",
           "Le Service Client de Kestrel Instruments répond en français.", "Paris Saint-Germain a gagné hier soir."],
    "de": ["Die Deutsche Bahn hat den Termin am 12. März 2024 bestätigt.", "Die Rechnung Nummer 4711 ist bezahlt.",
           "Das Technische Hilfswerk hat die Geräte geliefert.", "Bitte prüfen Sie die Allgemeinen Geschäftsbedingungen.",
           "Der Kundendienst von Kestrel Instruments ist in München.", "Die Neue Zürcher Zeitung berichtete darüber."],
}
# Identifiers after their own keyword but with a wrong check digit: must not be found as that type.
WRONG_CHECK = {"UK_NHS": ("NHS number {v}", fp.uk_nhs), "DE_TAX_ID": ("Steuer-ID {v}", fp.de_tax_id),
               "IT_FISCAL_CODE": ("codice fiscale {v}", fp.it_fiscal_code), "ES_DNI": ("DNI {v}", fp.es_dni),
               "ES_NIE": ("NIE {v}", fp.es_nie), "NL_BSN": ("BSN {v}", fp.nl_bsn), "SG_NRIC": ("NRIC {v}", fp.sg_nric),
               "FR_NIR": ("NIR {v}", fp.fr_nir)}


class Names:
    """Full names and surnames from Faker's person providers, half from locales the gazetteer was built
    from, half from others (including romanised Japanese)."""

    def __init__(self, seed: int):
        from faker import Faker

        self.fakers = {}
        for i, loc in enumerate(GAZETTEER_LOCALES + HELD_OUT_LOCALES):
            f = Faker(loc)
            f.seed_instance(seed + i)
            self.fakers[loc] = f

    def full(self, r: random.Random) -> tuple[str, str]:
        loc = r.choice(GAZETTEER_LOCALES if r.random() < 0.5 else HELD_OUT_LOCALES)
        f = self.fakers[loc]
        if loc == "ja_JP":
            first, last = f.first_romanized_name(), f.last_romanized_name()
        else:
            first, last = f.first_name(), f.last_name()
        return f"{first} {last}", last


def _value(kind: str, r: random.Random, lang: str, names: Names) -> tuple[str, str]:
    """(value, surname) of one planted item."""
    if kind == "PERSON":
        return names.full(r)
    makers = {
        "ADDRESS": lambda: fp.address(r, r.choice(fp.COUNTRIES[lang])), "DATE_OF_BIRTH": lambda: fp.birth_date(r, lang),
        "US_SSN": lambda: fp.us_ssn(r), "UK_NHS": lambda: fp.uk_nhs(r), "FR_NIR": lambda: fp.fr_nir(r),
        "DE_TAX_ID": lambda: fp.de_tax_id(r), "IT_FISCAL_CODE": lambda: fp.it_fiscal_code(r),
        "ES_DNI": lambda: fp.es_dni(r), "ES_NIE": lambda: fp.es_nie(r), "NL_BSN": lambda: fp.nl_bsn(r),
        "SG_NRIC": lambda: fp.sg_nric(r), "PASSPORT": lambda: fp.passport(r),
        "EMAIL": lambda: f"{names.full(r)[1].lower().replace(' ', '')}{r.randint(1, 99)}@example.{r.choice(['com', 'fr', 'de'])}",
        "PHONE": lambda: r.choice(PHONE_FORMATS)(r), "IBAN": lambda: iban(r), "CREDIT_CARD": lambda: card_number(r),
        "IP_ADDRESS": lambda: f"203.0.113.{r.randint(1, 254)}" if r.random() < 0.5 else f"2001:db8::{r.randint(1, 0xFFFF):x}",
        "SECRET": lambda: secret(r)[1],
    }
    return makers[kind](), ""


def eval_set(seed: int, per_cell: int) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """[(text, [(start, end, type) of each planted value])]: per_cell texts per (type, language)."""
    r, names = random.Random(seed), Names(seed)
    out = []
    for kind, by_lang in TEMPLATES.items():
        for lang in LANGS:
            for _ in range(per_cell):
                value, surname = _value(kind, r, lang, names)
                template = r.choice(by_lang[lang])
                if "{s}" in template:
                    value = surname
                before, after = template.split("{s}" if "{s}" in template else "{v}")
                sentence = before + value + after
                if not after.strip():  # "Date of birth: {v}" ends its sentence before the next one
                    after += "."
                    sentence += "."
                extra = r.sample(DISTRACTORS[lang], r.randint(0, 2))
                pos = r.randint(0, len(extra))
                head = " ".join(extra[:pos]) + (" " if pos else "")
                text = head + sentence + ("" if pos == len(extra) else " " + " ".join(extra[pos:]))
                start = len(head) + len(before)
                out.append((text, [(start, start + len(value), kind)]))
    for lang in LANGS:  # distractor-only texts, and identifiers with a wrong check digit
        for _ in range(per_cell * 3):
            out.append((" ".join(r.sample(DISTRACTORS[lang], 2)), []))
    for template, make in WRONG_CHECK.values():
        for _ in range(per_cell):
            out.append((template.format(v=fp.corrupt(make(r))), []))
    return out


def score(scanner: PiiScanner, data) -> tuple[dict, float]:
    """Per type {n, recall, found, precision}, and the seconds the scanner took."""
    kinds = list(BUILTIN_ENTITIES)
    n, hit, found, right = ({k: 0 for k in kinds} for _ in range(4))
    seconds = 0.0
    for text, truth in data:
        start = time.perf_counter()
        spans = scanner.find(text)
        seconds += time.perf_counter() - start
        for a, b, kind in truth:
            n[kind] += 1
            covered = set()
            for s in spans:
                if s.entity == kind:
                    covered.update(range(max(a, s.start), min(b, s.end)))
            hit[kind] += len(covered) == b - a
        for s in spans:
            if s.entity in found:
                found[s.entity] += 1
                right[s.entity] += any(kind == s.entity and s.start < b and a < s.end for a, b, kind in truth)
    per = {k: {"n": n[k], "recall": round(hit[k] / n[k], 4) if n[k] else None, "found": found[k],
               "precision": round(right[k] / found[k], 4) if found[k] else None} for k in kinds}
    return per, seconds


def summary(per: dict) -> dict:
    recalls = [v["recall"] for v in per.values() if v["recall"] is not None]
    precisions = [v["precision"] if v["precision"] is not None else 0.0 for v in per.values() if v["n"]]
    return {"recall_min": min(recalls), "recall_mean": round(sum(recalls) / len(recalls), 4),
            "precision_min": min(precisions), "precision_mean": round(sum(precisions) / len(precisions), 4)}


def throughput(scanner: PiiScanner, texts: list[str]) -> float:
    """KB/s of `find` over texts (a fresh scanner: NER memo and phone memo empty)."""
    scanner.find("warm up: load the model, Jane Doe, 1 Main Street")
    start = time.perf_counter()
    for t in texts:
        scanner.find(t)
    return round(sum(len(t.encode()) for t in texts) / 1e3 / (time.perf_counter() - start), 1)


def corpora_texts(quick: bool) -> dict[str, list[str]]:
    from forge_ray.corpora.docs import docs_records
    from forge_ray.corpora.tickets import ticket_records

    tickets, _ = ticket_records(n=100 if quick else 600, seed=11)
    docs = [d["text"] for d in docs_records()][: 40 if quick else 200]
    return {"tickets": [t["text"] for t in tickets], "docs": docs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10 texts per (type, language) instead of 60 (smoke run)")
    args = p.parse_args()
    data = eval_set(seed=16, per_cell=10 if args.quick else 60)
    configs = {
        "forge": PiiConfig(),
        "forge_ner_off": PiiConfig(ner_model=None),
        "before": PiiConfig(entities=["EMAIL", "PHONE", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "SECRET"], ner_model=None),
    }
    results = {}
    for name, cfg in configs.items():
        scanner = PiiScanner(cfg)
        scanner.find("warm up: load the model, Jane Doe, 1 Main Street")
        per, seconds = score(scanner, data)
        results[name] = {**summary(per), "seconds": round(seconds, 2), "per_type": per}
    corpora = corpora_texts(args.quick)
    speed = {f"{name}_{src}_kb_s": throughput(PiiScanner(configs[name]), texts)
             for name in ("forge", "forge_ner_off") for src, texts in corpora.items()}
    eval_kb = sum(len(t.encode()) for t, _ in data) / 1e3
    speed.update({f"{n}_eval_kb_s": round(eval_kb / results[n]["seconds"], 1) for n in results})

    f, off = results["forge"], results["forge_ner_off"]
    print(f"{'type':16} {'n':>5} {'recall':>7} {'prec':>6} | {'no NER':>7} {'prec':>6} | {'before':>7}")
    for kind, v in f["per_type"].items():
        o, b = off["per_type"][kind], results["before"]["per_type"][kind]
        fmt = lambda x: "   -  " if x is None else f"{x:6.3f}"  # noqa: E731
        print(f"{kind:16} {v['n']:5d} {fmt(v['recall']):>7} {fmt(v['precision'])} | {fmt(o['recall']):>7} "
              f"{fmt(o['precision'])} | {fmt(b['recall']):>7}")
    for name, res in results.items():
        print(f"{name:14} recall_min {res['recall_min']:.3f} mean {res['recall_mean']:.3f}  "
              f"precision_min {res['precision_min']:.3f} mean {res['precision_mean']:.3f}")
    print("throughput (KB/s, one core):", json.dumps(speed))
    ratio = round(f["recall_mean"] / off["recall_mean"], 4)
    out = {"quick": args.quick, "texts": len(data), "eval_kb": round(eval_kb, 1),
           "recall_min": f["recall_min"], "precision_min": f["precision_min"],
           "per_type": f["per_type"], "ner_model": configs["forge"].ner_model,
           "baselines": {k: {kk: vv for kk, vv in v.items()} for k, v in results.items() if k != "forge"},
           "summary": {k: {kk: vv for kk, vv in v.items() if kk != "per_type"} for k, v in results.items()},
           "throughput_kb_s": speed, "ratio_recall_mean_vs_ner_off": ratio}
    if not args.quick:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(out, indent=2) + "\n")
    print(f"ratio (mean recall over entity types, forge / forge with NER off): {ratio}")


if __name__ == "__main__":
    main()
