@allure.label.epic:Audit @needs_database @needs_stub_control
Feature: Secrets never reach the audit log
  The audit log is read by people who must never see a credential: owners, admins, auditors. Passwords, access
  and refresh tokens, API key secrets and invitation tokens pass through the gateway on every sign-up, login,
  refresh and key issue; none of them may appear in an audit event, whether read through the API or straight
  from the database.

  Scenario: Joining, logging in, refreshing, issuing a key and using it leave no secret in the audit log
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And Olive has invited Nia to "Acme" as a member
    And Nia has accepted her invitation and logged in
    And Nia has refreshed her tokens
    And Olive has issued the API key "ci" for "Acme"
    When the key "ci" asks "chat-basic" for a chat completion
    Then none of the secrets this scenario handled appears in the audit log of "Acme", read through the API or from the database
