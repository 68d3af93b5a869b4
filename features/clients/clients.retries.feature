@allure.label.epic:Clients @needs_database @needs_stub_control
Feature: A retried completion is charged once
  Clients retry a completion when its answer does not arrive in time. A retry that carries the first request's
  Idempotency-Key gets the first answer again without another backend call or charge. The same key with another
  request is refused, a retry while the first is still running is told to wait, and keys belong to one org.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: A retry of a finished completion replays its answer

    Scenario: A completion retried with its key is answered again and charged once
      Given the key "ci" has asked "chat-basic" for a chat completion with the idempotency key "q-1"
      When the key "ci" asks again with the idempotency key "q-1"
      Then the retry is answered exactly like the first
      And the model's primary backend received the request once
      And "Acme" was charged once, exactly the completion's usage at the model's price

    Scenario: A streamed completion retried with its key is answered again and charged once
      Given the key "ci" has streamed a chat completion from "chat-basic" with the idempotency key "s-1"
      When the key "ci" streams again with the idempotency key "s-1"
      Then the retried stream says what the first said
      And the model's primary backend received the request once
      And "Acme" was charged once, exactly the completion's usage at the model's price

  Rule: A key means one request of one org

    Scenario: A key reused for a different completion is refused
      Given the key "ci" has asked "chat-basic" for a chat completion with the idempotency key "q-1"
      When the key "ci" asks "chat-basic" something else with the idempotency key "q-1"
      Then the request is refused because the key was already used for another request
      And the model's primary backend received the request once

    Scenario: A retry while the first completion is still running is told to try again later
      Given the primary backend answers only after a long pause
      And the key "ci" has started a chat completion from "chat-basic" with the idempotency key "q-1"
      When the key "ci" asks again with the idempotency key "q-1"
      Then the retry is refused because the first request is still in progress
      And "Acme" was charged once, exactly the completion's usage at the model's price, once the first is answered

    Scenario: Another org's request with the same key is its own request
      Given the org "Globex" with its owner "Gina" and 5.00 USD of credit
      And "Globex" calls models with the API key "gx"
      And the key "ci" has asked "chat-basic" for a chat completion with the idempotency key "q-1"
      When the key "gx" asks "chat-basic" for a chat completion with the idempotency key "q-1"
      Then the completion is answered by the model's primary backend
      And "Globex" was charged once, exactly the completion's usage at the model's price
