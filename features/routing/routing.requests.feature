@allure.label.epic:Routing @needs_database
Feature: Routing a chat request to its model
  A key's chat request names a model; the gateway sends it to that model's backend with the caller's trace id, so
  one trace follows the request end to end. A model that does not exist, and a model the key's org may not use,
  are both simply not found: an org cannot tell the two apart.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: A request goes to its model's backend, carrying the caller's trace

    @needs_stub_control
    Scenario: The backend receives the caller's trace id
      When the key "ci" asks "chat-basic" for a chat completion
      Then the completion is answered by the model's primary backend
      And the model's primary backend received the request with the caller's trace id

  Rule: A model that does not exist and a model the org may not use are both simply not found

    Scenario: A model that does not exist is not found
      When the key "ci" asks "chat-imaginary" for a chat completion
      Then the request is refused as an unknown model

    @needs_stub_control
    Scenario: A model the org may not use is not found either, and never reaches its backend
      Given the model "chat-premium" costs 5.00 USD per 1k prompt tokens and 10.00 USD per 1k completion tokens
      And "Acme" may use only the model "chat-basic"
      When the key "ci" asks "chat-premium" for a chat completion
      Then the request is refused as an unknown model
      And the model's primary backend received no request for it
      And the key "ci" lists only the models "Acme" may use, "chat-premium" not among them
