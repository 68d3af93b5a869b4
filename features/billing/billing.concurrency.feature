@allure.label.epic:Billing @needs_database
Feature: Credit is conserved under concurrency
  However many reservations arrive at the same moment, an account never holds more than it has: each one either
  fits in what is still available or is refused, and the books still balance afterwards.

  Scenario: Fifty reservations at once against room for twenty
    Given an account with 20.00 USD in one credit lot
    When the service fires 50 reservations of 1.00 USD at the account at once
    Then exactly 20 reservations are accepted and the other 30 are refused for lack of credit
    And the account's held credit never exceeded its funds during the burst
    And the account has 0.00 USD available, 20.00 USD held and 0.00 USD spent of 20.00 USD minted
    And the reconciliation shows the books balanced, including the account
