@allure.label.epic:Resilience @resilience @needs_database @needs_stub_control
Feature: A model backend that hangs
  A backend that takes a request and never answers must hold neither the caller nor the customer's money: the
  gateway gives up on it within that backend's configured timeout, tries the next backend in route order, and
  releases what it held for an answer that never came.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"

  Rule: The gateway gives up on a hung backend within its timeout and tries the next one

    Scenario: The gateway gives up on a hung backend within its timeout and falls back to the next one
      Given the model "chat-fallback" routes to a primary and then a secondary backend, each given 0.3 seconds to answer
      And the model's primary backend hangs
      When the key "ci" asks "chat-fallback" for a chat completion
      Then the completion is answered by the model's secondary backend
      And the gateway gave up on the hung backend within its timeout
      And "Acme" has been charged exactly the completion's usage at the model's price
      And nothing is left on hold for "Acme"

  Rule: When every backend hangs, the request fails and nothing stays held

    Scenario: When every backend hangs, the request fails within their timeouts and nothing stays held
      Given the model "chat-stuck" routes to a primary and then a secondary backend, each given 0.15 seconds to answer
      And every backend of the model hangs
      When the key "ci" asks "chat-stuck" for a chat completion
      Then the request fails as no backend could answer, naming each backend that timed out, within their timeouts
      And the request's hold was released with nothing charged
      And nothing is left on hold for "Acme"
