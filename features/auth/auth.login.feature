@allure.label.epic:Auth
Feature: Logging in
  People log in with their email and password, or are signed in by accepting an invitation. They get a short-lived
  access token, which anyone can verify against the keys the gateway publishes, and a refresh token. A failed login never tells whether the email
  belongs to someone, and every failed login is audited.

  Background:
    Given the org "Acme" with its owner "Olive"

  Rule: A login gives a short-lived access token that anyone can verify against the published keys

    @smoke
    Scenario: Logging in gives an access token that verifies against the published keys
      When Olive logs in
      Then Olive's access token verifies against the published signing keys
      And Olive's access token is an ES256 access token for the gateway that expires within 15 minutes
      And with her access token the gateway knows Olive as the owner of "Acme"

  Rule: Accepting an invitation signs the person in, as a login does

    Scenario: A person who accepts an invitation is signed in by it
      Given Olive has invited Mia to "Acme" as a member
      When Mia accepts her invitation
      Then the acceptance answered with an access token and a refresh token, as a login does
      And Mia's access token verifies against the published signing keys
      And Mia's access token is an ES256 access token for the gateway that expires within 15 minutes
      And with her access token the gateway knows Mia as the member of "Acme"

  Rule: A failed login never tells whether the email belongs to someone, and is audited

    Scenario: A wrong password and an unknown email get the same refusal
      Given Olive has tried to log in with a wrong password
      When someone tries to log in with an email nobody uses
      Then both logins are refused as unauthenticated with the same answer
      And both refusals are audited as denied
