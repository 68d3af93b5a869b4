@allure.label.epic:Performance @performance @serial @needs_database @needs_stub_control
Feature: Chat traffic under load keeps budgets and the ledger exact
  Many clients of several orgs calling at once must not make the gateway overspend: no org ever spends more than
  its budget, each org's spend equals the sum of what its answered completions cost, and the ledger balances
  with nothing left on hold. The run's throughput and latency are attached to the report.

  Scenario: A bounded load run with budgets on
    Given the model "chat-load" costs 0.01 USD per 1k prompt tokens and 0.02 USD per 1k completion tokens
    And these orgs, each with credit, a budget and an API key:
      | org     | credit   | budget    | key          |
      | Acme    | 5.00 USD | 0.005 USD | acme-load    |
      | Globex  | 5.00 USD | 0.01 USD  | globex-load  |
      | Initech | 1.00 USD | none      | initech-load |
    When 12 simulated users send 240 chat completions to "chat-load" with those keys
    Then the run's throughput and latency are attached to the report
    And every answer was a completion or a budget refusal, never a server error
    And no org spent more than its budget
    And each org's spend equals the sum of what its answered completions cost
    And the platform's reconciliation balances with nothing left on hold
