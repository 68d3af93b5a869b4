@allure.label.epic:Resilience @resilience @serial @needs_database @needs_stub_control
Feature: The gateway is killed in the middle of requests
  A gateway process can die at any moment, with requests in flight and money on hold. Nothing may be spent
  twice: the holds of the requests it never finished expire and return to the customer, completed requests stay
  charged exactly once, and the ledger reconciles once the gateway is back.

  Background:
    Given the model "chat-patient" routes to one backend, given 0.75 seconds to answer
    And the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"
    And the key "ci" has had 2 chat completions from "chat-patient" answered
    And 4 chat completions with the key "ci" are in flight, held up by the backend that stopped answering

  Rule: The holds of requests cut off by a crash expire, and nothing is charged twice

    Scenario: Holds of requests cut off by a crash expire, and nothing is charged twice
      When the gateway process is killed and started again
      Then the requests in flight got no answer
      And their holds expire and return to "Acme"'s available credit
      And the ledger of "Acme" holds exactly one mint and one reservation and settlement per request
      And "Acme" has spent exactly what its answered completions cost
      And the platform's reconciliation balances

  Rule: Once restarted, the gateway serves again and charges exactly what is answered

    Scenario: After a crash, completions are answered again and charged exactly
      Given the gateway process has been killed and started again
      When the model's backend answers again
      Then the key "ci" is served again: 1 more chat completion from "chat-patient" is answered
      And "Acme" has spent exactly what its answered completions cost
