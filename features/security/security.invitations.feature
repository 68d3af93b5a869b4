@allure.label.epic:Security
Feature: An invitation reaches no further than its org wants
  Whoever holds an invitation may accept it, so an invitation must not become a way to learn about another org's
  people or to guess their passwords: a wrong password says nothing about the account, and after a few the
  invitation is used up. An org's admins see every invitation of their org and can revoke one. A member who is
  removed takes their reach with them: the invitations they issued and the API keys they created stop working, and
  their tokens, even refreshed, no longer reach the org.

  Scenario: An admin holding an invitation learns nothing about another org's member and cannot guess her password
    Given the org "Acme" with its owner "Olive"
    And the org "Evil" with its owner "Eve"
    And Eve holds an invitation to "Evil" for Olive's email
    When Eve tries 4 passwords on that invitation
    Then no refusal names Olive, her email or "Acme", or says that she has an account
    And the invitation is used up, so that even Olive's own password no longer accepts it
    And Olive is not a member of "Evil"

  Scenario: An org's admins see its invitations and can revoke one
    Given the org "Acme" with its owner "Olive"
    And Olive has invited Ian to "Acme" as a member
    When Olive revokes Ian's invitation to "Acme"
    Then the invitations of "Acme" show Ian's as revoked, without its token
    And Ian's invitation no longer works

  Scenario: A removed admin's invitation no longer works
    Given the org "Acme" with its owner "Olive"
    And Ada is an admin of "Acme"
    And Ada has invited Ian to "Acme" as an admin
    When Olive removes Ada from "Acme"
    Then Ian's invitation no longer works
    And the audit log of "Acme" shows Ada's removal revoking Ian's invitation

  Scenario: A removed admin's API keys stop spending the org's credit
    Given the org "Acme" with its owner "Olive"
    And Ada is an admin of "Acme"
    And Ada has issued the API key "ada-ci" for "Acme"
    When Olive removes Ada from "Acme"
    Then the key "ada-ci" is refused as unauthenticated on its very next request

  Scenario: A removed member's refreshed tokens no longer reach the org
    Given the org "Acme" with its owner "Olive"
    And Mia is a member of "Acme"
    And Mia has logged in
    And Olive has removed Mia from "Acme"
    When Mia refreshes her tokens
    Then Mia's new access token is answered about "Acme" exactly as about an org that does not exist
