@allure.label.epic:Streaming @needs_database @needs_stub_control
Feature: Streamed answers
  Applications stream completions to show text as it is written. A streamed answer carries the same text as the
  answer the model gives in one piece, arrives while the backend is still writing, ends the way OpenAI's clients
  expect, and the org pays exactly the usage its backend reports.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: A streamed answer is the model's answer, delivered in pieces as it is written

    Scenario: A streamed completion arrives in pieces and says what the whole answer says
      Given the primary backend pauses after the first pieces of its answer until they have reached the caller
      When the key "ci" streams a chat completion from "chat-basic"
      Then the answer arrives in several pieces, the first before the backend has finished writing
      And the pieces put together are the answer "chat-basic" gives in one piece
      And the stream ends the way OpenAI's clients expect

    Scenario: A client that asks for usage gets it at the end of the stream
      When the key "ci" streams a chat completion from "chat-basic", asking for its usage
      Then the stream's last piece before its end reports the usage the backend reported

  Rule: A streamed completion costs exactly what its backend reports

    Scenario: A streamed completion is charged its usage at the model's price, and nothing stays on hold
      Given the primary backend reports 3 prompt and 20 completion tokens for each completion
      When the key "ci" streams a chat completion from "chat-basic"
      Then "Acme" has been charged 0.043 USD, its ledger agreeing with its usage
      And "Acme" was charged once, exactly the completion's usage at the model's price

    Scenario: A streamed completion whose backend reports no usage is still paid for in full
      Given the primary backend never reports usage when it streams
      When the key "ci" streams a chat completion from "chat-basic"
      Then "Acme" was charged no less than the streamed text's usage at the model's price
      And "Acme" holds nothing

  Rule: An org at its budget is refused before anything is streamed

    Scenario: An org at its limit is refused before the first piece, and the backend is not called
      Given the key "ci" has spent the whole budget of "Acme" on "chat-basic"
      When the key "ci" streams a chat completion from "chat-basic"
      Then the request is refused as over budget, naming "Acme", its limit and its spend
      And nothing was streamed
      And the model's primary backend received no request for it
