@allure.label.epic:Security
Feature: Guessing credentials costs the guesser, not the gateway
  An attacker guessing passwords, for one account or for many accounts from one client address, is soon refused
  with 429 and told when to retry, before any password is checked. A burst of such refusals leaves one audit
  event, not one per guess, and people logging in from elsewhere are served as usual.

  Background:
    Given the org "Acme" with its owner "Olive"

  Scenario: An attacker guessing a member's password is slowed down
    When an attacker guesses Olive's password 8 times
    Then the attacker is refused as trying too often before the 8th try, and told when to retry
    And while that lasts even Olive's own password is refused as trying too often
    And the attacker's refused tries leave one audit event, not one per try

  Scenario: An attacker trying one password on many accounts from one address is slowed down
    When an attacker tries one password on 25 accounts from one client address
    Then the attacker is refused as trying too often before the 25th try, and told when to retry
    And Olive, logging in from another address, is served
