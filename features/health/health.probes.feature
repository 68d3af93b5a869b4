@allure.label.epic:Health
Feature: Health probes and metrics
  Load balancers and operators ask the gateway whether it is alive and whether it is ready to serve, and scrape
  its metrics. Ready means its database answers and it has applied its configuration at least once.

  Rule: The gateway says whether it is alive, and whether it is ready to serve

    @smoke
    Scenario: The gateway says it is alive
      When an operator asks whether the gateway is alive
      Then the gateway answers that it is alive

    @smoke
    Scenario: The gateway is ready once its database answers and its configuration is applied
      When an operator asks whether the gateway is ready
      Then the gateway answers that it is ready, its database and configuration checks passing

  Rule: Metrics count requests by route and status, and reservations by state

    @needs_database
    Scenario: Metrics count requests by route and status, and reservations by state
      Given an operator has read the gateway's metrics
      And an operator has then asked whether the gateway is alive
      And an account with 1.00 USD in one credit lot
      And the account holds a reservation in each state: pending, finalized, released, expired
      When the operator reads the gateway's metrics again
      Then the count of successful liveness answers has grown
      And the metrics include a latency histogram for the liveness route
      And the metrics count reservations in every state: pending, finalized, released, expired
