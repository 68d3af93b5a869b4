@allure.label.epic:Audit
Feature: One request id and one trace follow a request everywhere
  A caller names its request with a request id and its trace with W3C trace context. The gateway answers with
  the same request id, stores it and the trace id on the audit event, passes the trace on to the model's
  backend, and writes them on every log line about the request. A request that names neither gets both made up
  by the gateway, so nothing is ever uncorrelated.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit

  Rule: The request id and the trace the caller sent follow the request everywhere

    @needs_database @needs_stub_control
    Scenario: The answer, the audit event and the model's backend agree on the request and the trace
      Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
      And Olive has issued the API key "ci" for "Acme"
      When the key "ci" asks "chat-basic" for a chat completion
      Then the answer, its audit event and the model's backend carry the request id and the trace the caller sent

    @needs_logs
    Scenario: The gateway's log lines about a request carry its request id and trace
      When Olive issues the API key "ci" for "Acme"
      Then every gateway log line about that request is a JSON object with its request id and trace id

  Rule: A request that names no request id, or no valid trace, gets one made up by the gateway

    @smoke
    Scenario: A request sent without a request id gets one made up, and its audit event carries it
      When Olive issues the API key "ci" for "Acme" with no request id
      Then the gateway answers with a request id it made up, and the audit event carries that id

    Scenario: A malformed trace context is not passed on: the gateway starts a new trace
      When Olive issues the API key "ci" for "Acme" with a malformed trace context
      Then the gateway starts a new trace for the request, and the audit event carries that trace
