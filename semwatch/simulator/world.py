"""The simulated world's fixed facts: models and their prices, the four apps, their routes, the tenants."""

from __future__ import annotations

from typing import NamedTuple

#: USD per one million tokens, ``model: (input, output)``; list prices as published by providers.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "o1": (15.00, 60.00),
    "o3-mini": (1.10, 4.40),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-opus": (15.00, 75.00),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-1.5-pro": (1.25, 5.00),
}


class ModelTraits(NamedTuple):
    first_token_s: float  # median time to first token
    tokens_per_s: float  # output speed
    verbosity: float  # output length relative to the route's median
    hidden_output: float  # output multiplier for hidden reasoning tokens
    context_window: int

    @property
    def output_factor(self) -> float:
        """How many output tokens this model bills per token of a typical answer."""
        return self.verbosity * self.hidden_output


MODELS: dict[str, ModelTraits] = {
    "gpt-4o-mini": ModelTraits(0.35, 85.0, 1.00, 1.0, 128_000),
    "gpt-4.1-nano": ModelTraits(0.30, 110.0, 0.90, 1.0, 1_000_000),
    "gpt-4.1-mini": ModelTraits(0.40, 80.0, 1.05, 1.0, 1_000_000),
    "gpt-4.1": ModelTraits(0.55, 60.0, 1.10, 1.0, 1_000_000),
    "gpt-4o": ModelTraits(0.50, 60.0, 1.05, 1.0, 128_000),
    "gpt-4o-2024-08-06": ModelTraits(0.50, 60.0, 1.05, 1.0, 128_000),
    "gpt-4o-2024-11-20": ModelTraits(0.50, 65.0, 1.10, 1.0, 128_000),
    "o1": ModelTraits(9.00, 45.0, 1.00, 4.5, 200_000),
    "o3-mini": ModelTraits(3.50, 90.0, 1.00, 2.5, 200_000),
    "claude-3-haiku": ModelTraits(0.40, 100.0, 1.05, 1.0, 200_000),
    "claude-3-5-haiku": ModelTraits(0.55, 60.0, 1.15, 1.0, 200_000),
    "claude-3-5-sonnet": ModelTraits(0.80, 55.0, 1.20, 1.0, 200_000),
    "claude-3-7-sonnet": ModelTraits(0.85, 55.0, 1.25, 1.0, 200_000),
    "claude-3-opus": ModelTraits(1.60, 25.0, 1.25, 1.0, 200_000),
    "gemini-2.0-flash": ModelTraits(0.30, 150.0, 0.95, 1.0, 1_000_000),
    "gemini-1.5-pro": ModelTraits(0.90, 55.0, 1.05, 1.0, 2_000_000),
}

#: Benign swaps: a model may be replaced by one of these (similar price tier, 0.4x-2.7x).
BENIGN_SWAPS: dict[str, list[str]] = {
    "gpt-4o-mini": ["gemini-2.0-flash", "gpt-4.1-nano", "gpt-4.1-mini"],
    "gpt-4.1-nano": ["gpt-4o-mini"],
    "gpt-4.1-mini": ["gpt-4o-mini", "claude-3-5-haiku"],
    "gemini-2.0-flash": ["gpt-4o-mini", "gpt-4.1-nano"],
    "claude-3-5-haiku": ["gpt-4.1-mini", "claude-3-haiku"],
    "claude-3-haiku": ["claude-3-5-haiku"],
    "gpt-4o": ["gpt-4.1", "gpt-4o-2024-11-20"],
    "gpt-4o-2024-08-06": ["gpt-4o-2024-11-20", "gpt-4.1"],
    "gpt-4o-2024-11-20": ["gpt-4.1"],
    "gpt-4.1": ["gpt-4o"],
    "claude-3-5-sonnet": ["claude-3-7-sonnet"],
    "claude-3-7-sonnet": ["claude-3-5-sonnet"],
}
#: What a cost spike may switch a route to.
EXPENSIVE_MODELS = ["gpt-4o", "gpt-4.1", "claude-3-5-sonnet", "claude-3-opus", "o1", "gemini-1.5-pro"]

PROVIDERS = ["openai", "anthropic", "gcp.gemini", "aws.bedrock", "azure.ai.openai"]


def blended_price(model: str) -> float:
    """USD per 1M tokens of a chat-like mix: ~10 input tokens per output token."""
    pin, pout = PRICES[model]
    return (10.0 * pin + pout) / 11.0


def provider_for(model: str, current: str | None = None) -> str:
    """Who serves ``model``; a route keeps its ``current`` provider when that one offers the model."""
    if model.startswith("claude"):
        return current if current in ("anthropic", "aws.bedrock") else "anthropic"
    if model.startswith("gemini"):
        return "gcp.gemini"
    return current if current in ("openai", "azure.ai.openai") else "openai"


class AppShape(NamedTuple):
    share: float  # fraction of weekday events
    peak: float  # UTC hour of the daily peak
    night: float  # floor of the daily curve relative to the peak
    sharp: float  # how narrow the daily peak is (exponent of the cosine curve)
    weekend: float  # weekend multiplier
    events_per_arrival: float  # mean events per chat session or agent run, measured on this simulator


APPS: dict[str, AppShape] = {
    "support-bot": AppShape(share=0.42, peak=16.0, night=0.16, sharp=1.3, weekend=0.80, events_per_arrival=1.76),
    "order-agent": AppShape(share=0.30, peak=18.5, night=0.12, sharp=1.2, weekend=0.95, events_per_arrival=2.52),
    "research-agent": AppShape(share=0.12, peak=14.0, night=0.10, sharp=1.8, weekend=0.45, events_per_arrival=10.1),
    "code-assistant": AppShape(share=0.16, peak=15.0, night=0.05, sharp=2.2, weekend=0.35, events_per_arrival=1.52),
}
APP_NAMES = list(APPS)


class RouteSpec(NamedTuple):
    app: str
    name: str
    weight: float  # share of the app's traffic
    model: str
    provider: str
    prompt_version: int
    system_tokens: int
    refusal_rate: float  # base rate at which ordinary requests are refused
    output_median: int  # median output tokens


ROUTE_SPECS = [
    RouteSpec("support-bot", "billing", 0.30, "claude-3-5-haiku", "anthropic", 12, 1150, 0.018, 150),
    RouteSpec("support-bot", "shipping", 0.30, "gpt-4o-mini", "openai", 7, 900, 0.010, 120),
    RouteSpec("support-bot", "general", 0.25, "gpt-4o-mini", "azure.ai.openai", 21, 780, 0.022, 110),
    RouteSpec("support-bot", "returns", 0.15, "gemini-2.0-flash", "gcp.gemini", 4, 950, 0.014, 130),
    RouteSpec("order-agent", "order-support", 0.65, "gpt-4o-2024-08-06", "openai", 9, 1900, 0.006, 120),
    RouteSpec("order-agent", "refunds", 0.35, "claude-3-5-sonnet", "aws.bedrock", 3, 2300, 0.006, 140),
    RouteSpec("research-agent", "web-research", 0.60, "gpt-4o", "openai", 15, 1400, 0.004, 1800),
    RouteSpec("research-agent", "deep-research", 0.40, "claude-3-5-sonnet", "anthropic", 5, 2100, 0.004, 2600),
    RouteSpec("code-assistant", "completion", 0.50, "gpt-4o-mini", "openai", 31, 600, 0.003, 320),
    RouteSpec("code-assistant", "chat", 0.35, "claude-3-5-sonnet", "anthropic", 8, 1300, 0.004, 900),
    RouteSpec("code-assistant", "review", 0.15, "gpt-4o", "openai", 3, 1000, 0.003, 520),
]


class QuietRoute(NamedTuple):
    """A support-bot route with traffic of its own, outside the app's split (see quiet.py)."""

    spec: RouteSpec  # spec.weight is unused
    day_per_min: float  # requests (chat turns) a minute, 10-20 UTC on a weekday; lower at night
    spike_rate: float  # share of ordinary requests a bad prompt rollout refuses


QUIET_ROUTES = [
    QuietRoute(RouteSpec("support-bot", "warranty", 0.0, "gpt-4o-mini", "openai", 3, 820, 0.018, 130), 1.0, 0.40),
    QuietRoute(RouteSpec("support-bot", "accessibility", 0.0, "claude-3-5-haiku", "anthropic", 2, 1040, 0.015, 140),
               3.0, 0.12),
]

TENANTS = [
    "acme-corp", "globex", "initech", "umbrella-retail", "hooli", "stark-logistics", "wayne-fin",
    "wonka-foods", "soylent", "cyberdyne", "tyrell", "oscorp", "vandelay-imports", "dunder-paper",
    "pied-piper", "massive-dynamic", "aperture-labs", "black-mesa", "monarch-air", "gringotts",
]
#: Tenants' traffic follows a Zipf law with this exponent.
TENANT_ZIPF_S = 1.15


def uses_app(tenant_rank: int, app: str) -> bool:
    """Small tenants do not use every app (``tenant_rank`` counts from 0, largest first)."""
    if app == "code-assistant":
        return tenant_rank % 3 != 2
    if app == "research-agent":
        return tenant_rank % 4 != 3
    return True
