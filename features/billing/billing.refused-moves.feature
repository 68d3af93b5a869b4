@allure.label.epic:Billing @needs_database
Feature: A reservation that can no longer move is refused, saying why
  Only a pending reservation moves. Releasing one that is finalized, released or expired is refused, the answer
  naming the state it is in, and posts nothing. A reservation past its time to live is expired whether or not
  anything has read it since: finalizing it is refused on its own account. Every finalize, release, expiry and void
  leaves its audit event on the reservation.

  Background:
    Given an account with 10.00 USD in one credit lot

  Rule: Releasing a reservation that is not pending is refused, naming its state

    Scenario: A finalized reservation cannot be released
      Given a pending reservation of 3.00 USD on it
      And the service has finalized the reservation at 1.00 USD
      When the service releases the reservation
      Then the request is refused, naming the reservation's state: finalized
      And nothing was posted to the account's ledger
      And the account has 9.00 USD available, 0.00 USD held and 1.00 USD spent of 10.00 USD minted

    Scenario: A released reservation cannot be released again
      Given a pending reservation of 3.00 USD on it
      And the service has released the reservation
      When the service releases the reservation
      Then the request is refused, naming the reservation's state: released
      And nothing was posted to the account's ledger

    Scenario: An expired reservation cannot be released
      Given a pending reservation of 2.00 USD on it that expires in 0.1 seconds
      And the reservation's time has run out
      When the service releases the reservation
      Then the request is refused, naming the reservation's state: expired
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

  Rule: A reservation past its time to live cannot be finalized, though nothing has read it

    Scenario: Finalizing a reservation just past its time to live is refused
      Given a pending reservation of 2.00 USD on it that expires in 0.1 seconds
      And its time to live has passed, nothing having read it
      When the service finalizes the reservation at 2.00 USD
      Then the request is refused, naming the reservation's state: expired
      And the reservation was never finalized
      And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

  Rule: Every move of a reservation leaves its audit event

    Scenario: A finalize and a void leave their events
      Given a pending reservation of 3.00 USD on it
      And the service has finalized the reservation at 2.00 USD
      When a platform admin voids 0.50 USD of the charge, with a reason and the idempotency key "refund-1"
      Then the reservation's finalize and void are each in the audit log once

    Scenario: A release leaves its event
      Given a pending reservation of 3.00 USD on it
      When the service releases the reservation
      Then the reservation's release is in the audit log once

    Scenario: An expiry leaves the gateway's own event
      Given a pending reservation of 2.00 USD on it that expires in 0.1 seconds
      When the reservation's time runs out
      Then the reservation's expiry is in the audit log once
