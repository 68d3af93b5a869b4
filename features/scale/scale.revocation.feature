@allure.label.epic:Scale @scale
Feature: A revoked key is refused by every process at once
  Revoking an API key takes effect in the whole deployment as soon as the revocation is answered: no gateway process
  keeps accepting the key from what it remembers.

  Background:
    Given the org "Acme" with its owner "Olive"
    And Olive has issued the API key "ci" for "Acme"

  Scenario: A key revoked through one process is refused by every process from then on
    Given the key "ci" has been accepted by every gateway process
    When Olive revokes the key "ci" of "Acme"
    Then every gateway process refuses the key "ci" as unauthenticated from then on
