"""The base of every request body the gateway accepts: an unknown field is a 422 naming it, never ignored."""
from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
