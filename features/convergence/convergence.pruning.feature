@allure.label.epic:Convergence @needs_config_repo
Feature: Objects removed from git while prune is off
  Removing an org's file from the configuration repository does not delete the org while prune is off: the
  org keeps working as last declared, and the gateway reports it as present but no longer declared.

  Scenario: An org removed from git stays in force and is reported
    Given the org "Acme" with its owner "Olive"
    And "Acme" is declared in git with a budget of 2.00 USD
    And the operator has removed "Acme" from git
    When the gateway syncs
    Then the gateway has applied that commit within 5 seconds
    And the budget in force for "Acme" is 2.00 USD
    And the drift report lists "Acme" as removed from git but still present
