"""The Faust codec of papertape messages: any schema model to JSON bytes (pydantic's Rust core) and back,
recognised by its `kind`. Agents read their inputs raw so a bad message can go to the dead-letter topic with
its reason; they write through this codec."""
from __future__ import annotations

from typing import Annotated, Any, Union

from faust.serializers import codecs
from pydantic import BaseModel, Field, TypeAdapter

import schemas as s

ANY_MESSAGE = TypeAdapter(Annotated[Union[s.MarketBatch, s.MarketFrame, s.Watermark, s.TickBatch, s.Mark, s.Signal,
                                          s.Order,
                                          s.CancelOrder, s.AmendOrder, s.OrderEvent, s.Fill, s.Funding, s.Position,
                                          s.Equity, s.Decision, s.Alert, s.Control, s.SessionStatus, s.DeadLetter],
                                    Field(discriminator="kind")])


class PapertapeCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, BaseModel):
            raise TypeError(f"papertape codec encodes schema models, not {type(obj).__name__}")
        return s.encode(obj)

    def _loads(self, data: bytes) -> Any:
        return ANY_MESSAGE.validate_json(data)


codecs.register("papertape", PapertapeCodec())
