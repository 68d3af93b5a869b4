"""The checked-in OpenAPI document (docs/openapi.json) is the gateway's API as it is now."""
from tools import openapi


def test_the_checked_in_openapi_document_matches_the_gateway():
    difference = openapi.out_of_date()
    assert difference is None, (
        f"docs/openapi.json is out of date: run {openapi.REGENERATE} ({difference})")


def test_the_document_is_written_the_same_way_every_time():
    document = openapi.generate()
    assert openapi.render(document) == openapi.render(openapi.generate())
    assert openapi.render(document).endswith("}\n")


def test_a_difference_is_summarized_in_one_line():
    current = openapi.generate()
    older = {**current, "paths": {p: v for p, v in current["paths"].items() if p != "/healthz"}}
    summary = openapi.summarize(older, current)
    assert summary == "operations added: GET /healthz", summary
    assert "\n" not in summary
