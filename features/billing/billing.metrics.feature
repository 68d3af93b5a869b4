@allure.label.epic:Billing @serial @needs_database
Feature: Billing metrics count exactly what happened
  An operator follows the gateway's billing in its metrics: reservations by state (true counts) and counters of
  reserves, finalizes, releases, expiries, voids, late charges, overruns, settlement retries and dead letters.
  Between two readings each metric moves by exactly what happened, no more and no less. (Serial: the readings are
  the gateway's as a whole, so nothing else may move money meanwhile: with several processes, every process's.)

  Scenario: Each move of a reservation moves its metrics by exactly one
    Given no hold of earlier work is about to expire
    And an account with 10.00 USD in one credit lot
    And an operator has read the gateway's billing metrics
    And the service has reserved 3.00 USD on the account
    And the service has finalized the reservation at 2.00 USD
    And a platform admin has voided the whole charge with the idempotency key "refund-1"
    And the service has reserved 1.00 USD on the account
    And the service has released the reservation
    And the service has reserved 0.50 USD on the account for 0.2 seconds
    And the reservation's time has run out
    When the operator reads the gateway's billing metrics again
    Then the billing metrics have moved by exactly:
      | metric                | change |
      | reserves              | 3      |
      | finalizes             | 1      |
      | releases              | 1      |
      | expiries              | 1      |
      | voids                 | 1      |
      | late charges          | 0      |
      | overruns              | 0      |
      | journal retries       | 0      |
      | dead letters          | 0      |
      | reservations pending  | 0      |
      | reservations finalized| 0      |
      | reservations voided   | 1      |
      | reservations released | 1      |
      | reservations expired  | 1      |
