@allure.label.epic:Billing @needs_database
Feature: Reservations expire
  A reservation nobody settles does not hold credit forever: once its time to live has passed it expires, its
  amount returns to available, and it can no longer be finalized.

  Background:
    Given an account with 10.00 USD in one credit lot
    And a pending reservation of 2.00 USD on it that expires in 0.1 seconds

  Rule: An unsettled reservation expires once its time has passed, and its amount returns

    Scenario: An unsettled reservation expires and its amount returns
      When the reservation's time runs out
      Then the reservation has expired
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

  Rule: An expired reservation can no longer be finalized

    Scenario: An expired reservation cannot be finalized
      Given the reservation's time has run out
      When the service finalizes the reservation at 2.00 USD
      Then the request is refused because the reservation is no longer pending
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted
      And the reconciliation shows the books balanced, including the account
