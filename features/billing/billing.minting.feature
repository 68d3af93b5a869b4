@allure.label.epic:Billing @needs_database
Feature: Platform admins mint credit
  Credit enters an account only when a platform admin mints it, as a new credit lot. The account's balance grows
  by exactly the lot's amount, and a retried mint with the same idempotency key does not mint twice.

  Background:
    Given an account with 10.00 USD in one credit lot

  Rule: A mint adds a credit lot, and the balance grows by exactly its amount

    Scenario: Minting adds a credit lot and grows the balance by exactly its amount
      When a platform admin mints 2.50 USD for the account
      Then the mint adds a credit lot of exactly 2.50 USD
      And the account has 12.50 USD available, 0.00 USD held and 0.00 USD spent of 12.50 USD minted

  Rule: A retried mint with the same idempotency key mints once

    Scenario: A retried mint with the same idempotency key mints once
      Given a platform admin has minted 2.50 USD for the account with the idempotency key "top-up-7"
      When a platform admin mints 2.50 USD for the account again with the idempotency key "top-up-7"
      Then the repeated request is answered exactly like the first
      And the account has 12.50 USD available, 0.00 USD held and 0.00 USD spent of 12.50 USD minted
