"""Roles in an org: what each may do, escalation attempts, mass assignment and the last owner."""
from behave import given, then, when

from support.client.assertions import expect_equal, expect_status, expect_true, problem_field
from support.domain.roles import action, smuggle
from support.harness import step_types  # noqa: F401  (registers {name:Name}, {role:Role}, ...)
from support.harness.world import Attempt

OUTCOMES = ("allowed", "denied")


@given('{name:Name} is a {role:Role} of "{org}"')
@given('{name:Name} is an {role:Role} of "{org}"')
@given('{name:Name} has the role {role:Role} in "{org}"')
def is_role(context, name, role, org):
    context.state.platform.add_member(org, name, role)


@given('{owner:Name} has invited {name:Name} to "{org}" as a {role:Role}')
def has_invited(context, owner, name, org, role):
    expect_status(context.state.platform.invite(owner, org, name, role), 201, f"{owner} inviting {name} as {role}")


# ---- the role matrix -----------------------------------------------------------------------------------------

@when('{name:Name} tries to {attempt} in "{org}"')
@given('{name:Name} has tried to {attempt} in "{org}"')
def tries(context, name, attempt, org):
    state = context.state
    chosen = action(attempt)
    chosen.prepare(state.identity, org)
    state.world.attempt = Attempt(name, chosen, org)
    state.world.last.answer = chosen.attempt(state.identity, name, org)


@then("{name:Name}'s attempt is {outcome}")
def attempt_is(context, name, outcome):
    expect_true(outcome in OUTCOMES, f"The outcome {outcome!r} is neither of {OUTCOMES}")
    world = context.state.world
    chosen, org, exchange = world.attempt.action, world.attempt.org, world.answer()
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
    state = context.state
    identity, world = state.identity, state.world
    chosen, exchange = world.attempt.action, world.answer()
    actor = ("user", identity.user_id(name))
    if exchange.status == 403:
        aimed_at = [world.org(org).slug] + [p.user_id for p in world.people.values() if p.user_id]
        identity.expect_denial_audited(exchange, org_name=org, actor=actor, action=chosen.audit_action,
                                       target_mentions=aimed_at)
    elif chosen.mutation:
        identity.expect_change_audited(exchange, org_name=org, actor=actor, action=chosen.audit_action)
    else:
        identity.expect_nothing_denied(exchange, org_name=org)


@then('{name:Name} still has the role {role:Role} in "{org}" and {owner:Name} still owns it')
def roles_unchanged(context, name, role, org, owner):
    state = context.state
    members = state.identity.members(org)
    expected = {state.world.person(name).email: role, state.world.person(owner).email: "owner"}
    actual = {email: members.get(email) for email in expected}
    expect_equal(actual, expected, f"the roles of {name} and {owner} in {org!r} after the refused attempt")


# ---- mass assignment -----------------------------------------------------------------------------------------

@when('{name:Name} accepts {pronoun:Pronoun} invitation claiming the role "{role}"')
def accepts_claiming(context, name, pronoun, role):
    state = context.state
    state.world.last.answer = state.platform.invitation_acceptance(name, role=role)


@when('{name:Name} sends a request for {request} with the extra field "{field}"')
def sends_with_extra(context, name, request, field):
    state = context.state
    state.world.last.answer = smuggle(request, state.identity, name, state.world.first_org().name, field)


@then('the request is refused as invalid, naming the field "{field}"')
def refused_invalid(context, field):
    answer = context.state.world.answer()
    expect_status(answer, 422, f"a request carrying the field {field!r}, which it does not take")
    detail = str(problem_field(answer, "detail") or "")
    expect_true(field in detail or problem_field(answer, "param") == field,
                f"Expected the refusal to name the field {field!r}, but it said {detail!r}", answer)


@then('{name:Name} can still accept {pronoun:Pronoun} invitation and becomes a {role:Role} of "{org}"')
def accepts_after(context, name, pronoun, role, org):
    state = context.state
    state.platform.accept_invitation(name)
    expect_equal(state.identity.role_of(org, name), role, f"{name}'s role in {org!r}")


# ---- the last owner ------------------------------------------------------------------------------------------

@when('{name:Name} tries to make {self:Reflexive} a {role:Role} of "{org}"')
def tries_demote_self(context, name, self, role, org):
    state = context.state
    state.world.last.answer = state.identity.change_role(name, org, name, role)


@when('{name:Name} makes {self:Reflexive} a {role:Role} of "{org}"')
def demotes_self(context, name, self, role, org):
    state = context.state
    state.world.last.answer = state.identity.change_role(name, org, name, role)
    expect_status(state.world.last.answer, 200, f"{name} making herself a {role} of {org!r}")


@when('{name:Name} tries to remove {self:Reflexive} from "{org}"')
def tries_leave(context, name, self, org):
    state = context.state
    state.world.last.answer = state.identity.remove_member(name, org, name)


def _refused_last_owner(exchange, name: str) -> None:
    expect_status(exchange, 409, f"{name}, the last owner, stepping down or leaving")
    expect_true("last owner" in str(problem_field(exchange, "detail") or ""),
                "Expected the refusal to say she is the last owner", exchange)


@then("{name:Name} is refused because {subject:Subject} is the last owner")
def refused_last_owner(context, name, subject):
    state = context.state
    answer = state.world.answer()
    _refused_last_owner(answer, name)
    state.identity.expect_denial_audited(answer, org_name=state.world.first_org().name,
                                         actor=("user", state.world.person(name).user_id))


@then('{name:Name} is still an {role:Role} of "{org}"')
def still_role(context, name, role, org):
    expect_equal(context.state.identity.role_of(org, name), role, f"{name}'s role in {org!r}")


@then('{name:Name} is a {role:Role} of "{org}" and {owner:Name} its owner')
def role_and_owner(context, name, role, org, owner):
    state = context.state
    members = state.identity.members(org, as_person=owner)
    expected = {state.world.person(name).email: role, state.world.person(owner).email: "owner"}
    expect_equal({e: members.get(e) for e in expected}, expected, f"the roles in {org!r}")


@when("{first:Name} and {second:Name} both step down to {role:Role} at the same moment")
def both_step_down(context, first, second, role):
    state = context.state
    org = state.world.first_org().name
    burst = state.at_once([state.identity.role_change_request(name, org, name, role) for name in (first, second)],
                          title=f"{first} and {second} stepping down to {role}")
    state.world.last.answers = dict(zip((first, second), burst.exchanges))


@then("exactly one of them is refused because she is the last owner")
def exactly_one_refused(context):
    answers = context.state.world.last.answers
    statuses = {name: exchange.status for name, exchange in answers.items()}
    expect_true(sorted(statuses.values()) == [200, 409], f"Expected one step-down to succeed (200) and the other "
                f"to be refused as the last owner (409), but they answered {statuses}; request ids "
                f"{[e.request_id for e in answers.values()]}")
    refused = next(e for e in answers.values() if e.status == 409)
    _refused_last_owner(refused, "the second owner")


@then('"{org}" still has exactly one owner')
def exactly_one_owner(context, org):
    state = context.state
    refused = next(name for name, e in state.world.last.answers.items() if e.status == 409)
    members = state.identity.members(org, as_person=refused)
    owners = [email for email, role in members.items() if role == "owner"]
    expect_equal(len(owners), 1, f"the number of owners of {org!r} (members: {members})")
