@allure.label.epic:Scale @scale @needs_replica_control @needs_database @needs_stub_control @serial
Feature: A replica that dies under traffic costs only what it was serving
  Gateway replicas run behind a load balancer that checks their health. When one dies, the load balancer sends the
  traffic to the others: every request sent after the death is answered. Only the requests the dead replica was
  serving go unanswered; none is charged twice, and the books balance once their holds have run out.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And the budget of "Acme" affords 300 chat completions on "chat-basic"

  Scenario: A replica killed under traffic: the others serve on, and nothing is charged twice
    Given the key "ci" is sending chat completions to "chat-basic" without pause, through the load balancer
    When one gateway replica is killed
    Then every request sent after it died was answered by a replica still running
    And only requests in flight when it died went unanswered
    And "Acme" was charged exactly once for each answered completion, and nothing twice
    And the platform's reconciliation balances
