@allure.label.epic:Security
Feature: Secrets stay secret at rest, in caches and in logs
  A copy of the gateway's database (a backup, a replica) is not enough to mint tokens: signing keys are stored
  sealed under a key kept outside the database. Answers that carry a token, a key or an invitation may not be
  stored by any cache, and no answer may be sniffed as another content type. The gateway never writes a secret in
  its logs; besides this feature's scenario, every run ends by searching the gateway's logs for the secrets it
  handled.

  @needs_database
  Scenario: A copy of the gateway's database holds no signing key that could mint tokens
    When the platform publishes a signing key of its own making
    Then no table of the gateway's database holds a private signing key in the clear

  Scenario: Answers that carry tokens, keys or invitations are never cached or sniffed
    Given the org "Acme" with its owner "Olive"
    When Olive logs in, creates an API key and invites Ian to "Acme"
    Then none of those answers may be kept by a cache or sniffed as another content type

  @needs_logs
  Scenario: An invitation accepted leaves its token in no log line
    Given the org "Acme" with its owner "Olive"
    And Olive has invited Ian to "Acme" as a member
    When Ian accepts his invitation
    Then the gateway's logs hold none of the secrets this scenario handled
