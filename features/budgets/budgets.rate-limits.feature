@allure.label.epic:Budgets @needs_database @needs_stub_control
Feature: Rate limits per API key
  Each API key may send so many requests per time window, as set for its org. A request over the limit is refused
  as rate limited and told when to retry (once its window has passed), without reaching a backend; the key is not
  served before then, and once that time has passed it is served again. The limit counts each key on its own.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: A key over its limit is refused without reaching a backend, and served again once told it may retry

    Scenario: A key over its limit is told when to retry, and is served again after that, not before
      Given "Acme" allows each key 2 requests every second
      And the key "ci" has used its 2 requests of the window on "chat-basic"
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request is refused as rate limited, with a time to retry after
      And the model's primary backend received no request for it
      And the key "ci" is refused again late in its window
      And once that time has passed, the key "ci" is served again

    Scenario: A key over its limit is told to retry once its window has passed
      Given "Acme" allows each key 2 requests every 60 seconds
      And the key "ci" has used its 2 requests of the window on "chat-basic"
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request is refused as rate limited, told to retry once its window has passed

  Rule: The limit counts each key on its own

    Scenario: Another key of the same org is not held back
      Given "Acme" allows each key 2 requests every 60 seconds
      And "Acme" calls models with the API key "batch"
      And the key "ci" has used its 2 requests of the window on "chat-basic"
      When the key "batch" asks "chat-basic" for a chat completion
      Then the completion is answered by the model's primary backend
