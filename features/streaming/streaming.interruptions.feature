@allure.label.epic:Streaming @needs_database @needs_stub_control
Feature: Streams that are cut short
  A stream can end early: the client goes away, or the backend fails while writing. Either way the org pays for
  what was generated and no more, the rest of its hold goes back, and the request is audited once. A backend that
  fails before it has written anything is passed over for the next one, as for answers in one piece; once the
  client has received a piece, the answer can no longer be switched to another backend.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-ha" is served by a primary and a fallback backend

  Rule: A client that goes away pays only for what was generated

    Scenario: The client goes away mid-stream
      Given the primary backend writes its answers slowly, a piece at a time
      When the key "ci" streams a long chat completion from "chat-ha" and goes away after the first pieces
      Then the primary backend stopped writing once the client had gone
      And "Acme" was charged once, for what the backend had generated and not for the rest of the answer
      And "Acme" holds nothing
      And the streamed request is recorded once in the audit log of "Acme" with its usage

  Rule: The fallback is used only before the first piece reaches the client

    Scenario: The fallback streams the answer when the primary fails before writing
      Given the primary backend fails with 503
      When the key "ci" streams a chat completion from "chat-ha"
      Then the streamed answer comes from the model's fallback backend
      And "Acme" was charged once, exactly the completion's usage at the model's price

    Scenario: A backend that dies mid-stream ends the stream with an error, and the org pays for what it received
      Given the primary backend fails after writing the first pieces of each streamed answer
      When the key "ci" streams a long chat completion from "chat-ha"
      Then the stream ends with an error in OpenAI's shape after the pieces already received
      And the fallback backend received no request for it
      And "Acme" was charged once, for what the backend had generated and not for the rest of the answer
      And "Acme" holds nothing
      And the streamed request is recorded once in the audit log of "Acme" as failed mid-stream
