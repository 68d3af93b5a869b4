@allure.label.epic:Scale @scale @needs_database @needs_stub_control
Feature: A retry with its Idempotency-Key replays on whichever process it lands
  A client that retries a chat completion with the same Idempotency-Key may reach another gateway process than its
  first try did. That process answers with the first answer again, and the org is charged once.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Scenario: A retry answered by another process replays the first answer and charges nothing more
    Given the key "ci" has asked "chat-basic" for a chat completion with the idempotency key "q-1"
    When the key "ci" retries with the idempotency key "q-1" until another gateway process answers
    Then a retry was answered by another gateway process than the first request, and every retry as a replay
    And the retry is answered exactly like the first
    And the model's primary backend received the request once
    And "Acme" was charged once, exactly the completion's usage at the model's price
