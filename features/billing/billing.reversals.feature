@allure.label.epic:Billing @needs_database
Feature: A platform admin reverses a charge
  Support teams give money back: a platform admin voids a finalized charge, whole or in part, with a reason and an
  idempotency key. The amount moves from spent back to available in one balanced ledger entry, and the void is
  audited. Nothing can be given back beyond what was charged, nothing can be voided that was never charged, and a
  retried void gives back once.

  Background:
    Given an account with 10.00 USD in one credit lot
    And a pending reservation of 3.00 USD on it
    And the service has finalized the reservation at 2.00 USD

  Rule: A charge is voided whole or in part, from spent back to available

    Scenario: A whole charge is voided
      When a platform admin voids the whole charge, with a reason and the idempotency key "refund-1"
      Then the charge reads as voided in full, 2.00 USD voided
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted
      And the reservation's void is in the audit log once
      And the reconciliation shows the books balanced, including the account

    Scenario: Part of a charge is voided, and the rest stays charged
      When a platform admin voids 0.75 USD of the charge, with a reason and the idempotency key "refund-1"
      Then the charge still reads as finalized, 0.75 USD voided
      And the account has 8.75 USD available, 0.00 USD held and 1.25 USD spent of 10.00 USD minted
      And the reconciliation shows the books balanced, including the account

    Scenario: A void sent again with its idempotency key gives back once
      Given a platform admin has voided 0.75 USD of the charge with the idempotency key "refund-1"
      When a platform admin voids 0.75 USD of the charge, with a reason and the idempotency key "refund-1"
      Then the repeated request is answered exactly like the first
      And the account has 8.75 USD available, 0.00 USD held and 1.25 USD spent of 10.00 USD minted

  Rule: Nothing is given back beyond the charge, and only a charge can be voided

    Scenario: Voiding more than was charged is refused
      When a platform admin voids 2.50 USD of the charge, with a reason and the idempotency key "refund-1"
      Then the void is refused because it is more than is left of the charge
      And nothing was posted to the account's ledger
      And the account has 8.00 USD available, 0.00 USD held and 2.00 USD spent of 10.00 USD minted

    Scenario: A second void past what is left of the charge is refused
      Given a platform admin has voided 1.50 USD of the charge with the idempotency key "refund-1"
      When a platform admin voids 1.50 USD of the charge, with a reason and the idempotency key "refund-2"
      Then the void is refused because it is more than is left of the charge
      And the account has 9.50 USD available, 0.00 USD held and 0.50 USD spent of 10.00 USD minted

    Scenario: A charge voided in full cannot be voided again
      Given a platform admin has voided the whole charge with the idempotency key "refund-1"
      When a platform admin voids 0.10 USD of the charge, with a reason and the idempotency key "refund-2"
      Then the void is refused because the charge was voided in full already

    Scenario: A pending reservation cannot be voided
      Given the service has reserved 1.00 USD on the account
      When a platform admin voids the whole charge, with a reason and the idempotency key "refund-1"
      Then the void is refused because nothing has been charged yet
      And the account has 7.00 USD available, 1.00 USD held and 2.00 USD spent of 10.00 USD minted

    Scenario: A void without an idempotency key is refused
      When a platform admin voids the whole charge, with a reason but no idempotency key
      Then the void is refused because it carries no idempotency key
      And nothing was posted to the account's ledger
