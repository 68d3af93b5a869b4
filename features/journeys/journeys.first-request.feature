@allure.label.epic:Journeys @critical @needs_database @needs_stub_control
Feature: A new customer's first request
  The path every customer takes on day one: the platform opens their org, the owner joins and brings a colleague,
  issues an API key and sends a first chat request. Each step leaves an audit event that carries the request id
  the client sent, so any request can be traced end to end.

  @smoke
  Scenario: From a new org to a first chat completion, traced through the audit log
    Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And a platform admin has opened the org "Acme" for its owner "Olive"
    And the platform has granted "Acme" 5.00 USD of credit
    And Olive has accepted her invitation and logged in
    And Olive has invited Mia to "Acme" as a member
    And Mia has accepted her invitation and logged in
    And Olive has issued the API key "ci" for "Acme"
    When the key "ci" asks "chat-basic" for a chat completion
    Then the completion is answered by the model's primary backend
    And "Acme" has been charged exactly the completion's usage at the model's price
    And Mia is listed as a member of "Acme"
    And the audit log of "Acme" shows, each with the request id the suite sent:
      | action            | actor        | outcome |
      | org.create        | the platform | allowed |
      | billing.mint      | the platform | allowed |
      | invitation.accept | Olive        | allowed |
      | members.invite    | Olive        | allowed |
      | invitation.accept | Mia          | allowed |
      | keys.create       | Olive        | allowed |
      | chat.completion   | the key "ci" | allowed |
