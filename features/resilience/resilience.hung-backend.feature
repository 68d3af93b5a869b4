@allure.label.epic:Resilience @resilience
Feature: A model backend that hangs
  A backend that takes a request and never answers must hold neither the caller nor the customer's money: the
  gateway gives up on it within that backend's configured timeout, tries the next backend in route order, and
  releases what it held for an answer that never came.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"

  Scenario: The gateway gives up on a hung backend within its timeout and falls back to the next one
    Given the model "chat-fallback" routes to a primary and then a secondary backend, each given 0.5 seconds to answer
    And the model's primary backend hangs
    When the key "ci" asks "chat-fallback" for a chat completion
    Then the completion is answered by the model's secondary backend
    And the gateway gave up on the hung backend within its timeout
    And "Acme" has been charged exactly the completion's usage at the model's price
    And nothing is left on hold for "Acme"

  Scenario: When every backend hangs, the caller gets a bad-gateway answer and nothing stays held
    Given the model "chat-stuck" routes to a primary and then a secondary backend, each given 0.5 seconds to answer
    And every backend of the model hangs
    When the key "ci" asks "chat-stuck" for a chat completion
    Then the gateway answers 502, naming each backend that timed out, within their timeouts
    And the request's hold was released with nothing charged
    And nothing is left on hold for "Acme"
