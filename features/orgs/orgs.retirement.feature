@allure.label.epic:Orgs
Feature: A retired org can no longer be used
  When a tenant leaves, or a test run ends, a platform admin deactivates the org: its API keys and open
  invitations are revoked and its members lose their access; people who belong to no other org are removed. The
  org, its ledger and its audit log stay for the record, and its slug stays taken.

  Background:
    Given the org "Acme" with its owner "Olive"
    And Olive has issued the API key "ci" for "Acme"

  Scenario: A deactivated org's key and owner are turned away
    Given the key "ci" is accepted for model traffic
    When a platform admin deactivates "Acme"
    Then the key "ci" is refused as unauthenticated on its very next request
    And Olive can no longer log in
    And the org "Acme" is listed as inactive, its slug still taken
