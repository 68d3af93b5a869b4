"""Typed placeholders for step patterns, so a step about "Rita" cannot swallow a longer sentence by accident.

Importing this module registers them with behave: {name:Name} a person's name (one capitalised word),
{pronoun:Pronoun} her/his/their, {self:Reflexive} herself/himself/themself, {subject:Subject} she/he/they,
{role:Role} an org role, {api:Api} the platform API or the model API, {backend:Backend} a backend's one-word name
("primary", so "the model's primary" never matches), {status:Settled} a reservation's status after a call and
{status:Expired} "expired".
"""
import parse
from behave import register_type

PATTERNS = {
    "Name": r"[A-Z][a-z]+",
    "Pronoun": r"her|his|their",
    "Reflexive": r"herself|himself|themself|themselves",
    "Subject": r"she|he|they",
    "Role": r"viewer|member|admin|owner",
    "Api": r"the platform API|the model API",
    "Backend": r"[a-z][a-z-]*",
    "Settled": r"pending|finalized|released",
    "Expired": r"expired",
}


def _words(pattern: str):
    @parse.with_pattern(pattern)
    def convert(text):
        return text
    return convert


register_type(**{name: _words(pattern) for name, pattern in PATTERNS.items()})
