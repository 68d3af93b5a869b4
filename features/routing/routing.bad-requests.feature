@allure.label.epic:Routing
Feature: Malformed chat requests
  A chat request the gateway cannot use is refused with a 4xx and a message that says what is wrong, never with a
  server error, and before anything is held or any backend is called.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Scenario Outline: A chat request <flaw> is refused, saying why
    When the key "ci" sends a chat request <flaw>
    Then the request is refused with <status>, its message about "<subject>"
    And the model's primary backend received no request for it
    And "Acme" has spent nothing and holds nothing

    Examples:
      | flaw                               | status | subject    |
      | that is not JSON                   | 400    | JSON       |
      | that is a JSON array               | 400    | object     |
      | without messages                   | 400    | messages   |
      | whose messages are not objects     | 400    | messages   |
      | whose model is a number            | 400    | model      |
      | whose max_tokens is a word         | 400    | max_tokens |
      | with a number that is not a number | 400    | JSON       |
      | with a broken unicode escape       | 400    | surrogate  |
      | nested too deeply to read          | 400    | nested     |
      | larger than the gateway accepts    | 413    | larger     |
