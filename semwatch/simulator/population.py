"""Who uses the apps: tenants with Zipf-distributed traffic, and their customers with fake PII and orders."""

from __future__ import annotations

import re

import numpy as np

from semwatch.simulator import corpus
from semwatch.simulator.randomness import RandomStream, cumulative
from semwatch.simulator.world import APP_NAMES, TENANT_ZIPF_S, TENANTS, uses_app

_PEOPLE = corpus.load("people")
_SHOP = corpus.load("shop")
FIRST_NAMES: list[str] = _PEOPLE["first_names"]
LAST_NAMES: list[str] = _PEOPLE["last_names"]
_MAIL_DOMAINS: list[str] = _PEOPLE["mail_domains"]
_STREETS: list[str] = _PEOPLE["streets"]
_STREET_SUFFIXES: list[str] = _PEOPLE["street_suffixes"]
_AREA_CODES: list[str] = _PEOPLE["phone_area_codes"]
CITIES: list[tuple[str, str, str]] = [(c["city"], c["state"], c["zip_prefix"]) for c in _PEOPLE["cities"]]
ITEMS: list[tuple[str, float]] = [(i["name"], i["price"]) for i in _SHOP["items"]]
_ORDER_STATUSES: list[str] = _SHOP["order_statuses"]
CARRIERS: list[str] = _SHOP["carriers"]
MONTHS: list[str] = _SHOP["months"]
PLANS: list[str] = _SHOP["plans"]

_CUSTOMERS = 3000  # across all tenants (each tenant has at least 10)


class Customer:
    __slots__ = ("user_id", "name", "email", "phone", "address", "orders", "last4", "tenant")

    def __init__(self, user_id: str, name: str, email: str, phone: str, address: str, last4: str, tenant: str):
        self.user_id = user_id
        self.name = name
        self.email = email
        self.phone = phone
        self.address = address
        self.last4 = last4  # of the card on file
        self.tenant = tenant
        self.orders: list[dict] = []


def fake_email(rng: RandomStream, first: str, last: str) -> str:
    given, family = first.lower(), re.sub(r"[^a-z]", "", last.lower())
    style = rng.integer_between(0, 5)
    if style == 0:
        handle = f"{given}.{family}"
    elif style == 1:
        handle = f"{given[0]}{family}{rng.integer_between(1, 99)}"
    elif style == 2:
        handle = f"{given}_{family}"
    elif style == 3:
        handle = f"{given}{rng.integer_between(70, 99)}"
    elif style == 4:
        handle = f"{family}.{given}"
    else:
        handle = f"{given}{family[:1]}{rng.integer_between(100, 999)}"
    return f"{handle}@{rng.pick(_MAIL_DOMAINS)}"


def fake_phone(rng: RandomStream) -> str:
    tail = rng.integer_between(100, 199)  # 555-0100..0199 is reserved for fiction
    area = rng.pick(_AREA_CODES)
    style = rng.integer_between(0, 4)
    if style == 0:
        return f"({area}) 555-0{tail}"
    if style == 1:
        return f"+1 {area}-555-0{tail}"
    if style == 2:
        return f"{area}.555.0{tail}"
    if style == 3:
        return f"{area}5550{tail}"
    return f"+44 7700 900{rng.integer_between(100, 999)}"  # Ofcom drama range


def fake_address(rng: RandomStream) -> str:
    city, state, zip_prefix = rng.pick(CITIES)
    return (f"{rng.integer_between(12, 9899)} {rng.pick(_STREETS)} {rng.pick(_STREET_SUFFIXES)}, "
            f"{city}, {state} {zip_prefix}{rng.integer_between(10, 99)}")


class Population:
    """Tenants ranked by traffic (largest first) and each tenant's customers."""

    def __init__(self, seed: np.random.SeedSequence):
        rng = RandomStream(seed, 4096)
        ranks = np.arange(1, len(TENANTS) + 1, dtype=float)
        weights = ranks ** (-TENANT_ZIPF_S)
        order = rng.generator.permutation(len(TENANTS))
        self.tenants = [TENANTS[i] for i in order]  # rank 1 first
        self.tenant_cum = cumulative((weights / weights.sum()).tolist())
        self.tenant_cum_by_app = {
            app: cumulative([w * (1.0 if uses_app(rank, app) else 0.0) for rank, w in enumerate(weights.tolist())])
            for app in APP_NAMES
        }
        # numbers drawn without replacement, so that user and order ids are unique
        user_numbers = iter((rng.generator.choice(900_000, size=_CUSTOMERS + 40, replace=False) + 100_000).tolist())
        order_numbers = iter((rng.generator.choice(9_000_000, size=(_CUSTOMERS + 40) * 8, replace=False)
                              + 1_000_000).tolist())
        shares = (weights / weights.sum()).tolist()
        self.customers_by_tenant: dict[str, list[Customer]] = {}
        for rank, tenant in enumerate(self.tenants):
            count = max(10, int(round(_CUSTOMERS * shares[rank])))
            self.customers_by_tenant[tenant] = [
                _make_customer(rng, tenant, next(user_numbers), order_numbers) for _ in range(count)]

    def pick_tenant(self, rng: RandomStream, app: str) -> str:
        return rng.weighted_pick(self.tenants, self.tenant_cum_by_app[app])


def _make_customer(rng: RandomStream, tenant: str, user_number: int, order_numbers) -> Customer:
    first, last = rng.pick(FIRST_NAMES), rng.pick(LAST_NAMES)
    customer = Customer(f"u_{user_number}", f"{first} {last}", fake_email(rng, first, last), fake_phone(rng),
                        fake_address(rng), f"{rng.integer_between(0, 9999):04d}", tenant)
    for _ in range(1 + min(7, int(rng.exponential(2.0)))):
        customer.orders.append(_make_order(rng, next(order_numbers)))
    return customer


def _make_order(rng: RandomStream, number: int) -> dict:
    items = []
    for _ in range(1 + min(3, int(rng.exponential(0.5)))):
        name, price = rng.pick(ITEMS)
        items.append({"item_id": f"itm_{rng.integer_between(10000, 99999)}", "name": name,
                      "price": round(price * rng.uniform_between(0.85, 1.1), 2)})
    return {
        "order_id": f"#W{number}",
        "status": rng.pick(_ORDER_STATUSES),
        "items": items,
        "total": round(sum(i["price"] for i in items), 2),
        "days_ago": int(rng.exponential(25.0)),
    }
