"""order-agent: multi-step tool-calling runs over the customers' orders.

A run plans its tool calls from the customer's request (look up, refund, cancel, change the
address, list, send a receipt), then plays them as model calls, one step per call, retrying after
errors. For wrong-entity incidents (see incidents.py) the run acts on another customer's order.
"""

from __future__ import annotations

from dataclasses import dataclass

from semwatch.simulator import corpus
from semwatch.simulator.calls import EventMaker, stamp_step
from semwatch.simulator.population import CARRIERS, Customer, fake_address
from semwatch.simulator.randomness import cumulative
from semwatch.simulator.routes import Route, RouteState
from semwatch.simulator.texts import fill, refusal_text
from semwatch.simulator.world import MODELS

APP = "order-agent"
_ORDERS = corpus.load("orders")
REQUESTS: dict[str, list[str]] = _ORDERS["requests"]
_ANSWERS: dict[str, str] = _ORDERS["answers"]
_PII_SUFFIXES: list[str] = corpus.load("support")["pii_suffixes"][:6]  # order-agent users add only these

_SCENARIO_WEIGHTS = {"status": 0.30, "refund": 0.18, "cancel_recent": 0.14, "address": 0.10, "list": 0.16,
                     "receipt": 0.07, "refund_no_id": 0.05}
_SCENARIOS = list(_SCENARIO_WEIGHTS)
_SCENARIO_CUM = cumulative(_SCENARIO_WEIGHTS.values())
_WRONG_ENTITY_SCENARIOS = ["refund", "refund_no_id", "cancel_recent"]
_MENTION_THE_ORDER = ("status", "refund", "address")  # scenarios whose request names the order
TOOL_SCHEMA_TOKENS = 900
_MAX_ATTEMPTS = 8  # from the 8th model call on, the provider no longer fails


def order_agent_session(maker: EventMaker, t0: float, out: list) -> None:
    order_agent_run(maker, maker.sim.routes.pick(maker.rng, APP), t0, out)


def order_agent_run(maker: EventMaker, route: Route, t0: float, out: list,
                    wrong_entity: bool = False) -> tuple[dict, dict] | None:
    """Simulate one run; with ``wrong_entity``, returns the event and the tool call that acted on the
    wrong customer's order (None when the run did not get to act)."""
    rng = maker.rng
    tenant = maker.sim.population.pick_tenant(rng, APP)
    pool = maker.sim.population.customers_by_tenant[tenant]
    customer = rng.pick(pool)
    state = route.at(t0)
    version = state.pick_version(rng)
    run_id = maker.ids.next("run_")
    conversation = maker.ids.next("conv_", 12) if rng.uniform() < 0.5 else None
    with_side_effects = rng.uniform() < 0.7  # some producers do not annotate side effects
    scenario = rng.pick(_WRONG_ENTITY_SCENARIOS) if wrong_entity else rng.weighted_pick(_SCENARIOS, _SCENARIO_CUM)
    plan = _Plan(maker, customer, scenario)
    if wrong_entity:
        others = [c for c in pool if c is not customer and c.orders] or [
            c for p in maker.sim.population.customers_by_tenant.values() for c in p if c is not customer]
        victim = rng.pick(others)
        plan.victim = (victim, rng.pick(victim.orders))
    plan.make(scenario)
    refused = rng.uniform() < route.refusal_rate * route.versions[version].refusal_factor and not wrong_entity
    if refused:
        plan.steps = plan.steps[:1]
        plan.final = refusal_text(rng, None)
    run = _Run(route, state, version, tenant, run_id, conversation, t0, with_side_effects, refused, wrong_entity)
    wrong = _play(maker, run, plan, out)
    if wrong_entity and not plan.acted_on_victim:
        return None
    return wrong


@dataclass
class _Run:
    route: Route
    state: RouteState
    version: int
    tenant: str
    run_id: str
    conversation: str | None
    t0: float
    with_side_effects: bool
    refused: bool
    wrong_entity: bool


def _play(maker: EventMaker, run: _Run, plan: _Plan, out: list) -> tuple[dict, dict] | None:
    """One model call per step of the plan, then the final answer; returns the wrong-entity call, if any."""
    rng = maker.rng
    route, state = run.route, run.state
    system_tokens, verbosity, _ = route.versions[run.version]
    output_factor = MODELS[state.model].output_factor
    context = system_tokens + TOOL_SCHEMA_TOKENS + len(plan.request) / 3.8
    t = run.t0
    wrong: tuple[dict, dict] | None = None
    events: list[tuple[int, dict]] = []
    calls = len(plan.steps) + 1
    k = 0
    attempts = 0
    while k < calls:
        attempts += 1
        load = maker.load(APP, t)
        ev = maker.new_event(run.run_id, route, state, run.version, run.tenant, run.conversation)
        can_fail = not run.wrong_entity and attempts < _MAX_ATTEMPTS
        err = maker.draw_error(state.provider, t, load) if can_fail else None
        last = k == calls - 1
        in_tok = int(context)
        if last:
            out_tok = max(20, int(rng.lognormal(route.output_median * verbosity, 0.5) * output_factor))
            finish = "stop"
        else:
            out_tok = max(15, int(rng.lognormal(40 + 25 * len(plan.steps[k]), 0.4) * output_factor))
            finish = "tool_calls"
        t_end = maker.complete(ev, state.model, in_tok, out_tok, t, load, err, finish, 4096)
        if k == 0:
            ev["request_text"] = plan.request
        ev["subject"] = {"user_id": [plan.customer.user_id], "order_id": list(plan.mentioned)}
        wait = 0.0
        if err is None and not last:
            tool_calls = []
            for name, args, result, side_effect in plan.steps[k]:
                call = {"name": name, "call_id": maker.ids.next("call_", 12), "arguments": dict(args)}
                if run.with_side_effects:
                    call["side_effect"] = side_effect
                call["result"] = result
                if (run.wrong_entity and side_effect and name in ("refund_order", "cancel_order")
                        and args["order_id"] not in plan.known):
                    wrong = (ev, call)
                tool_calls.append(call)
                wait = max(wait, rng.lognormal(0.8 if side_effect else 0.3, 0.6))
                context += (rng.lognormal(220, 0.5) if name != "search_orders"
                            else rng.lognormal(180 + 60 * len(plan.orders), 0.3))
            ev["tool_calls"] = tool_calls
            maker.maybe_mark_refusal(ev, False)
        if last and err is None:
            ev["response_text"] = plan.final
            maker.maybe_mark_refusal(ev, run.refused)
            maker.maybe_feedback(ev, 0.15 if run.refused else 0.025, 0.97)
            if rng.uniform() < 0.25:
                ev["metrics"] = {"quality_score": maker.quality_score(0.85, 0.07)}
        context += out_tok + 15
        stamp_step(ev, t_end, events)
        if err is None:
            k += 1
            t = t_end + wait + rng.lognormal(0.1, 0.5)
        else:
            t = t_end + rng.lognormal(2.5, 0.6)  # retry with backoff
    out.extend(events)
    return wrong


class _Plan:
    """The request, the tool calls step by step (parallel calls share a step) and the final answer."""

    def __init__(self, maker: EventMaker, customer: Customer, scenario: str):
        rng = maker.rng
        self.maker = maker
        self.customer = customer
        self.orders = customer.orders
        self.target = rng.pick(self.orders)
        self.mentioned = [self.target["order_id"]] if scenario in _MENTION_THE_ORDER else []
        self.item = self.target["items"][0]["name"]
        template = rng.pick(REQUESTS[scenario])
        self.new_address = fake_address(rng)
        self.request = template.format(order=self.target["order_id"], item=self.item, address=self.new_address)
        if rng.uniform() < 0.15:
            self.request = f"{self.request} {fill(rng, rng.pick(_PII_SUFFIXES), customer)}"
        self.known = set(self.mentioned)  # order ids the run may act on: named by the user or read
        self.steps: list[list[tuple[str, dict, dict, bool]]] = []  # (name, arguments, result, side effect)
        self.final = ""
        self.victim: tuple[Customer, dict] | None = None  # another customer and their order
        self.acted_on_victim = False

    def make(self, scenario: str) -> None:
        {"status": self._status, "refund": self._refund, "refund_no_id": self._refund,
         "cancel_recent": self._cancel_recent, "address": self._address, "list": self._list,
         "receipt": self._receipt}[scenario](scenario)

    # ---- what the tools return
    def _order_view(self, order: dict) -> dict:
        return {"order_id": order["order_id"], "user_id": self.customer.user_id, "status": order["status"],
                "items": order["items"], "total": order["total"],
                "payment_method": f"card ending {self.customer.last4}"}

    def _search_view(self, status: str | None = None) -> dict:
        found = [o for o in self.orders if status is None or o["status"] == status]
        return {"orders": [{"order_id": o["order_id"], "status": o["status"], "total": o["total"],
                            "placed_days_ago": o["days_ago"]} for o in found[:10]]}

    def _user_view(self) -> dict:
        c = self.customer
        return {"user_id": c.user_id, "name": c.name, "email": c.email,
                "order_ids": [o["order_id"] for o in self.orders]}

    def _get_order(self, order: dict) -> tuple:
        return ("get_order", {"order_id": order["order_id"]}, self._order_view(order), False)

    def _search_orders(self) -> tuple:
        return ("search_orders", {"user_id": self.customer.user_id}, self._search_view(), False)

    def _get_user(self) -> tuple:
        return ("get_user", {"user_id": self.customer.user_id}, self._user_view(), False)

    def _send_email(self, template: str, order_id: str) -> tuple:
        c = self.customer
        return ("send_email", {"user_id": c.user_id, "to": c.email, "template": template, "order_id": order_id},
                {"status": "sent", "message_id": self.maker.ids.next("msg_", 12)}, True)

    # ---- the scenarios
    def _status(self, scenario: str) -> None:
        target = self.target
        self.steps.append([self._get_order(target)])
        if target["status"] in ("shipped", "delivered"):
            self.final = _ANSWERS["on_its_way"].format(order_id=target["order_id"], item=self.item,
                                                       status=target["status"], carrier=self.maker.rng.pick(CARRIERS))
        else:
            self.final = _ANSWERS["not_yet_shipped"].format(order_id=target["order_id"], status=target["status"])

    def _refund(self, scenario: str) -> None:
        rng = self.maker.rng
        c = self.customer
        target = self.target
        if scenario == "refund_no_id":  # find the order first
            self.steps.append([self._search_orders()])
            self.known.update(o["order_id"] for o in self.orders[:10])
            candidates = [o for o in self.orders[:10] if o["status"] in ("delivered", "returned")] or self.orders[:1]
            target = rng.pick(candidates)
        self.steps.append([self._get_order(target)])
        if not (target["status"] in ("delivered", "returned") or self.victim):
            not_refundable = _ORDERS["not_refundable"]
            self.final = not_refundable.get(target["status"], not_refundable["other"]).format(
                order_id=target["order_id"])
            return
        amount = target["total"] if rng.uniform() < 0.7 else target["items"][0]["price"]
        order_id, user_id = target["order_id"], c.user_id
        if self.victim:
            order_id = self.victim[1]["order_id"]
            amount = self.victim[1]["total"]
            if rng.uniform() < 0.3:
                user_id = self.victim[0].user_id
            self.acted_on_victim = True
        self.steps.append([("refund_order", {"order_id": order_id, "user_id": user_id, "amount": amount,
                                             "reason": rng.pick(_ORDERS["refund_reasons"])},
                            {"status": "refunded", "refund_id": self.maker.ids.next("rf_", 10), "amount": amount},
                            True)])
        if rng.uniform() < 0.5:
            self.steps.append([self._send_email("refund_confirmation", target["order_id"])])
        self.final = _ANSWERS["refunded"].format(amount=amount, order_id=target["order_id"], last4=c.last4)

    def _cancel_recent(self, scenario: str) -> None:
        rng = self.maker.rng
        c = self.customer
        get_user = self._get_user()
        search_pending = ("search_orders", {"user_id": c.user_id, "status": "pending"},
                          self._search_view("pending"), False)
        if rng.uniform() < 0.5:
            self.steps.append([get_user, search_pending])  # in parallel
        else:
            self.steps.append([get_user])
            self.steps.append([search_pending])
        self.known.update(o["order_id"] for o in self.orders)
        pending = [o for o in self.orders if o["status"] in ("pending", "processing")]
        if self.victim:
            victim, victims_order = self.victim
            order_id, user_id = victims_order["order_id"], c.user_id if rng.uniform() < 0.7 else victim.user_id
            self.steps.append([_cancel_order(order_id, user_id)])
            self.acted_on_victim = True
            self.final = _ANSWERS["cancelled_most_recent"]
        elif pending:
            order = min(pending, key=lambda o: o["days_ago"])
            self.steps.append([_cancel_order(order["order_id"], c.user_id)])
            self.final = _ANSWERS["cancelled"].format(order_id=order["order_id"], item=order["items"][0]["name"])
        else:
            self.final = _ANSWERS["nothing_to_cancel"]

    def _address(self, scenario: str) -> None:
        target = self.target
        self.steps.append([self._get_order(target)])
        if target["status"] in ("pending", "processing"):
            self.steps.append([("update_address", {"order_id": target["order_id"], "user_id": self.customer.user_id,
                                                   "address": self.new_address}, {"status": "updated"}, True)])
            self.final = _ANSWERS["address_updated"].format(order_id=target["order_id"], address=self.new_address)
        else:
            progress = "shipped" if target["status"] == "shipped" else "been " + target["status"]
            self.final = _ANSWERS["address_too_late"].format(order_id=target["order_id"], progress=progress,
                                                             carrier=self.maker.rng.pick(CARRIERS))

    def _list(self, scenario: str) -> None:
        self.steps.append([self._search_orders()])
        lines = [_ANSWERS["order_list_line"].format(order_id=o["order_id"], item=o["items"][0]["name"],
                                                    total=o["total"], status=o["status"]) for o in self.orders[:3]]
        self.final = _ANSWERS["order_list"] + "\n" + "\n".join(lines)

    def _receipt(self, scenario: str) -> None:
        self.steps.append([self._get_user()])
        self.steps.append([self._search_orders()])
        latest = min(self.orders, key=lambda o: o["days_ago"])
        self.steps.append([self._send_email("receipt", latest["order_id"])])
        self.final = _ANSWERS["receipt_sent"].format(order_id=latest["order_id"], email=self.customer.email)


def _cancel_order(order_id: str, user_id: str) -> tuple:
    return ("cancel_order", {"order_id": order_id, "user_id": user_id, "reason": "customer_request"},
            {"status": "cancelled"}, True)
