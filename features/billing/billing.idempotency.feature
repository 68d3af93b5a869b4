@allure.label.epic:Billing @needs_database
Feature: Retried billing requests take effect once
  A service that retries a request with the same idempotency key gets the first answer again, and the ledger
  moves once. The same key with a different request is refused, and requests racing with one key hold once.

  Background:
    Given an account with 10.00 USD in one credit lot

  Rule: A retry with the same key gets the first answer again, and the ledger moves once

    Scenario: The same reservation sent twice with one key holds once
      Given the service has reserved 1.00 USD on the account with the idempotency key "order-1"
      When the service reserves 1.00 USD on the account again with the idempotency key "order-1"
      Then the repeated request is answered exactly like the first
      And the ledger shows a single hold on the account
      And the account has 9.00 USD available, 1.00 USD held and 0.00 USD spent of 10.00 USD minted

    Scenario: A retried finalization with its key is answered again instead of refused
      Given a pending reservation of 3.00 USD on it
      And the service has finalized the reservation at 2.00 USD with the idempotency key "settle-1"
      When the service finalizes the reservation again at 2.00 USD with the idempotency key "settle-1"
      Then the repeated request is answered exactly like the first
      And the ledger shows the reservation held once and settled once
      And the account has 8.00 USD available, 0.00 USD held and 2.00 USD spent of 10.00 USD minted

  Rule: A key belongs to the request it was first sent with

    Scenario: A key reused for a different reservation is refused
      Given the service has reserved 1.00 USD on the account with the idempotency key "order-1"
      When the service reserves 2.00 USD on the account again with the idempotency key "order-1"
      Then the request is refused because the key was already used for another request
      And the ledger shows a single hold on the account
      And the account has 9.00 USD available, 1.00 USD held and 0.00 USD spent of 10.00 USD minted

  Rule: Requests racing with one key hold once

    Scenario: Ten identical reservations racing with one key hold once
      When the service sends the same reservation of 1.00 USD with the idempotency key "order-1" 10 times at once
      Then every answer carries that one reservation or asks to retry while the key is in use
      And the ledger shows a single hold on the account
      And the account has 9.00 USD available, 1.00 USD held and 0.00 USD spent of 10.00 USD minted
