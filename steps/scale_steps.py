"""A deployment of several gateway processes (workers, replicas behind a load balancer) keeps every limit as one
gateway would: bursts spread over the processes, a retry on another process, a hold every process may expire, a
key revoked everywhere at once, a replica killed under traffic."""
from behave import given, then, when


@then("the burst reached more than one gateway process")
def burst_spread(context):
    context.state.scale_out.expect_burst_spread()


@then("exactly {served:d} completions are answered and the other {refused:d} are refused as rate limited")
def rate_limited_exactly(context, served, refused):
    context.state.scale_out.expect_rate_limited_exactly(served, refused)


@when('the key "{key}" retries with the idempotency key "{words}" until another gateway process answers')
def retries_elsewhere(context, key, words):
    state = context.state
    state.world.last.answer = state.scale_out.retry_elsewhere(key, words)


@then("a retry was answered by another gateway process than the first request, and every retry as a replay")
def retry_elsewhere(context):
    context.state.scale_out.expect_retry_elsewhere()


@when("the reservation's time runs out while every gateway process reads the account")
def expires_while_read(context):
    state = context.state
    state.world.last.answer = state.scale_out.read_until_expired(state.world.reservation())


@then("the ledger holds the reservation's hold once and its expiry once")
def expired_once(context):
    state = context.state
    state.scale_out.expect_expired_once(state.world.reservation(), state.world.last.answer)


@then("the reads reached more than one gateway process")
def reads_spread(context):
    context.state.scale_out.expect_reads_spread()


@given('the key "{key}" has been accepted by every gateway process')
def accepted_everywhere(context, key):
    context.state.scale_out.accepted_everywhere(key)


@then('every gateway process refuses the key "{key}" as unauthenticated from then on')
def refused_everywhere(context, key):
    context.state.scale_out.expect_refused_everywhere(key)


@given('the key "{key}" is sending chat completions to "{model}" without pause, through the load balancer')
def steady_traffic(context, key, model):
    context.state.scale_out.start_traffic(key, model)


@when("one gateway replica is killed")
def replica_killed(context):
    context.state.scale_out.kill_replica()


@then("every request sent after it died was answered by a replica still running")
def served_after(context):
    context.state.scale_out.expect_served_after_the_kill()


@then("only requests in flight when it died went unanswered")
def losses_within(context):
    context.state.scale_out.expect_losses_within_the_kill()


@then('"{org}" was charged exactly once for each answered completion, and nothing twice')
def charged_once_each(context, org):
    context.state.scale_out.expect_charged_at_most_once(org)
