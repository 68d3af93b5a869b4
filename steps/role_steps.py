"""Roles in an org: what each may do, escalation attempts, mass assignment and the last owner."""
from behave import given, then, when

from support.harness import step_types  # noqa: F401  (registers {name:Name}, {role:Role}, ...)
from support.harness.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.identity import for_scenario
from support.domain.roles import action, smuggle

OUTCOMES = ("allowed", "denied")


@given('{name:Name} is a {role:Role} of "{org}"')
@given('{name:Name} is an {role:Role} of "{org}"')
@given('{name:Name} has the role {role:Role} in "{org}"')
def is_role(context, name, role, org):
    context.platform.add_member(org, name, role)


@given('{owner:Name} has invited {name:Name} to "{org}" as a {role:Role}')
def has_invited(context, owner, name, org, role):
    expect_status(context.platform.invite(owner, org, name, role), 201, f"{owner} inviting {name} as {role}")


# ---- the role matrix -----------------------------------------------------------------------------------------

@when('{name:Name} tries to {attempt} in "{org}"')
def tries(context, name, attempt, org):
    identity = for_scenario(context)
    chosen = action(attempt)
    chosen.prepare(identity, org)
    context.attempt = (name, chosen, org)
    context.response = chosen.attempt(identity, name, org)


@then("{name:Name}'s attempt is {outcome}")
def attempt_is(context, name, outcome):
    expect_true(outcome in OUTCOMES, f"The outcome {outcome!r} is neither of {OUTCOMES}")
    _, chosen, org = context.attempt
    exchange = context.response
    if outcome == "allowed":
        expect_true(exchange.status in chosen.allowed_statuses, f"Expected {name} to be allowed to "
                    f"{chosen.phrase} in {org!r} (an answer in {chosen.allowed_statuses}), but the answer was "
                    f"{exchange.status}", exchange)
        return
    expect_status(exchange, 403, f"{name} trying to {chosen.phrase} in {org!r}")
    expect_equal(problem_field(exchange, "code"), "forbidden", "the refusal's code", exchange)
    expect_true(bool(problem_field(exchange, "detail")), "Expected the refusal to say what was refused and why, but "
                "its message was empty", exchange)


@then('the audit log of "{org}" accounts for {name:Name}\'s attempt')
def audit_accounts(context, org, name):
    identity = for_scenario(context)
    _, chosen, _ = context.attempt
    exchange = context.response
    actor = ("user", identity.user_id(name))
    if exchange.status == 403:
        aimed_at = [context.world.org(org).slug] + [p.user_id for p in context.world.people.values() if p.user_id]
        identity.expect_denial_audited(exchange, org_name=org, actor=actor, action=chosen.audit_action,
                                       target_mentions=aimed_at)
    elif chosen.mutation:
        identity.expect_change_audited(exchange, org_name=org, actor=actor, action=chosen.audit_action)
    else:
        identity.expect_nothing_denied(exchange, org_name=org)


@then('{name:Name} still has the role {role:Role} in "{org}" and {owner:Name} still owns it')
def roles_unchanged(context, name, role, org, owner):
    members = for_scenario(context).members(org)
    expected = {context.world.person(name).email: role, context.world.person(owner).email: "owner"}
    actual = {email: members.get(email) for email in expected}
    expect_equal(actual, expected, f"the roles of {name} and {owner} in {org!r} after the refused attempt")


# ---- mass assignment -----------------------------------------------------------------------------------------

@when('{name:Name} accepts {pronoun:Pronoun} invitation claiming the role "{role}"')
def accepts_claiming(context, name, pronoun, role):
    person = context.platform.person(name)
    token = context.world.invitations[name]
    context.response = context.api.post(f"/invitations/{token}/accept",
                                        json_body={"name": name, "password": person.password, "role": role})


@when('{name:Name} sends a request for {request} with the extra field "{field}"')
def sends_with_extra(context, name, request, field):
    context.response = smuggle(request, for_scenario(context), name, next(iter(context.world.orgs)), field)


@then('the request is refused as invalid, naming the field "{field}"')
def refused_invalid(context, field):
    expect_status(context.response, 422, f"a request carrying the field {field!r}, which it does not take")
    detail = str(problem_field(context.response, "detail") or "")
    expect_true(field in detail or problem_field(context.response, "param") == field,
                f"Expected the refusal to name the field {field!r}, but it said {detail!r}", context.response)


@then('{name:Name} can still accept {pronoun:Pronoun} invitation and becomes a {role:Role} of "{org}"')
def accepts_after(context, name, pronoun, role, org):
    context.platform.accept_invitation(name)
    expect_equal(for_scenario(context).role_of(org, name), role, f"{name}'s role in {org!r}")


# ---- the last owner ------------------------------------------------------------------------------------------

@when('{name:Name} tries to make {self:Reflexive} a {role:Role} of "{org}"')
def tries_demote_self(context, name, self, role, org):
    context.response = for_scenario(context).change_role(name, org, name, role)


@when('{name:Name} makes {self:Reflexive} a {role:Role} of "{org}"')
def demotes_self(context, name, self, role, org):
    context.response = for_scenario(context).change_role(name, org, name, role)
    expect_status(context.response, 200, f"{name} making herself a {role} of {org!r}")


@when('{name:Name} tries to remove {self:Reflexive} from "{org}"')
def tries_leave(context, name, self, org):
    context.response = for_scenario(context).remove_member(name, org, name)


def _refused_last_owner(exchange, name: str) -> None:
    expect_status(exchange, 409, f"{name}, the last owner, stepping down or leaving")
    expect_true("last owner" in str(problem_field(exchange, "detail") or ""),
                "Expected the refusal to say she is the last owner", exchange)


@then("{name:Name} is refused because {subject:Subject} is the last owner")
def refused_last_owner(context, name, subject):
    _refused_last_owner(context.response, name)
    org = next(iter(context.world.orgs))
    for_scenario(context).expect_denial_audited(context.response, org_name=org,
                                                actor=("user", context.world.person(name).user_id))


@then('{name:Name} is still an {role:Role} of "{org}"')
def still_role(context, name, role, org):
    expect_equal(for_scenario(context).role_of(org, name), role, f"{name}'s role in {org!r}")


@then('{name:Name} is a {role:Role} of "{org}" and {owner:Name} its owner')
def role_and_owner(context, name, role, org, owner):
    members = for_scenario(context).members(org, as_person=owner)
    expected = {context.world.person(name).email: role, context.world.person(owner).email: "owner"}
    expect_equal({e: members.get(e) for e in expected}, expected, f"the roles in {org!r}")


@when("{first:Name} and {second:Name} both step down to {role:Role} at the same moment")
def both_step_down(context, first, second, role):
    identity = for_scenario(context)
    org = context.world.org(next(iter(context.world.orgs)))
    calls = []
    for name in (first, second):
        token, user_id = context.platform.access_token(name), identity.user_id(name)
        calls.append(lambda client, t=token, u=user_id: client.patch(f"/orgs/{org.slug}/members/{u}", token=t,
                                                                      json_body={"role": role}))
    context.responses = dict(zip((first, second), identity.at_once(*calls)))


@then("exactly one of them is refused because she is the last owner")
def exactly_one_refused(context):
    statuses = {name: exchange.status for name, exchange in context.responses.items()}
    expect_true(sorted(statuses.values()) == [200, 409], f"Expected one step-down to succeed (200) and the other "
                f"to be refused as the last owner (409), but they answered {statuses}; request ids "
                f"{[e.request_id for e in context.responses.values()]}")
    refused = next(e for e in context.responses.values() if e.status == 409)
    _refused_last_owner(refused, "the second owner")


@then('"{org}" still has exactly one owner')
def exactly_one_owner(context, org):
    members = for_scenario(context).members(org, as_person=next(
        name for name, e in context.responses.items() if e.status == 409))
    owners = [email for email, role in members.items() if role == "owner"]
    expect_equal(len(owners), 1, f"the number of owners of {org!r} (members: {members})")
