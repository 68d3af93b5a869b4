@allure.label.epic:Resilience @resilience @serial @needs_database @needs_stub_control
Feature: The database goes away and comes back
  When the gateway's database cannot be used, the gateway says so: its readiness probe fails naming the
  database, and every request that needs the database is refused as unavailable with a clear message, never with
  a server error. When the database returns, the gateway recovers by itself, without a restart, and the ledger
  has lost no entry and doubled none.

  Background:
    Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"
    And the key "ci" has had 3 chat completions from "chat-basic" answered

  Rule: While the database is away, the gateway says so and refuses what needs it, never with a server error

    Scenario: An outage is reported clearly, and requests that need the database are refused as unavailable
      Given the gateway's database has become unavailable
      When a readiness probe, a chat completion with the key "ci" and a platform admin's reconciliation request arrive at once
      Then the gateway reports that it is not ready, naming the database
      And the chat completion is refused as unavailable, naming the database, not a server error
      And the platform admin's reconciliation request is refused as unavailable
      But the gateway still answers that it is alive

  Rule: When the database returns, the gateway recovers by itself, and the ledger has lost and doubled nothing

    Scenario: The gateway recovers without a restart and without losing money
      Given the gateway's database has become unavailable
      And a readiness probe, a chat completion with the key "ci" and a platform admin's reconciliation request have been refused meanwhile
      When the database is available again
      Then the gateway becomes ready again without having been restarted
      And the key "ci" is served again: 2 more chat completions from "chat-basic" are answered
      And the ledger of "Acme" holds exactly one mint and one reservation and settlement per answered completion
      And the platform's reconciliation balances
