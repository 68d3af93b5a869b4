@allure.label.epic:Security @serial @needs_database @needs_stub_control
Feature: Refusing a flood costs the gateway no more than a counter
  Requests without valid credentials are refused before they cost a password hash or a database write: each
  client address has its refusals audited one by one up to a budget per window, the rest are counted and summed up
  in one event, logins from an address that failed too often are refused as trying too often before any password
  is checked, and metrics are served from cheap counters. So a flood beside an org's traffic leaves that traffic
  served, and the audit log grows by the sampling budget, not by the size of the flood. These scenarios measure
  latency, so they run alone (@serial); their figures are attached to the report.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 0.01 USD per 1k prompt tokens and 0.02 USD per 1k completion tokens

  Rule: A flood beside an org's traffic leaves that traffic served, and grows the audit log by a budget

    Scenario Outline: A flood of <flood> beside an org's traffic leaves that traffic served
      When attackers from 4 addresses send at least 400 <flood> while the key "ci" keeps asking "chat-basic" for completions
      Then every request of the flood was refused or answered without a server error
      And every completion "Acme" asked for meanwhile was answered, the slowest 1% within 2 seconds
      And the flood grew the audit log by no more than the sampling budget allows

      Examples:
        | flood             |
        | bad access tokens |
        | unknown API keys  |

  Rule: A flood of logins is refused as trying too often, before any password is checked

    Scenario: A flood of logins with random emails is soon refused, beside an org's traffic served
      When attackers from 4 addresses send at least 500 logins with random emails while the key "ci" keeps asking "chat-basic" for completions
      Then each address had all but its first 25 logins refused as trying too often, and was told when to retry
      And every request of the flood was refused or answered without a server error
      And every completion "Acme" asked for meanwhile was answered, the slowest 1% within 2 seconds
      And the flood grew the audit log by no more than the sampling budget allows

  Rule: Metrics are served from cheap counters, so a flood of scrapes leaves an org's traffic served

    Scenario: A flood of metrics scrapes beside an org's traffic leaves that traffic served
      When attackers from 4 addresses send 200 metrics scrapes while the key "ci" keeps asking "chat-basic" for completions
      Then every request of the flood was refused or answered without a server error
      And every completion "Acme" asked for meanwhile was answered, the slowest 1% within 2 seconds
      And the flood left no audit event
