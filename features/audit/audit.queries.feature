@allure.label.epic:Audit
Feature: Finding events in the audit log
  An org's owners and admins, and the platform's admins across all orgs, find events by action, outcome, request
  id and time range. A long log comes in pages, newest first: each page says where the next one starts, and the
  last page says there is no more.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit

  Rule: Events are found by action, outcome, request id and time range

    Scenario: Refused attempts are found by action and outcome
      Given Vic is a viewer of "Acme"
      And Olive has made 2 changes to "Acme", one after another
      And Vic has tried to issue an API key in "Acme"
      When Olive looks for the denied "keys.create" events of "Acme"
      Then Olive finds exactly Vic's attempt

    Scenario: A time range finds the events inside it
      Given Olive has made 3 changes to "Acme", one after another
      When Olive reads the audit log of "Acme" from the second change until the third
      Then Olive finds exactly the second change

    Scenario: The platform's audit log finds any org's event by its request id
      Given the org "Beta" with its owner "Bea"
      And Olive has made 1 change to "Acme", one after another
      When a platform admin looks up the request of Olive's change in the platform's audit log
      Then the platform admin finds exactly that change, in the org "Acme"

  Rule: A long log is read page by page, newest first, to its end

    Scenario: A long audit log is read page by page
      Given Olive has made 5 changes to "Acme", one after another
      When Olive reads the audit log of "Acme" 2 events at a time
      Then the pages hold every event of the log exactly once, newest first, and the last page says there is no more
