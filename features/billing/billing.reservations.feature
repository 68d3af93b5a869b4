@allure.label.epic:Billing
Feature: Reservations settle once
  Before a service spends credit it reserves it; the reserved amount is held, not spent. A pending reservation
  moves exactly once: finalized at what was actually used (the rest returns to available), or released in full.
  Once it has moved, it cannot move again, and nothing can be charged above what was reserved.

  @needs_database
  Rule: Reserved credit is held, not spent, and only available credit can be reserved

    Scenario: A reservation holds its amount without spending it
      Given an account with 10.00 USD in one credit lot
      When the service reserves 3.00 USD on the account
      Then the reservation is pending
      And the account has 7.00 USD available, 3.00 USD held and 0.00 USD spent of 10.00 USD minted

    Scenario: A reservation larger than the available credit is refused
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 8.00 USD on it
      When the service reserves 2.50 USD on the account
      Then the request is refused because the account lacks available credit
      And nothing was posted to the account's ledger
      And the account has 2.00 USD available, 8.00 USD held and 0.00 USD spent of 10.00 USD minted

  Rule: A pending reservation settles once: finalized at what was used, or released in full

    @needs_database
    Scenario: Finalizing at the reserved amount spends all of it
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 3.00 USD on it
      When the service finalizes the reservation at 3.00 USD
      Then the reservation is finalized
      And the account has 7.00 USD available, 0.00 USD held and 3.00 USD spent of 10.00 USD minted

    @needs_database
    Scenario: Finalizing below the reserved amount returns the rest
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 3.00 USD on it
      When the service finalizes the reservation at 1.25 USD
      Then the reservation is finalized
      And the account has 8.75 USD available, 0.00 USD held and 1.25 USD spent of 10.00 USD minted

    @needs_database
    Scenario: Releasing a reservation returns all of it
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 3.00 USD on it
      When the service releases the reservation
      Then the reservation is released
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

    @smoke
    Scenario: An org's account is reserved on and finalized at what was used
      Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
      And the service has reserved 2.00 USD on the account of "Acme"
      When the service finalizes the reservation at 1.25 USD
      Then the reservation is finalized
      And the account of "Acme" has 3.75 USD available, 0.00 USD held and 1.25 USD spent of 5.00 USD minted

  Rule: A settled reservation cannot move again, and nothing is charged above what was reserved

    @needs_database
    Scenario: A finalized reservation cannot be finalized again
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 3.00 USD on it
      And the service has finalized the reservation at 3.00 USD
      When the service finalizes the reservation again at 3.00 USD
      Then the request is refused because the reservation is no longer pending
      And nothing was posted to the account's ledger
      And the account has 7.00 USD available, 0.00 USD held and 3.00 USD spent of 10.00 USD minted
      And the reconciliation shows the books balanced, including the account

    @needs_database
    Scenario: A released reservation cannot be finalized
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 3.00 USD on it
      And the service has released the reservation
      When the service finalizes the reservation at 3.00 USD
      Then the request is refused because the reservation is no longer pending
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

    @needs_database
    Scenario: Finalizing above the reserved amount is refused and posts nothing
      Given an account with 10.00 USD in one credit lot
      And a pending reservation of 3.00 USD on it
      When the service finalizes the reservation at 3.01 USD
      Then the request is refused because the amount is above what was reserved
      And nothing was posted to the account's ledger
      And the account has 7.00 USD available, 3.00 USD held and 0.00 USD spent of 10.00 USD minted

    Scenario: A reservation that does not exist cannot be finalized
      When the service finalizes a reservation that does not exist
      Then the request is refused because the reservation does not exist
