@allure.label.epic:Scale @scale @needs_database @needs_stub_control
Feature: A key's rate limit and an org's budget hold across every gateway process
  A deployment runs several gateway processes, and a client's requests land on any of them. A key's rate limit and
  an org's budget belong to the deployment, not to one process: a burst spread over every process is served as far
  as the limit allows and no further.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: A key's rate limit counts its requests on every process together

    Scenario: A burst over every process is served up to the key's rate limit, and no further
      Given "Acme" allows each key 10 requests every 60 seconds
      When the key "ci" sends 30 chat completions to "chat-basic" at once
      Then the burst reached more than one gateway process
      And exactly 10 completions are answered and the other 20 are refused as rate limited

  Rule: An org's budget holds against a burst over every process

    Scenario: A burst over every process never spends past the budget
      Given the budget of "Acme" affords 8 chat completions on "chat-basic"
      When the key "ci" sends 24 chat completions to "chat-basic" at once
      Then the burst reached more than one gateway process
      And "Acme" has not spent past its budget, by its account in the database
      And every request of the burst that was not answered was refused as over budget
      And the platform's reconciliation balances
