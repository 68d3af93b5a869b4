@allure.label.epic:Scale @scale @needs_database
Feature: A hold runs out once, however many processes notice
  Every gateway process can find a hold past its time: the one that leads sweeps, and any process expires an
  account's due holds when it reads the account. However many notice at the same moment, the hold expires once:
  one ledger entry, one audit event, and its amount back once.

  Background:
    Given an account with 10.00 USD in one credit lot
    And a pending reservation of 2.00 USD on it that expires in 1.5 seconds

  Scenario: A hold that runs out while every process reads its account expires once
    When the reservation's time runs out while every gateway process reads the account
    Then the reads reached more than one gateway process
    And the reservation has expired
    And the ledger holds the reservation's hold once and its expiry once
    And the reservation's expiry is in the audit log once
    And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted
