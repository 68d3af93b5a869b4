@allure.label.epic:Self-check
Feature: Every red step explains itself (deliberately failing)
  A self-check of the suite, kept out of features/: each scenario below but the first fails on purpose, against
  the real embedded stack. tests/selfcheck proves from what the run wrote that every failed step carries its
  evidence (the exchanges, the gateway's log lines and audit events for their request ids, the state of the
  stack) and that no secret the run handled reaches the report, the JUnit XML or the console.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit

  Scenario: A healthy gateway (this one passes)
    When an operator asks whether the gateway is alive
    Then the gateway answers that it is alive

  Scenario: A completion expected from the wrong backend
    Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And Olive has issued the API key "ci" for "Acme"
    When the key "ci" asks "chat-basic" for a chat completion
    Then the completion is answered by the model's fallback backend

  Scenario: A refusal expected to be allowed
    Given Vic is a viewer of "Acme"
    When Vic tries to issue an API key in "Acme"
    Then Vic's attempt is allowed

  Scenario: A change refused in the middle of the scenario
    Given Vic is a viewer of "Acme"
    When Vic issues the API key "ci" for "Acme"
    Then the key "ci" is listed by its name and prefix, without its secret

  Scenario: An audit event expected for another action
    When Olive tries to issue an API key in "Acme"
    Then the request leaves exactly one audit event: keys.revoke by Olive on a key, allowed

  Scenario: A refresh expected to be refused
    Given Olive has logged in
    When Olive refreshes her tokens
    Then the refresh is refused as unauthenticated

  Scenario: A careless step quotes, in its failure and its log, every secret it holds
    Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And Olive has invited Nia to "Acme" as a member
    When Nia accepts her invitation
    And Nia logs in
    And Nia refreshes her tokens
    And Olive issues the API key "ci" for "Acme"
    And the key "ci" asks "chat-basic" for a chat completion
    Then the self-check fails, quoting every secret it holds

  Scenario: A careless step breaks with an error that quotes a secret
    Given Olive has issued the API key "ci" for "Acme"
    When Olive lists the API keys of "Acme"
    Then the self-check breaks, quoting the secret of the key "ci"
