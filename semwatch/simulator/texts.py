"""Request and answer texts: template slots filled with fake but consistent details, styling, refusals."""

from __future__ import annotations

from semwatch.simulator import corpus
from semwatch.simulator.population import (
    CARRIERS,
    CITIES,
    FIRST_NAMES,
    ITEMS,
    LAST_NAMES,
    MONTHS,
    PLANS,
    Customer,
    fake_address,
    fake_email,
    fake_phone,
)
from semwatch.simulator.randomness import RandomStream

_REFUSALS = corpus.load("refusals")
_GREETINGS: list[str] = corpus.load("support")["greetings"]
_THANKS: list[str] = corpus.load("support")["thanks"]
_PERSON_SLOTS = ("{email}", "{name}", "{phone}", "{address}")


def capitalise(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def fill(rng: RandomStream, text: str, customer: Customer | None = None, order: str | None = None,
         values: dict | None = None) -> str:
    """Fill the template's slots; pass the same ``values`` to keep a request and its answer consistent.

    Details come from ``customer`` (and ``order``) where given, otherwise they are made up.
    """
    if "{" not in text:
        return text
    if values is None:
        values = {}

    def wants(slot: str) -> bool:
        return "{" + slot + "}" in text and slot not in values

    if wants("order"):
        values["order"] = order or (rng.pick(customer.orders)["order_id"] if customer
                                    else f"#W{rng.integer_between(1000000, 9999999)}")
    if wants("item"):
        values["item"] = rng.pick(ITEMS)[0]
    if wants("item2"):
        values["item2"] = rng.pick(ITEMS)[0]
    if wants("amount"):
        values["amount"] = f"{rng.lognormal(40.0, 0.9):.2f}"
    if wants("last4"):
        values["last4"] = customer.last4 if customer else f"{rng.integer_between(0, 9999):04d}"
    if wants("days"):
        values["days"] = str(rng.integer_between(2, 14))
    if ("{date}" in text or "{date2}" in text) and "date" not in values:
        values["date"] = f"{rng.pick(MONTHS)} {rng.integer_between(1, 28)}"
        values["date2"] = f"{rng.pick(MONTHS)} {rng.integer_between(1, 28)}"
    if wants("plan"):
        values["plan"] = rng.pick(PLANS)
    if wants("carrier"):
        values["carrier"] = rng.pick(CARRIERS)
    if wants("city"):
        values["city"] = rng.pick(CITIES)[0]
    if any(slot in text for slot in _PERSON_SLOTS) and "email" not in values:
        _fill_person(rng, customer, values)
    if "{domain}" in text:
        values["domain"] = "example.com"
    return text.format(**values)


def _fill_person(rng: RandomStream, customer: Customer | None, values: dict) -> None:
    if customer is None:
        first, last = rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES)
        values["email"], values["name"] = fake_email(rng, first, last), f"{first} {last}"
        values["phone"], values["address"] = fake_phone(rng), fake_address(rng)
    else:
        values["email"], values["name"], values["phone"] = customer.email, customer.name, customer.phone
        # people often ask to ship somewhere else
        values["address"] = fake_address(rng) if rng.chance(0.5) else customer.address


def style(rng: RandomStream, text: str) -> str:
    """How people type: a greeting or all lower case, sometimes a thank-you."""
    x = rng.uniform()
    if x < 0.25:
        text = f"{rng.pick(_GREETINGS)} {text}"
    elif x < 0.33:
        text = text.lower()
    if rng.uniform() < 0.2:
        text = f"{text} {rng.pick(_THANKS)}"
    return text


def refusal_text(rng: RandomStream, scope: str | None) -> str:
    """A refusal, composed from parts; ``scope`` (a route name, ``code``, ``research``) for topical ones."""
    r = _REFUSALS
    kind = rng.uniform()
    if kind < 0.10:
        return rng.pick(r["terse"])
    core = rng.pick(r["scoped_cores"][scope]) if scope and rng.uniform() < 0.55 else rng.pick(r["cores"])
    if kind < 0.22:
        lead = rng.pick(r["policy_leads"])
        text = f"{lead} {rng.pick(r['policy_objects'])}."
    else:
        apology = rng.pick(r["apologies"])
        text = (f"{apology} {core}{rng.pick(r['reasons'])}." if apology
                else f"{capitalise(core)}{rng.pick(r['reasons'])}.")
    redirect = rng.pick(r["redirects"])
    if redirect:
        text = f"{text} {fill(rng, redirect)}"
    return text
