@allure.label.epic:Clients @needs_database
Feature: Applications built on the official OpenAI SDK
  Most applications reach a gateway through OpenAI's own Python SDK, pointed at the gateway's address with one of
  the org's API keys. Everything such an application does works as it does against OpenAI: listing models,
  completing, streaming with usage, and receiving the SDK's own error classes with messages that say what is
  wrong, including its automatic retries, which never charge twice.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And an application uses the OpenAI SDK with the API key "ci"

  Rule: What an application asks for works as it does against OpenAI

    Scenario: The application lists the models its org may use
      When the application lists the models
      Then "chat-basic" is among the models the application sees

    @needs_stub_control
    Scenario: The application gets a completion
      When the application asks "chat-basic" for a chat completion
      Then the application receives the model's answer with its usage
      And "Acme" was charged once, exactly the completion's usage at the model's price

    @needs_stub_control
    Scenario: The application streams a completion with its usage
      When the application streams a chat completion from "chat-basic", asking for its usage
      Then the application receives the answer in pieces that say what the whole answer says
      And the application receives the usage at the end of the stream
      And "Acme" was charged once, exactly the completion's usage at the model's price

  Rule: Failures reach the application as the SDK's own errors

    @needs_stub_control
    Scenario: A wrong API key is an authentication error
      Given an application uses the OpenAI SDK with an API key that does not exist
      When the application asks "chat-basic" for a chat completion
      Then the application receives the SDK's authentication error

    Scenario: A model that does not exist is a not-found error
      When the application asks "no-such-model" for a chat completion
      Then the application receives the SDK's not-found error

    @needs_stub_control
    Scenario: An org at its budget gets the budget's message
      Given the key "ci" has spent the whole budget of "Acme" on "chat-basic"
      When the application asks "chat-basic" for a chat completion
      Then the application receives the SDK's status error for payment required, naming "Acme" and its limit

    @needs_stub_control
    Scenario: A rate-limited application is told when to retry, and the SDK's own retry is then served
      Given "Acme" allows each key 2 requests every second
      And the key "ci" has used its 2 requests of the window on "chat-basic"
      When the application asks "chat-basic" for a chat completion, letting the SDK retry
      Then the SDK waited as long as the gateway asked before retrying, and that retry was served
      And the application receives the model's answer with its usage

  Rule: The SDK's automatic retries never charge twice

    @needs_stub_control
    Scenario: A completion whose answer came too late for the SDK is retried and charged once
      Given the primary backend answers only after a long pause
      When the application asks "chat-basic" for a chat completion with an idempotency key, giving up on each try sooner than the backend answers
      Then the application receives the model's answer with its usage
      And the SDK tried more than once
      And "Acme" was charged once, exactly the completion's usage at the model's price
