@allure.label.epic:Routing @needs_database @needs_stub_control
Feature: Falling back when a model backend fails
  A chat request goes to its model's backends in route order. A backend that fails (a server error, no answer in
  time, a dropped connection, nothing listening) is passed over and the next one answers; the customer is charged
  once, for the answer they got. A refusal (the backend saying the request itself is wrong) is the backend's
  answer to the request: it is returned as is and never sent elsewhere. When no backend answers, the request
  fails and costs nothing.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-ha" is served by a primary and a fallback backend

  Rule: A backend that fails is passed over, and the customer is charged once, for the answer they got

    Scenario Outline: The fallback answers when the primary <failure>
      Given the primary backend <failure>
      When the key "ci" asks "chat-ha" for a chat completion
      Then the completion is answered by the model's fallback backend
      And the primary backend was tried first
      And "Acme" was charged once, exactly the completion's usage at the model's price

      Examples:
        | failure                   |
        | fails with a server error |
        | does not answer in time   |
        | drops the connection      |

    Scenario: The fallback answers when the primary is stopped
      Given the primary backend is stopped
      When the key "ci" asks "chat-ha" for a chat completion
      Then the completion is answered by the model's fallback backend
      And "Acme" was charged once, exactly the completion's usage at the model's price

  Rule: A backend's refusal is its answer: returned as is, never sent elsewhere

    Scenario: A refusal from the primary is returned as is, and the fallback is not asked
      Given the primary backend refuses the request as too long
      When the key "ci" asks "chat-ha" for a chat completion
      Then the caller receives the primary backend's refusal unchanged
      And the fallback backend received no request for it
      And "Acme" has spent nothing and holds nothing

  Rule: When no backend answers, the request fails and costs nothing

    Scenario: When every backend fails, the request fails and costs nothing
      Given the primary backend fails with a server error
      And the fallback backend is stopped
      When the key "ci" asks "chat-ha" for a chat completion
      Then the request fails as no backend could answer, naming each backend that failed
      And the hold placed for the request on "Acme" was released
      And "Acme" has spent nothing and holds nothing
