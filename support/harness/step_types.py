"""Typed placeholders for step patterns, so a step about "Rita" cannot swallow a longer sentence by accident.

Importing this module registers them with behave: {name:Name} a person's name (one capitalised word),
{pronoun:Pronoun} her/his/their, {self:Reflexive} herself/himself/themself, {role:Role} an org role,
{api:Api} the platform API or the model API.
"""
import parse
from behave import register_type


@parse.with_pattern(r"[A-Z][a-z]+")
def _name(text):
    return text


@parse.with_pattern(r"her|his|their")
def _pronoun(text):
    return text


@parse.with_pattern(r"herself|himself|themself|themselves")
def _reflexive(text):
    return text


@parse.with_pattern(r"she|he|they")
def _subject(text):
    return text


@parse.with_pattern(r"viewer|member|admin|owner")
def _role(text):
    return text


@parse.with_pattern(r"the platform API|the model API")
def _api(text):
    return text


register_type(Api=_api, Name=_name, Pronoun=_pronoun, Reflexive=_reflexive, Subject=_subject, Role=_role)
