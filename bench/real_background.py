"""Detection on REAL background traffic: the Mooncake (Kimi) chat trace, tiled over days, with
labelled incidents injected on top, through the real ``semwatch replay`` and ``semwatch evaluate``.

    .venv/bin/python bench/real_background.py                       # 2 simulated days, seed 1
    .venv/bin/python bench/real_background.py --days 3 --seed 2 --workdir /tmp/rb
    .venv/bin/python bench/real_background.py --background-only     # no injections: false alarms only
    .venv/bin/python bench/real_background.py --build-only          # write events and labels, stop

Data: ``../shared/data/traces/mooncake_conversation.jsonl`` (Mooncake, Apache-2.0: 12,031 requests
sampled from one hour of Kimi's production chat service; read in place, never copied). Each request
becomes a one-event run of the app ``kimi-chat``; its arrival second, input and output token counts
are the trace's. Only the labels of the app (route, model, prompt version, refusal) are ours.

Background
----------
- Tiling: the trace spans 59 min (3,537 s). The simulated time line is cut into back-to-back tiles of that
  length; each tile plays the whole trace rotated by a random circular shift, so inter-arrival gaps
  are the real ones (except at one seam per tile) and no two hours line up. Trace timestamps are
  whole seconds; each arrival gets a uniform offset within its second so events do not tie.
- Time of day: arrivals are thinned (kept with probability ``load(t)``, never duplicated): 1.0 from
  10:00 to 20:00 (the recorded hour is taken as a peak hour), raised-cosine ramps down to 0.2
  between 20:00 and 02:00 and back up between 06:00 and 10:00, 0.2 in between (UTC). Daily mean 0.7.
- Routes: a stable hash (crc32) of ``hash_ids[1]``, the first prompt block after the system prompt
  every request shares (``hash_ids[0]`` is 0 everywhere), so a conversation stays on one route.
  At full load (10-20 h) ``chat`` gets ~154 requests/min, ``docs-qa`` ~46, ``translate`` ~3 and
  ``code-review`` ~1.1; at night a fifth of that. Real conversations are clumpy (one has 43 turns
  in the hour), so quiet routes are bursty.
- ``conversation_id``: the tile and ``hash_ids[1]`` (requests sharing their first private prefix
  block are turns of one conversation; a tile is a fresh hour of users).
- ``model`` ``gpt-4o-mini`` (``openai``), no ``cost_usd`` (semwatch prices it from config),
  ``prompt_version`` per route (``chat-v7``...), ``finish_reason`` ``length`` when the output reaches
  ``MAX_TOKENS`` = 2000 (the trace's maximum, where 30 outputs pile up: the service's cap), else
  ``stop``; ``refusal`` (producer ground truth) Bernoulli at 1.5-2.5 % by route, independent.
- One benign prompt rollout per day on some route (a new version, same behaviour; not labelled):
  new versions happen in production and must not page by themselves.

Incidents (labelled; each day is cut into 11 slots of ~131 min and each incident gets its own slot,
so windows plus the 15 min grace never overlap; quiet-route refusal spikes go in daytime slots, when
those routes see ~1 and ~3 requests/min)
- ``token_spike`` long outputs: 15 min, a quarter of a route's requests produce 8x their output
  tokens, capped at ``MAX_TOKENS`` (finish ``length``). Two per day.
- ``token_spike`` request storm: 10 min at 4x the usual rate of a route or the whole app: three
  extra copies of the same route's (or app's) requests from other random 10 min of the trace,
  thinned like the background. Two per day, plus one on the app in the first hour of day 1.
- ``cost_spike``: a route switches to a pricier model (``gpt-4o``, ``o1``, ``claude-sonnet-4``,
  ``gpt-4.1``; prompt version unchanged) for 20-60 min. Two per day.
- ``false_refusal_spike``: a new prompt version on a route refuses more, then is rolled back:
  ``chat`` at 25-40 % for 30 min; ``code-review`` (~1/min) at 40 % for 60 min; ``translate``
  (~3/min) at 12 % over its 1.5 % baseline for 60 min. One of each per day.

Evaluation: ``semwatch replay EVENTS --out INCIDENTS --config CONFIG`` and ``semwatch evaluate
--incidents ... --labels ... --json REPORT --start S --end E`` (default matching: 2 min before a
window's start to 15 min after its end). Only the command line and the JSON contracts are used,
never semwatch's modules, so this bench survives refactors. Output: per kind windows, found, time
to detect (median, max) and false alarms per simulated day; the pages (problems paged, pages per
incident, false pages, time to first page); each window with the detectors that found it (and, when
missed, what the data looked like); each false alarm.
"""

from __future__ import annotations

import argparse
import bisect
import fnmatch
import json
import math
import random
import statistics
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_conversation.jsonl"
SEMWATCH = [sys.executable, "-m", "semwatch.cli"]
DEFAULT_START = "2026-01-05T00:00:00Z"

APP = "kimi-chat"
BASE_MODEL = "gpt-4o-mini"
MAX_TOKENS = 2000
# route -> (share of the trace's requests, baseline refusal rate, first prompt version); chat takes
# the rest. Shares: the trace is ~204 requests/min, so 0.0049 is ~1/min and 0.0147 ~3/min.
ROUTES = {
    "chat": (0.7604, 0.020, 7),
    "docs-qa": (0.22, 0.025, 3),
    "translate": (0.0147, 0.015, 12),
    "code-review": (0.0049, 0.020, 4),
}
# Conversations are clumpy (one has 43 turns in the hour), so a route's realised rate depends on
# which conversations hash into it; this salt, picked among a few, lands the quiet routes at ~1/min
# and ~3/min in the recorded hour.
ROUTE_SALT = "route"
PRICIER = ("gpt-4o", "o1", "claude-sonnet-4", "gpt-4.1")
PROVIDERS = (("claude", "anthropic"), ("gemini", "google"), ("", "openai"))
SLOTS_PER_DAY = 11
GRACE_S = 900.0  # semwatch evaluate's default slack after a window's end


# -- the trace -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    t: float  # seconds from the trace start (whole seconds in the file)
    input_tokens: int
    output_tokens: int
    block: int  # hash_ids[1]: the first prompt block after the shared system prompt
    route: str


@dataclass(frozen=True)
class Trace:
    requests: tuple[Request, ...]
    period: float  # tile length: the recorded span plus one second

    def by_route(self, route: Optional[str]) -> list[Request]:
        return [r for r in self.requests if route is None or r.route == route]


def route_of(block: int) -> str:
    u = zlib.crc32(f"{ROUTE_SALT}:{block}".encode()) / 2**32
    acc = 0.0
    # Quiet routes first, so their share does not depend on rounding of the busy ones.
    for name in ("code-review", "translate", "docs-qa", "chat"):
        acc += ROUTES[name][0]
        if u < acc:
            return name
    return "chat"


def load_trace(path: Path = TRACE) -> Trace:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                d = json.loads(line)
                ids = d["hash_ids"]
                block = ids[1] if len(ids) > 1 else -1
                out.append(Request(d["timestamp"] / 1000.0, int(d["input_length"]),
                                   int(d["output_length"]), block, route_of(block)))
    out.sort(key=lambda r: r.t)
    return Trace(tuple(out), math.floor(out[-1].t) + 1.0)


# -- time of day ---------------------------------------------------------------------------------
NIGHT = 0.2


def load_factor(t: float) -> float:
    """Share of the recorded (peak) hour's arrivals kept at epoch time ``t`` (UTC time of day)."""
    h = (t % 86400.0) / 3600.0
    if 10.0 <= h <= 20.0:
        return 1.0
    if 2.0 <= h <= 6.0:
        return NIGHT
    if h > 20.0 or h < 2.0:  # 20:00 -> 02:00 down
        x = ((h - 20.0) % 24.0) / 6.0
    else:  # 06:00 -> 10:00 up
        x = 1.0 - (h - 6.0) / 4.0
    return NIGHT + (1.0 - NIGHT) * 0.5 * (1.0 + math.cos(math.pi * x))


# -- injections ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Injection:
    """One change applied to the background. ``start``/``duration`` in seconds from the scenario
    start. ``what``: long_output | storm | cost | refusal (labelled) or rollout (benign, no label)."""

    what: str
    start: float
    duration: float = 0.0
    route: Optional[str] = None  # None: the whole app (storms only)
    share: float = 0.0  # long_output: share of requests affected; refusal: refusal rate
    factor: float = 1.0  # long_output: output multiplier; storm: request-rate multiplier
    model: str = ""  # cost: the pricier model

    @property
    def kind(self) -> Optional[str]:
        return {"long_output": "token_spike", "storm": "token_spike", "cost": "cost_spike",
                "refusal": "false_refusal_spike"}.get(self.what)


def _slot_start(rng: random.Random, slot: int, duration: float) -> float:
    slot_len = 86400.0 / SLOTS_PER_DAY
    lo, hi = slot * slot_len + 600.0, (slot + 1) * slot_len - duration - GRACE_S - 600.0
    return round(rng.uniform(lo, max(lo, hi)) / 60.0) * 60.0


def default_plan(days: float, seed: int) -> list[Injection]:
    """Incidents for ``days`` simulated days (whole days; a day's plan does not depend on how many
    follow). Route and model choices rotate with the day so that two days cover every route."""
    plan: list[Injection] = []
    slot_len = 86400.0 / SLOTS_PER_DAY
    for d in range(int(math.ceil(days))):
        rng = random.Random(f"{seed}:plan:{d}")
        base = d * 86400.0
        day: list[Injection] = [
            Injection("long_output", 0, 900, ("chat", "docs-qa")[d % 2], 0.25, 8.0),
            Injection("long_output", 0, 900, ("translate", "chat")[d % 2], 0.25, 8.0),
            Injection("storm", 0, 600, ("chat", "docs-qa")[d % 2], factor=4.0),
            Injection("storm", 0, 600, (None, "translate")[d % 2], factor=4.0),
            Injection("cost", 0, 60 * rng.randint(20, 60), ("chat", "docs-qa")[d % 2],
                      model=PRICIER[(2 * d) % len(PRICIER)]),
            Injection("cost", 0, 60 * rng.randint(20, 60), ("translate", "code-review")[d % 2],
                      model=PRICIER[(2 * d + 1) % len(PRICIER)]),
            Injection("refusal", 0, 1800, "chat", share=round(rng.uniform(0.25, 0.40), 2)),
            Injection("refusal", 0, 3600, "code-review", share=0.40),
            Injection("refusal", 0, 3600, "translate", share=0.12),
            Injection("rollout", 0, 0, rng.choice(sorted(ROUTES))),
        ]
        free = list(range(SLOTS_PER_DAY))
        if d == 0:
            # Cold start: a storm on the whole app within the first hour of the recording.
            plan.append(Injection("storm", 60.0 * rng.randint(5, 40), 600, None, factor=4.0))
            free.remove(0)
        # Quiet-route refusal spikes in daytime slots (10:00-20:00: those routes at ~1 and ~3/min).
        daytime = [s for s in free if s * slot_len >= 10 * 3600 and (s + 1) * slot_len <= 20.5 * 3600]
        quiet = [i for i in day if i.what == "refusal" and i.route in ("code-review", "translate")]
        rest = [i for i in day if i not in quiet]
        rng.shuffle(daytime)
        assert len(quiet) <= len(daytime) and len(rest) <= len(free) - len(quiet), "more incidents than slots"
        for inj, slot in zip(quiet, daytime):
            free.remove(slot)
            plan.append(replace(inj, start=base + _slot_start(rng, slot, inj.duration)))
        rng.shuffle(free)
        for inj, slot in zip(rest, free):
            plan.append(replace(inj, start=base + _slot_start(rng, slot, inj.duration)))
    end = days * 86400.0
    return sorted((i for i in plan if i.start + i.duration + (GRACE_S if i.kind else 0) <= end),
                  key=lambda i: (i.start, i.what))


def provider_of(model: str) -> str:
    return next(p for prefix, p in PROVIDERS if model.startswith(prefix))


# -- building ------------------------------------------------------------------------------------
@dataclass
class Scenario:
    start: float  # epoch seconds
    end: float
    seed: int
    events: list[dict]
    labels: list[dict]
    plan: list[Injection]
    versions: dict = field(default_factory=dict)  # plan index -> prompt version of a refusal window


def format_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _arrivals(trace: Trace, start: float, end: float, seed: int) -> list[tuple[float, Request, str]]:
    """The background: (epoch time, request, conversation id), tile by tile."""
    out = []
    tiles = int(math.ceil((end - start) / trace.period))
    for k in range(tiles):
        rng = random.Random(f"{seed}:tile:{k}")
        shift = rng.uniform(0.0, trace.period)
        t0 = start + k * trace.period
        for r in trace.requests:
            t = t0 + (r.t + shift) % trace.period + rng.random()
            keep = rng.random() < load_factor(t)
            if keep and t < end:
                out.append((t, r, f"c{k}-{r.block}"))
    return out


def _storm_arrivals(trace: Trace, inj: Injection, start: float, end: float, seed: int,
                    index: int) -> list[tuple[float, Request, str]]:
    """(factor - 1) extra copies of the route's (or app's) traffic, each from a random stretch of
    the trace as long as the storm, so the extra load keeps the trace's burstiness and tokens."""
    rng = random.Random(f"{seed}:storm:{index}")
    pool = trace.by_route(inj.route)
    t_start = start + inj.start
    out = []
    copies = int(round(inj.factor)) - 1
    for c in range(copies):
        offset = rng.uniform(0.0, trace.period)
        for r in pool:
            rel = (r.t - offset) % trace.period
            if rel >= inj.duration:
                continue
            t = t_start + rel + rng.random()
            if rng.random() < load_factor(t) and t < min(end, t_start + inj.duration):
                out.append((t, r, f"s{index}.{c}-{r.block}"))
    return out


def build(trace: Trace, start: float, duration_s: float, seed: int,
          plan: Optional[list[Injection]] = None) -> Scenario:
    """Events (sorted by time) and labels for ``duration_s`` seconds from ``start`` (epoch s)."""
    end = start + duration_s
    plan = sorted(plan if plan is not None else default_plan(duration_s / 86400.0, seed),
                  key=lambda i: (i.start, i.what))
    arrivals = _arrivals(trace, start, end, seed)
    for i, inj in enumerate(plan):
        if inj.what == "storm":
            arrivals += _storm_arrivals(trace, inj, start, end, seed, i)
    arrivals.sort(key=lambda a: (a[0], a[2], a[1].t))

    # Prompt versions: a rollout moves a route on for good; a refusal window runs a new version that
    # is rolled back at its end. Numbers are never reused.
    counter = {route: v for route, (_, _, v) in ROUTES.items()}
    timeline = {route: ([-math.inf], [f"{route}-v{v}"]) for route, v in counter.items()}
    versions = {}
    for i, inj in enumerate(plan):
        if inj.what in ("rollout", "refusal"):
            counter[inj.route] += 1
            name = f"{inj.route}-v{counter[inj.route]}"
            if inj.what == "rollout":
                timeline[inj.route][0].append(start + inj.start)
                timeline[inj.route][1].append(name)
            else:
                versions[i] = name
    windows: dict[str, list] = {route: [] for route in ROUTES}
    for i, inj in enumerate(plan):
        if inj.what in ("long_output", "cost", "refusal"):
            windows[inj.route].append((start + inj.start, start + inj.start + inj.duration, i, inj))

    rng = random.Random(f"{seed}:attributes")
    events = []
    for n, (t, r, conv) in enumerate(arrivals):
        route = r.route
        times, names = timeline[route]
        version = names[bisect.bisect_right(times, t) - 1]
        model, refusal_rate, out = BASE_MODEL, ROUTES[route][1], r.output_tokens
        for w_start, w_end, i, inj in windows[route]:
            if not w_start <= t < w_end:
                continue
            if inj.what == "cost":
                model = inj.model
            elif inj.what == "refusal":
                version, refusal_rate = versions[i], inj.share
            elif inj.what == "long_output" and rng.random() < inj.share:
                out = min(MAX_TOKENS, int(round(out * inj.factor)))
        refused = rng.random() < refusal_rate
        events.append({
            "schema_version": "1", "event_id": f"kc{seed}-{n:07d}", "run_id": f"kc{seed}-{n:07d}",
            "ts": round(t, 3), "app": APP, "route": route, "model": model, "provider": provider_of(model),
            "prompt_version": version, "conversation_id": conv,
            "input_tokens": r.input_tokens, "output_tokens": out,
            "finish_reason": "length" if out >= MAX_TOKENS else "stop", "refusal": refused,
        })

    labels = []
    for i, inj in enumerate(plan):
        if inj.kind is None:
            continue
        seg = {"app": APP}
        if inj.route:
            seg["route"] = inj.route
        if inj.what in ("long_output", "refusal"):
            seg["model"] = BASE_MODEL
        if inj.what == "cost":
            seg["model"] = inj.model
        if inj.what == "refusal":
            seg["prompt_version"] = versions[i]
        labels.append({"kind": inj.kind, "start": format_ts(start + inj.start),
                       "end": format_ts(start + inj.start + inj.duration), "segment": seg,
                       "note": describe(inj), "injection": inj.what})
    return Scenario(start, end, seed, events, labels, plan, versions)


def describe(inj: Injection) -> str:
    where = inj.route or f"all of {APP}"
    mins = f"{inj.duration / 60:.0f} min"
    return {
        "long_output": f"long outputs: {inj.share:.0%} of {where} x{inj.factor:g} output tokens for {mins}",
        "storm": f"request storm: {inj.factor:g}x requests on {where} for {mins}",
        "cost": f"routing change: {where} on {inj.model} for {mins}",
        "refusal": f"new prompt version on {where} refuses {inj.share:.0%} for {mins}",
        "rollout": f"benign prompt rollout on {where}",
    }[inj.what]


def write_jsonl(rows: Iterable[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":")))
            fh.write("\n")


# -- facts about the data, to read a miss by ---------------------------------------------------
def load_prices(config_dir: Path) -> dict[str, tuple[float, float]]:
    import yaml  # PyYAML: a semwatch dependency, present in its venv

    data = yaml.safe_load((config_dir / "prices.yaml").read_text()) or {}
    return {k: (v["input_per_mtok"], v["output_per_mtok"]) for k, v in (data.get("models") or {}).items()}


def price(prices: dict, e: dict) -> float:
    best = max((k for k in prices if fnmatch.fnmatchcase(e["model"], k)), key=len, default=None)
    if best is None:
        return 0.0
    pin, pout = prices[best]
    return (e["input_tokens"] * pin + e["output_tokens"] * pout) / 1e6


def route_rates(sc: Scenario) -> dict[str, dict]:
    """Requests/min per route: overall, in the daytime plateau (10-20 h) and at night (02-06 h)."""
    hours = (sc.end - sc.start) / 3600.0
    per: dict[str, list[int]] = {}
    seen = [0.0] * 24  # hours of each hour of day in the recording
    for k in range(int(math.ceil(hours))):
        seen[int(((sc.start + k * 3600) % 86400) // 3600)] += min(1.0, hours - k)
    refused: dict[str, list[int]] = {}
    spiked = set(sc.versions.values())
    for e in sc.events:
        per.setdefault(e["route"], [0] * 24)[int((e["ts"] % 86400) // 3600)] += 1
        if e["prompt_version"] not in spiked:  # the baseline, outside refusal spikes
            r = refused.setdefault(e["route"], [0, 0])
            r[0] += bool(e["refusal"])
            r[1] += 1

    def rate(counts: list[int], hrs: range) -> Optional[float]:
        n, h = sum(counts[x] for x in hrs), sum(seen[x] for x in hrs)
        return round(n / (60.0 * h), 2) if h else None

    return {route: {"mean_per_min": round(sum(c) / (hours * 60.0), 2), "day_per_min": rate(c, range(10, 20)),
                    "night_per_min": rate(c, range(2, 6)),
                    "refusal_rate": round(refused[route][0] / max(1, refused[route][1]), 4)}
            for route, c in sorted(per.items())}


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def window_facts(sc: Scenario, label: dict, prices: dict) -> str:
    """One line on what the window did to the data, next to the hour before it."""
    a, b = parse_time(label["start"]), parse_time(label["end"])
    seg = label["segment"]
    inside = [e for e in sc.events if a <= e["ts"] < b and all(e.get(k) == v for k, v in seg.items()
                                                                 if k in ("app", "route"))]
    b0 = max(sc.start, a - 3600.0)  # the hour before, or what the recording has of it
    before = [e for e in sc.events if b0 <= e["ts"] < a and e["route"] == seg.get("route", e["route"])
              and e["model"] == BASE_MODEL]
    mins, mins_b = (b - a) / 60.0, max(1.0, (a - b0) / 60.0)
    what = label.get("injection")
    if what == "refusal":
        mine = [e for e in inside if e["prompt_version"] == seg["prompt_version"]]
        refused = [e for e in mine if e["refusal"]]
        p0 = ROUTES[seg["route"]][1]
        # The strongest 3 min (the detector's window_s) ending at a refusal: k of n, and its
        # binomial p-value against the route's baseline with no over-dispersion allowance.
        best = (1.0, 0, 0)
        for e in refused:
            win = [f for f in mine if e["ts"] - 180 < f["ts"] <= e["ts"]]
            n, k = len(win), sum(1 for f in win if f["refusal"])
            best = min(best, (binom_sf(k, n, p0), -k, n))
        return (f"{len(mine)} requests ({len(mine) / mins:.1f}/min), {len(refused)} refused from "
                f"{len({e['conversation_id'] for e in refused})} conversations; strongest 3 min: "
                f"{-best[1]} of {best[2]} refused, p = {best[0]:.1e} vs {p0:.1%}")
    if what == "long_output":
        out_in = statistics.mean(e["output_tokens"] for e in inside) if inside else 0
        out_b = statistics.mean(e["output_tokens"] for e in before) if before else 0
        tok_in = sum(e["input_tokens"] + e["output_tokens"] for e in inside) / mins
        tok_b = sum(e["input_tokens"] + e["output_tokens"] for e in before) / mins_b
        length = sum(1 for e in inside if e["finish_reason"] == "length")
        return (f"{len(inside)} requests, {length} hit the {MAX_TOKENS}-token cap; mean output "
                f"{out_in:.0f} vs {out_b:.0f} the hour before; route tokens/min {tok_in:,.0f} vs {tok_b:,.0f}")
    if what == "storm":
        app_in = [e for e in sc.events if a <= e["ts"] < b]
        app_b = [e for e in sc.events if b0 <= e["ts"] < a]

        def tok(es: list[dict]) -> int:
            return sum(e["input_tokens"] + e["output_tokens"] for e in es)

        return (f"segment {len(inside) / mins:.1f} req/min vs {len(before) / mins_b:.1f} the hour before; app "
                f"tokens/min {tok(app_in) / mins:,.0f} vs {tok(app_b) / mins_b:,.0f}"
                + (f" (only {mins_b:.0f} min of history)" if mins_b < 59 else ""))
    if what == "cost":
        c_in = [price(prices, e) for e in inside]
        c_b = [price(prices, e) for e in before]
        app_b = [price(prices, e) for e in sc.events if b0 <= e["ts"] < a]
        return (f"{len(inside)} requests ({len(inside) / mins:.1f}/min), $/request {statistics.mean(c_in or [0]):.4f} "
                f"vs {statistics.mean(c_b or [0]):.4f} (median {statistics.median(c_b or [0]):.4f}) the hour before; "
                f"extra $/min {sum(c_in) / mins - len(inside) / mins * statistics.mean(c_b or [0]):.2f} "
                f"over app {sum(app_b) / mins_b:.2f}/min")
    return ""


# -- the command line ----------------------------------------------------------------------------
def _run(cmd: list[str], retries: int, wait_s: float) -> subprocess.CompletedProcess:
    """Run a semwatch command; retry when it fails (the package is being refactored in place)."""
    for attempt in range(retries + 1):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return proc
        print(f"  {' '.join(cmd[2:4])} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}",
              file=sys.stderr)
        if attempt < retries:
            print(f"  retrying in {wait_s:.0f} s", file=sys.stderr)
            time.sleep(wait_s)
    raise SystemExit(f"semwatch failed: {' '.join(cmd)}")


def _fmt_s(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.0f} s" if abs(x) < 120 else f"{x / 60:.1f} min"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=float, default=2.0)
    ap.add_argument("--start", default=DEFAULT_START, help="simulated start, RFC 3339 (UTC)")
    ap.add_argument("--trace", default=str(TRACE))
    ap.add_argument("--config", default=str(ROOT / "config"))
    ap.add_argument("--workdir", default="/tmp/semwatch-real-background")
    ap.add_argument("--background-only", action="store_true", help="no injections")
    ap.add_argument("--build-only", action="store_true", help="write events and labels, do not replay")
    ap.add_argument("--retries", type=int, default=3, help="retries of a failing semwatch command")
    args = ap.parse_args(argv)

    trace_path = Path(args.trace)
    if not trace_path.exists():
        print(f"trace not found: {trace_path} (see ../shared/data/README.md)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    events_p, labels_p = workdir / "events.jsonl", workdir / "labels.jsonl"
    incidents_p, report_p = workdir / "incidents.jsonl", workdir / "report.json"

    t0 = time.monotonic()
    trace = load_trace(trace_path)
    start = parse_time(args.start)
    sc = build(trace, start, args.days * 86400.0, args.seed, [] if args.background_only else None)
    write_jsonl(sc.events, events_p)
    write_jsonl(sc.labels, labels_p)
    rates = route_rates(sc)
    (workdir / "scenario.json").write_text(json.dumps({
        "seed": args.seed, "start": format_ts(sc.start), "end": format_ts(sc.end), "events": len(sc.events),
        "trace": str(trace_path), "trace_requests": len(trace.requests), "tile_s": trace.period,
        "routes": rates, "plan": [{**asdict(i), "start": format_ts(sc.start + i.start)} for i in sc.plan],
    }, indent=2) + "\n")
    print(f"built {len(sc.events):,} events, {len(sc.labels)} labelled windows over {args.days:g} days "
          f"in {time.monotonic() - t0:.1f} s -> {workdir}")
    print(f"{'route':<12} {'req/min':>8} {'10-20 h':>8} {'02-06 h':>8} {'refusals':>9}"
          "  (refusals: outside refusal spikes)")
    for route, r in rates.items():
        print(f"{route:<12} {r['mean_per_min']:>8} {str(r['day_per_min']):>8} "
              f"{str(r['night_per_min']):>8} {r['refusal_rate']:>9.2%}")
    print("\ninjections:")
    for i in sc.plan:
        print(f"  {format_ts(sc.start + i.start)[:16]}  {describe(i)}"
              + (f" ({sc.versions[sc.plan.index(i)]})" if i.what == "refusal" else ""))
    if args.build_only:
        return 0

    t1 = time.monotonic()
    proc = _run(SEMWATCH + ["replay", str(events_p), "--out", str(incidents_p), "--config", args.config],
                args.retries, 120.0)
    stats = {}
    for line in reversed(proc.stderr.strip().splitlines()):
        try:
            stats = json.loads(line)
            break
        except ValueError:
            continue
    print(f"\nreplay: {stats or proc.stderr.strip()[-300:]} in {time.monotonic() - t1:.0f} s")
    if stats.get("rejected"):
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"semwatch replay rejected {stats['rejected']} events: the builder is broken")
    _run(SEMWATCH + ["evaluate", "--incidents", str(incidents_p), "--labels", str(labels_p),
                     "--json", str(report_p), "--start", format_ts(sc.start), "--end", format_ts(sc.end),
                     "--config", args.config], args.retries, 120.0)
    report = json.loads(report_p.read_text())
    summary = print_report(sc, report, load_prices(Path(args.config)))
    (workdir / "summary.json").write_text(json.dumps({"seed": args.seed, "days": args.days, "kinds": summary,
                                                      "pages": report.get("pages")}, indent=2) + "\n")
    print(f"\nfiles: {events_p}, {labels_p}, {incidents_p}, {report_p}, {workdir / 'summary.json'}")
    return 0


def print_report(sc: Scenario, report: dict, prices: dict) -> dict:
    """Print the figures, the windows and the false alarms; return the per-kind figures."""
    days = report.get("days") or (sc.end - sc.start) / 86400.0
    kind_rows = {r["kind"]: r for r in report["rows"] if r["scope"] == "kind"}
    windows = report["windows"]
    by_kind: dict[str, list[Optional[float]]] = {}
    for w in windows:
        if not w.get("optional"):
            times = [d["ttd_s"] for d in w["detected_by"].values()]
            by_kind.setdefault(w["kind"], []).append(min(times) if times else None)
    kinds = sorted(set(by_kind) | set(kind_rows))
    summary = {}
    print(f"\n{'kind':<22} {'windows':>7} {'found':>6} {'TTD median':>11} {'TTD max':>9} {'FA':>4} {'FA/day':>7}")
    for kind in kinds:
        found = sorted(v for v in by_kind.get(kind, []) if v is not None)
        row = kind_rows.get(kind, {})
        fa = row.get("false_alarms", 0)
        summary[kind] = {"windows": len(by_kind.get(kind, [])), "found": len(found),
                         "ttd_median_s": statistics.median(found) if found else None,
                         "ttd_max_s": found[-1] if found else None, "false_alarms": fa,
                         "false_alarms_per_day": fa / days}
        print(f"{kind:<22} {len(by_kind.get(kind, [])):>7} {len(found):>6} "
              f"{_fmt_s(statistics.median(found) if found else None):>11} {_fmt_s(found[-1] if found else None):>9} "
              f"{fa:>4} {fa / days:>7.2f}")
    overall = next((r for r in report["rows"] if r["scope"] == "all"), {})
    print(f"{'all':<22} {overall.get('windows', 0):>7} {overall.get('detected', 0):>6} {'':>11} {'':>9} "
          f"{overall.get('false_alarms', 0):>4} {overall.get('false_alarms', 0) / days:>7.2f}"
          f"   ({days:g} simulated days; related triggers: {overall.get('related', 0)})")

    by_what: dict[str, list[Optional[float]]] = {}
    for lab, w in zip(sc.labels, windows):
        times = [d["ttd_s"] for d in w["detected_by"].values()]
        by_what.setdefault(f"{lab['kind']}/{lab['injection']}", []).append(min(times) if times else None)
    for what, values in sorted(by_what.items()):
        found = sorted(v for v in values if v is not None)
        print(f"  {what:<28} {len(found)}/{len(values)} found"
              + (f", TTD median {_fmt_s(statistics.median(found))}, max {_fmt_s(found[-1])}" if found else ""))
    print_pages(report.get("pages") or {}, days)

    print("\nwindows (detector: time to detect; a miss shows what the data did):")
    for lab, w in zip(sc.labels, windows):
        seg = ",".join(f"{k}={v}" for k, v in w["segment"].items() if k != "app") or "(whole app)"
        found = ", ".join(f"{d} {_fmt_s(x['ttd_s'])}" for d, x in w["detected_by"].items()) or "MISSED"
        print(f"  {w['start'][:16]}  {w['kind']:<20} {seg}")
        print(f"      {lab['note']}  ->  {found}")
        if not w["detected_by"]:
            print(f"      data: {window_facts(sc, lab, prices)}")
    print(f"\nfalse alarms ({len(report['false_alarms'])}):")
    for fa in report["false_alarms"]:
        seg = ",".join(f"{k}={v}" for k, v in fa["segment"].items() if k != "app")
        print(f"  {fa['detected_at'][:19]}  {fa['detector']:<20} {seg:<40} {fa['summary'][:140]}")
    if report.get("related"):
        print(f"\nrelated triggers ({len(report['related'])}: on another kind's window, not counted):")
        for r in report["related"]:
            print(f"  {r['detected_at'][:19]}  {r['detector']:<20} {r['summary'][:120]}")
    return summary


def print_pages(pg: dict, days: float) -> None:
    """``report["pages"]``: what on-call would have been woken for."""
    if not pg:
        return
    per = pg.get("pages_per_incident")
    print(f"\npages: {pg['pages']} problems paged; {pg['incidents_paged']} of {pg['incidents']} incidents paged, "
          f"{'-' if per is None else f'{per:.2f}'} pages per incident paged (max {pg['max_pages_per_incident']}); "
          f"{pg['false_pages']} false pages ({pg['false_pages'] / days:.2f}/day); first page after "
          f"{_fmt_s(pg['time_to_first_page_median_s'])} (median), {_fmt_s(pg['time_to_first_page_max_s'])} (max)")


if __name__ == "__main__":
    sys.exit(main())
