@allure.label.epic:Convergence @needs_config_repo @serial
Feature: A commit that does not validate changes nothing
  The gateway validates every file of a commit before it applies any. A commit with one bad file is rejected
  whole: the valid changes in it wait too, the last good revision stays in force, and the error names the
  file and the line to fix.

  Background:
    Given the org "Acme" with its owner "Olive"
    And "Acme" is declared in git with a budget of 2.00 USD

  Scenario Outline: A commit with <problem> keeps the last good revision (<trigger>)
    Given the operator has committed a budget of 5.00 USD for "Acme" together with <problem> for "Globex"
    When <trigger>
    Then the gateway keeps the last good revision and reports being out of sync, its error pointing at the broken line of "Globex"'s file
    And the budget in force for "Acme" is 2.00 USD

    Examples:
      | problem            | trigger                       |
      | broken YAML        | the gateway syncs             |
      | a negative budget  | the gateway syncs             |
      | an unknown setting | the reconcile interval passes |
