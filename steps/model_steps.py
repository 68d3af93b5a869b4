"""Models, their backends and chat traffic through the gateway."""
from behave import given, then, when

from support.assertions import expect_equal, expect_status
from support.model_backends import Backend
from support.money import micros
from support.seed import remove_model, seed_model


def declare_model(context, model: str, prompt_price: int, completion_price: int, backends: list[str]) -> None:
    """A model only this scenario uses, routed to this scenario's stub backends in the given order."""
    name = context.ns.name(model)
    routed = []
    context.model_backends = getattr(context, "model_backends", {})
    for backend_name in backends:
        backend = Backend(backend_name, context.ns.name(f"{model}-{backend_name}"))
        context.model_backends[backend_name] = backend
        routed.append({"name": backend_name, "url": backend.chat_url(context.backends.stub_url)})
        context.add_cleanup(context.backends.reset, backend)
    seed_model(context.db, name, prompt_price_per_1k=prompt_price, completion_price_per_1k=completion_price,
               backends=routed)
    context.add_cleanup(remove_model, context.db, name)
    context.world.models[model] = name
    context.model_prices = getattr(context, "model_prices", {})
    context.model_prices[model] = (prompt_price, completion_price)


@given('the model "{model}" costs {prompt} per 1k prompt tokens and {completion} per 1k completion tokens')
def model_with_price(context, model, prompt, completion):
    declare_model(context, model, micros(prompt), micros(completion), ["primary"])


@when('the key "{key}" asks "{model}" for a chat completion')
def key_asks_model(context, key, model):
    context.chat_model = model
    context.response = context.platform.chat(key, context.world.models.get(model, model))


@then("the completion is answered by the model's {backend} backend")
def answered_by(context, backend):
    expect_status(context.response, 200, "the chat completion")
    expect_equal(context.response.response_headers.get("X-Gateway-Backend"), backend,
                 "the backend named in X-Gateway-Backend", context.response)


@then('"{org}" has been charged exactly the completion\'s usage at the model\'s price')
def charged_exactly(context, org):
    usage = context.response.json()["usage"]
    prompt_price, completion_price = context.model_prices[context.chat_model]
    expected = -(-(usage["prompt_tokens"] * prompt_price + usage["completion_tokens"] * completion_price) // 1000)
    exchange = context.platform.usage(org)
    spent = exchange.json()["spent_micros"]
    expect_equal(spent, expected, f"the spend of {org!r} (usage {usage} at {prompt_price}/{completion_price} "
                 f"micro-USD per 1k tokens)", exchange)
