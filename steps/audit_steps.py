"""The audit log."""
from behave import then

from support.assertions import expect_true


def actor_of(context, words: str) -> tuple[str, str | None]:
    """'the platform' -> an admin token; 'the key "ci"' -> that API key; a name -> that person."""
    if words == "the platform":
        return "admin", None
    if words.startswith('the key "'):
        return "api_key", context.world.key(words.split('"')[1]).id
    return "user", context.world.person(words).user_id


@then('the audit log of "{org}" shows, each with the request id the suite sent:')
def audit_shows(context, org):
    events = context.platform.audit(org)
    sent = {e.request_id: e for e in context.api.exchanges}
    for row in context.table:
        actor_type, actor_id = actor_of(context, row["actor"])
        matches = [e for e in events if e["action"] == row["action"] and e["outcome"] == row["outcome"]
                   and e["actor"]["type"] == actor_type and (actor_id is None or e["actor"]["id"] == actor_id)]
        expect_true(bool(matches), f"Expected an audit event {row['action']} by {row['actor']} with outcome "
                    f"{row['outcome']} in {org!r}, but the log held: "
                    f"{[(e['action'], e['actor'], e['outcome']) for e in events]}")
        foreign = [m["request_id"] for m in matches if m["request_id"] not in sent]
        expect_true(not foreign, f"Expected the {row['action']} event to carry a request id the suite sent, but it "
                    f"carried {foreign}; the suite sent {sorted(sent)}")
