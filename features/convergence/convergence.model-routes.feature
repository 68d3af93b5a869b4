@allure.label.epic:Convergence @needs_config_repo @needs_stub_control
Feature: Model routes declared in git
  A model and its backends, in route order, are declared in the configuration repository. The next chat
  request after the gateway has synced a commit goes where that commit says.

  Background:
    Given the org "Acme" with its owner "Olive" and 10.00 USD of credit
    And Olive holds the API key "ci" for "Acme"

  Scenario: A model declared in git answers the next request through its declared backend
    Given the model "chat-git" is declared in git, routed to its "blue" backend
    When the key "ci" asks "chat-git" for a chat completion
    Then the completion is answered by the model's blue backend

  Scenario: A route reordered in git sends the next request to the new first backend
    Given the model "chat-git" is declared in git, routed to its "blue" then "green" backends
    And the operator has rerouted "chat-git" in git to its "green" then "blue" backends
    And the reconcile interval has passed
    When the key "ci" asks "chat-git" for a chat completion
    Then the completion is answered by the model's green backend
