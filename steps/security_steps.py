"""The gateway attacked: credential guessing, invitations, removed members' reach, secrets at rest, in caches and
logs, bounded service tokens, and floods of refused requests beside an org's traffic (features/security)."""
from behave import given, then, when

from support.client import evidence
from support.client.assertions import expect_equal, expect_status, expect_true
from support.domain.identity import expect_unauthenticated
from support.harness import step_types  # noqa: F401  (registers {name:Name}, {pronoun:Pronoun}, ...)


# ---- guessing credentials --------------------------------------------------------------------------------------

@when("an attacker guesses {name:Name}'s password {count:d} times")
def guesses_password(context, name, count):
    context.state.attacker.guess_password(name, count)


@when("an attacker tries one password on {count:d} accounts from one client address")
def sprays(context, count):
    context.state.attacker.spray(count)


@then("the attacker is refused as trying too often before the {limit:d}th try, and told when to retry")
def refused_before(context, limit):
    context.state.attacker.expect_throttled_before(limit)


@then("while that lasts even {name:Name}'s own password is refused as trying too often")
def own_password_waits(context, name):
    state = context.state
    answer = state.attacker.login_from_attacker(name)
    state.world.attacks.tries.append(answer)
    expect_status(answer, 429, f"{name}'s own password from the attacker's address while the account is throttled")


@then("the attacker's refused tries leave one audit event, not one per try")
def one_event_per_burst(context):
    attacker = context.state.attacker
    attacker.expect_one_event_for(attacker.expect_throttled_before(len(context.state.world.attacks.tries)))


@then("{name:Name}, logging in from another address, is served")
def served_elsewhere(context, name):
    expect_status(context.state.attacker.login_from_elsewhere(name), 200, f"{name} logging in from another address")


# ---- invitations -----------------------------------------------------------------------------------------------

@given('{inviter:Name} holds an invitation to "{org}" for {name:Name}\'s email')
def holds_invitation(context, inviter, org, name):
    context.state.attacker.hold_invitation_for(inviter, org, name)


@when("{name:Name} tries {count:d} passwords on that invitation")
def tries_passwords(context, name, count):
    context.state.attacker.try_held_invitation(count)


@then('no refusal names {name:Name}, her email or "{org}", or says that she has an account')
def says_nothing(context, name, org):
    context.state.attacker.expect_tries_say_nothing_about(name, org)


@then("the invitation is used up, so that even {name:Name}'s own password no longer accepts it")
def used_up(context, name):
    attacker = context.state.attacker
    attacker.expect_refusal_words(attacker.accept_held_invitation_as(name), 410,
                                  f"{name}'s own password on the invitation once wrong ones used it up", "no longer")


@then('{name:Name} is not a member of "{org}"')
def not_a_member(context, name, org):
    context.state.attacker.expect_not_a_member(name, org)


@given('{inviter:Name} has invited {name:Name} to "{org}" as an {role:Role}')
def has_invited_as_an(context, inviter, name, org, role):
    expect_status(context.state.platform.invite(inviter, org, name, role), 201, f"{inviter} inviting {name} as {role}")


@when('{actor:Name} revokes {name:Name}\'s invitation to "{org}"')
def revokes(context, actor, name, org):
    context.state.attacker.revoke_invitation(actor, org, name)


@then('the invitations of "{org}" show {name:Name}\'s as revoked, without its token')
def listed_revoked(context, org, name):
    attacker = context.state.attacker
    listed, answer = attacker.invitation_listed(attacker.platform.owner_of(org), org, name)
    expect_equal(listed.get("state"), "revoked", f"the state of {name}'s invitation", answer)
    expect_true(attacker.invitation_of(name) not in answer.text, f"Expected the list of invitations to hold no "
                f"token, but it holds {name}'s", answer)


@then("{name:Name}'s invitation no longer works")
def invitation_dead(context, name):
    attacker = context.state.attacker
    attacker.expect_refusal_words(attacker.try_invitation(name), 410, f"accepting {name}'s invitation once it should "
                                  f"no longer work", "no longer")


# ---- removing a member -----------------------------------------------------------------------------------------

@when('{actor:Name} removes {name:Name} from "{org}"')
def removes(context, actor, name, org):
    state = context.state
    state.world.attacks.removal = state.attacker.remove(actor, org, name)


@given('{actor:Name} has removed {name:Name} from "{org}"')
def has_removed(context, actor, name, org):
    state = context.state
    state.world.attacks.removal = state.attacker.remove(actor, org, name)
    state.attacker.expect_not_a_member(name, org, state.world.attacks.removal)


@then('the audit log of "{org}" shows {name:Name}\'s removal revoking {invitee:Name}\'s invitation')
def removal_audited(context, org, name, invitee):
    state = context.state
    removal = state.world.attacks.removal
    events, read = state.identity.org_audit_for(org, removal.request_id)
    expect_true(len(events) == 1 and events[0].get("action") == "members.remove", f"Expected one members.remove "
                f"event for the removal of {name} (request id {removal.request_id}), but found {events}", read)
    listed, _ = state.attacker.invitation_listed(state.platform.owner_of(org), org, invitee)
    revoked = (events[0].get("details") or {}).get("revoked_invitations") or []
    expect_true(listed["id"] in revoked, f"Expected the removal's event to name {invitee}'s invitation "
                f"{listed['id']} among those it revoked, but it names {revoked}", read)


@then('{name:Name}\'s new access token is answered about "{org}" exactly as about an org that does not exist')
def no_longer_reaches(context, name, org):
    state = context.state
    token = state.world.person(name).access_token
    real = state.api.get(f"/orgs/{state.world.org(org).slug}", token=token)
    missing = state.api.get(f"/orgs/{state.ns.slug('Nowhere')}", token=token)
    expect_status(real, 404, f"{name}'s refreshed token asking for {org!r}")
    expect_equal(real.json().get("code"), missing.json().get("code"), "the refusal's code (it must not differ from "
                 f"the one for an org that does not exist [request id {missing.request_id}])", real)


# ---- secrets at rest, in answers and in logs --------------------------------------------------------------------

@when("the platform publishes a signing key of its own making")
def publishes_own_key(context):
    state = context.state
    state.attacker.publish_signing_key(state.add_cleanup)


@then("no table of the gateway's database holds a private signing key in the clear")
def no_clear_keys(context):
    found = context.state.attacker.private_keys_in_the_clear()
    expect_true(not found, f"Expected no private signing key in the clear in the gateway's database, but found one "
                f"in {found}")


@when('{name:Name} logs in, creates an API key and invites {invitee:Name} to "{org}"')
def answers_with_secrets(context, name, invitee, org):
    state = context.state
    answers = state.world.attacks.answers
    answers.append(state.platform.login(name))
    answers.append(expect_status(state.platform.issue_key(name, org, "ci"), 201, f"{name} creating an API key"))
    answers.append(expect_status(state.platform.invite(name, org, invitee, "member"), 201, f"{name} inviting"))


@then("none of those answers may be kept by a cache or sniffed as another content type")
def never_cached(context):
    context.state.attacker.expect_never_cached(context.state.world.attacks.answers)


@then("the gateway's logs hold none of the secrets this scenario handled")
def logs_clean(context):
    state = context.state
    if not any("gateway" in name for name in state.stack.logs(1)):
        context.scenario.skip("this stack shows no gateway logs: pass -D logs_dir=... for an external stack")
        return
    seen = type(state.run.secrets_seen)()
    seen.remember(state.api.exchanges)
    seen.search(state.stack)


@then('the token is refused as unauthenticated, the gateway saying "{why}"')
def token_refused(context, why):
    expect_unauthenticated(context.state.world.answer(), "a flawed service or admin token", why)


# ---- floods ----------------------------------------------------------------------------------------------------

@when('attackers from {addresses:d} addresses send {total:d} {flood} while the key "{key}" keeps asking '
      '"{model}" for completions')
def flood_beside_traffic(context, addresses, total, flood, key, model):
    send_flood(context, addresses, total, flood, key, model, outgrow_budget=False)


@when('attackers from {addresses:d} addresses send at least {total:d} {flood} while the key "{key}" keeps asking '
      '"{model}" for completions')
def flood_outgrowing_the_audit_budget(context, addresses, total, flood, key, model):
    send_flood(context, addresses, total, flood, key, model, outgrow_budget=True)


def send_flood(context, addresses, total, flood, key, model, outgrow_budget):
    state = context.state
    figures = state.floods.run(flood, total=total, addresses=addresses, key_secret=state.world.key(key).secret,
                               model=state.routing.served_as(model), outgrow_budget=outgrow_budget)
    state.world.attacks.flood = figures.as_report()
    evidence.attach_json(f"flood of {flood}: figures", state.world.attacks.flood)
    state.floods.keep(figures)


@then("every request of the flood was refused or answered without a server error")
def flood_no_5xx(context):
    figures = context.state.world.attacks.flood
    bad = {status: n for status, n in figures["flood_statuses"].items() if not isinstance(status, int) or status >= 500}
    expect_true(not bad, f"Expected no server error and no dropped connection in the flood, but saw {bad} "
                f"(all answers: {figures['flood_statuses']})")


@then('every completion "{org}" asked for meanwhile was answered, the slowest 1% within {seconds:g} seconds')
def normal_traffic_served(context, org, seconds):
    figures = context.state.world.attacks.flood
    expect_true(figures["normal_sent"] > 0 and figures["normal_statuses"] == {200: figures["normal_sent"]},
                f"Expected every one of {org}'s {figures['normal_sent']} completions during the flood to be answered "
                f"200, but they were answered {figures['normal_statuses']}")
    expect_true(figures["normal_p99_ms"] <= seconds * 1000, f"Expected the 99th percentile of {org}'s completions "
                f"during the flood to be within {seconds:g} s, but it was {figures['normal_p99_ms']} ms (figures: "
                f"{figures})")


@then("the flood grew the audit log by no more than the sampling budget allows")
def audit_within_budget(context):
    figures = context.state.world.attacks.flood
    expect_true(figures["audit_events"] <= figures["audit_allowed"], f"Expected the flood of {figures['sent']} "
                f"requests from {figures['addresses']} addresses to write at most {figures['audit_allowed']} audit "
                f"events ({figures['windows']} sampling windows), but it wrote {figures['audit_events']} (request "
                f"ids {figures['request_ids']})")
    # A flood slow enough to span that many windows could not tell sampling from auditing every refusal.
    expect_true(figures["audit_allowed"] < figures["sent"], f"Expected the flood of {figures['sent']} requests to "
                f"outgrow the sampling budget, but it lasted {figures['seconds']} s, {figures['windows']} sampling "
                f"windows, whose budget allows {figures['audit_allowed']} audit events: too slow to show sampling "
                f"(request ids {figures['request_ids']})")


@then("the flood left no audit event")
def flood_unaudited(context):
    figures = context.state.world.attacks.flood
    expect_true(figures["audit_events"] == 0, f"Expected the flood of {figures['sent']} requests to leave no audit "
                f"event, but it left {figures['audit_events']} (request ids {figures['request_ids']})")


@then("each address had all but its first {allowed:d} logins refused as trying too often, and was told when to "
      "retry")
def flood_throttled(context, allowed):
    figures = context.state.world.attacks.flood
    untold = [sent - told for sent, told in zip(figures["sent_by_address"], figures["told_to_retry_by_address"])]
    expect_true(max(untold) <= allowed, f"Expected each of the {figures['addresses']} addresses to have all but its "
                f"first {allowed} logins refused 429 with a Retry-After, but from each address "
                f"{figures['sent_by_address']} were sent and {untold} were not (all answers: "
                f"{figures['flood_statuses']}; request ids {figures['request_ids']})")
