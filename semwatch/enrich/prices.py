"""Model prices (``config/prices.yaml``): the cost of events that carry no ``cost_usd``."""

from __future__ import annotations

import fnmatch
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from semwatch.contract import RunEvent


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class PriceTable(BaseModel):
    """USD per million tokens by model name; keys may be globs (``gpt-4o-mini*``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelPrice] = Field(default_factory=dict)
    default: Optional[ModelPrice] = None

    def price_for(self, model: str) -> Optional[ModelPrice]:
        price = self.models.get(model)
        if price is not None:
            return price
        # Longest matching glob wins, so that "gpt-4o-mini*" beats "gpt-4o*".
        best = None
        for pattern, p in self.models.items():
            if fnmatch.fnmatchcase(model, pattern) and (best is None or len(pattern) > len(best[0])):
                best = (pattern, p)
        return best[1] if best else self.default

    def cost(self, event: RunEvent) -> Optional[float]:
        if event.input_tokens is None and event.output_tokens is None:
            return None
        price = self.price_for(event.model)
        if price is None:
            return None
        return ((event.input_tokens or 0) * price.input_per_mtok
                + (event.output_tokens or 0) * price.output_per_mtok) / 1e6


class Pricing:
    """Enrichment step: ``cost_usd`` from the price table when the producer sent none."""

    name = "price"

    def __init__(self, table: PriceTable):
        self.table = table

    def fill(self, event: RunEvent) -> Optional[dict[str, Any]]:
        if event.cost_usd is not None:
            return None
        cost = self.table.cost(event)
        return None if cost is None else {"cost_usd": cost}
