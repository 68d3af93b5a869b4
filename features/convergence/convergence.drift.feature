@allure.label.epic:Convergence @needs_config_repo
Feature: Changes made outside git are drift
  A declared field changed through the API no longer matches git: the gateway reports it as drift, with the
  declared and the effective value. With self-heal on (here for one org, through its sync policy) the gateway
  restores the declared value and audits the correction; with self-heal off it only reports it.

  Background:
    Given the org "Acme" with its owner "Olive"

  Rule: With self-heal on, the gateway restores the declared value and audits the correction

    Scenario: With self-heal on, a budget raised through the API is restored and the correction audited
      Given "Acme" is declared in git with a budget of 2.00 USD and self-heal on
      And Olive has raised the budget of "Acme" to 9.00 USD through the API
      When the reconcile interval passes
      Then within 5 seconds the budget in force for "Acme" is back to 2.00 USD
      And the audit log of "Acme" shows the gateway restored its budget from 9.00 USD to 2.00 USD

  Rule: With self-heal off, the gateway reports the drift and leaves the value in place

    Scenario: With self-heal off, a budget raised through the API is reported and left in place
      Given "Acme" is declared in git with a budget of 2.00 USD
      And Olive has raised the budget of "Acme" to 9.00 USD through the API
      When the gateway syncs
      Then the drift report lists "Acme" budget declared 2.00 USD, effective 9.00 USD
      And the budget in force for "Acme" is 9.00 USD
      And no drift correction is recorded for "Acme"
