@allure.label.epic:Billing @needs_database
Feature: The books reconcile
  For every account, what was minted equals what is available plus what is held plus what is spent, and every
  ledger entry's postings sum to zero. The reconciliation proves it after any activity, and reports an account
  whose balance was changed behind the ledger's back.

  Rule: After any activity, minted equals available plus held plus spent

    Scenario: The books balance after holds, settlements, releases and mints
      Given an account with 2 credit lots of 5.00 USD each
      And a pending reservation of 1.00 USD on it
      And the service has finalized the reservation at 0.40 USD
      And the service has reserved 2.00 USD on the account
      And the service has released the reservation
      And the service has reserved 1.50 USD on the account
      When a platform admin mints 3.00 USD for the account
      Then the account has 11.10 USD available, 1.50 USD held and 0.40 USD spent of 13.00 USD minted
      And the reconciliation shows the books balanced, including the account

  Rule: A balance changed behind the ledger's back is reported

    Scenario: A balance changed behind the ledger's back shows as a discrepancy
      Given an account with 10.00 USD in one credit lot
      When someone adds 5.00 USD to the account's available credit directly in the database
      Then the reconciliation reports the account out of balance by 5.00 USD
