@allure.label.epic:Budgets @needs_database @needs_stub_control
Feature: An org never spends past its budget
  A request that would take an org past its budget limit is refused as over budget before any backend is called.
  The message names the org, its limit and its spend, and the refusal is in the audit log. Requests arriving
  together cannot slip past the limit between them.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: A request that would go past the budget is refused before any backend is called, and audited

    Scenario: An org at its limit is refused before any backend is called
      Given the key "ci" has spent the whole budget of "Acme" on "chat-basic"
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request is refused as over budget, naming "Acme", its limit and its spend
      And the model's primary backend received no request for it
      And the denial is recorded in the audit log of "Acme" with its request id

  Rule: Requests arriving together cannot slip past the budget between them

    Scenario: Thirty requests at once cannot spend past a budget that affords ten
      Given the budget of "Acme" affords 10 chat completions on "chat-basic"
      When the key "ci" sends 30 chat completions to "chat-basic" at once
      Then "Acme" has not spent past its budget, by its account in the database
      And the burst was answered as far as the budget affords, and no further
      And every request of the burst that was not answered was refused as over budget
