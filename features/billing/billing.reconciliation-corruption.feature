@allure.label.epic:Billing @needs_database
Feature: The reconciliation finds every kind of corruption
  Books can go wrong in more ways than a balance changed behind the ledger's back. The reconciliation checks each
  account against its ledger bucket by bucket (not only in sum), that every ledger entry balances on its own, that
  what is held is what pending reservations hold, and that what was minted is what the credit lots add up to.
  Each kind of corruption is found and named, with its amount; each is made in an account of its own.

  Background:
    Given an account with 10.00 USD in one credit lot

  Rule: Balances agree with the ledger bucket by bucket, not only in sum

    Scenario: Credit moved from available to spent behind the ledger's back is found, though the sum agrees
      When someone moves 1.00 USD of the account's available credit to its spent balance directly in the database
      Then the reconciliation finds the account's available balance, against its ledger, off by -1.00 USD
      And the reconciliation finds the account's spent balance, against its ledger, off by 1.00 USD

  Rule: Every ledger entry's postings sum to zero

    Scenario: Ledger entries that do not balance are found, though they cancel each other out
      When someone writes two ledger entries on the account that do not balance, 0.50 USD each way
      Then the reconciliation finds two of the account's ledger entries out of balance by 0.50 USD each way

  Rule: What is held is what the pending reservations hold

    Scenario: A pending reservation changed behind the ledger's back is found
      Given a pending reservation of 2.00 USD on it
      When someone raises the reservation's amount by 0.25 USD directly in the database
      Then the reconciliation finds the account's held balance, against its pending reservations, off by -0.25 USD

  Rule: What was minted is what the credit lots add up to

    Scenario: A credit lot changed behind the ledger's back is found
      When someone raises the account's credit lot by 3.00 USD directly in the database
      Then the reconciliation finds the account's minted balance, against its credit lots, off by -3.00 USD
