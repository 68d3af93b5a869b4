@allure.label.epic:Resilience @resilience @needs_database
Feature: A burst of malformed and oversized requests
  Garbage must bounce off the gateway: broken JSON, wrong types, bodies of 10 MB and documents nested a hundred
  thousand levels deep are each refused with a client error that says what is wrong, never a server error, and
  the gateway keeps answering its health probe while the burst lasts.

  Scenario: Only client errors come back, and the gateway stays responsive
    Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"
    When a burst of malformed and oversized requests hits the gateway's endpoints with valid credentials
    Then every request of the burst is refused with a client error that names the problem
    And every oversized body is refused as too large
    And the gateway answered every health probe promptly during and after the burst
    And the burst left no trace in the ledger of "Acme"
