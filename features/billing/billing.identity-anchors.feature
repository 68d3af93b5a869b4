@allure.label.epic:Billing @needs_database
Feature: Identity anchors guard accounts
  An account can be anchored to the identity that owns it. Then a service may act on it only on behalf of that
  identity: a request naming another identity, or none, is refused, and holds nothing.

  Background:
    Given an account with 10.00 USD in one credit lot
    And the account is anchored to identity "wallet-7"

  Rule: The anchored identity reads and uses its account

    Scenario: The anchored identity reads its account's balances
      Given a pending reservation of 1.00 USD on it
      When the service reads the account's balances on behalf of identity "wallet-7"
      Then the service is shown the account's balances

    Scenario: The anchored identity reserves on its account
      When the service reserves 1.00 USD on the account on behalf of identity "wallet-7"
      Then the reservation is pending
      And the account has 9.00 USD available, 1.00 USD held and 0.00 USD spent of 10.00 USD minted

  Rule: Another identity, or none, is refused and holds nothing

    Scenario: Another identity cannot reserve on the account
      When the service reserves 1.00 USD on the account on behalf of identity "wallet-8"
      Then the request is refused because the identity does not match the account's anchor
      And the refusal is in the audit log under the request id the suite sent
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

    Scenario: A request naming no identity is refused
      When the service reads the account's balances without naming an identity
      Then the request is refused because no identity was named for the anchored account
