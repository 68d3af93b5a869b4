@allure.label.epic:Budgets @needs_database @needs_stub_control
Feature: Charging exactly what a completion used
  Before a backend is called, a chat request holds its worst-case cost on the org's account; once answered, it is
  charged exactly its usage at the model's price and the rest of the hold goes back. The org's usage and its ledger
  always agree.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Scenario: A completion is charged its usage at the model's price, and nothing stays on hold
    Given the primary backend reports 3 prompt and 20 completion tokens for each completion
    When the key "ci" asks "chat-basic" for a chat completion
    Then the completion is answered by the model's primary backend
    And "Acme" has been charged 0.043 USD, its ledger agreeing with its usage
    And "Acme" was charged once, exactly the completion's usage at the model's price
