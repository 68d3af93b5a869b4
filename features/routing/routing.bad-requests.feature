@allure.label.epic:Routing @needs_database @needs_stub_control
Feature: Malformed chat requests
  A chat request the gateway cannot use is refused as the caller's error, with a message that says what is wrong,
  never with a server error, and before anything is held or any backend is called.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Scenario Outline: A chat request <flaw> is refused, saying why
    When the key "ci" sends a chat request <flaw>
    Then the request is refused as <refusal>, its message about "<subject>"
    And the model's primary backend received no request for it
    And "Acme" has spent nothing and holds nothing

    Examples:
      | flaw                               | refusal   | subject    |
      | that is not JSON                   | invalid   | JSON       |
      | that is a JSON array               | invalid   | object     |
      | without messages                   | invalid   | messages   |
      | whose messages are not objects     | invalid   | messages   |
      | whose model is a number            | invalid   | model      |
      | whose max_tokens is a word         | invalid   | max_tokens |
      | with a number that is not a number | invalid   | JSON       |
      | with a broken unicode escape       | invalid   | surrogate  |
      | nested too deeply to read          | invalid   | nested     |
      | larger than the gateway accepts    | too large | larger     |
