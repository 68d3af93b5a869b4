@allure.label.epic:Auth
Feature: Refreshing tokens
  A refresh token buys one new pair of tokens, once. A refresh token that comes back a second time has leaked:
  the gateway refuses it and revokes every refresh token descended from the same login, so whoever holds the
  newest one cannot carry on either.

  Background:
    Given the org "Acme" with its owner "Olive"
    And Olive has logged in

  Rule: A refresh token, and only a refresh token, buys one new pair of tokens, once

    @smoke
    Scenario: A refresh gives a new pair of tokens that works
      When Olive refreshes her tokens
      Then Olive holds a new access token and a new refresh token
      And with her access token the gateway knows Olive as the owner of "Acme"

    Scenario: A refresh token that was already used is refused
      Given Olive has refreshed her tokens
      When Olive's previous refresh token is presented again
      Then the refresh is refused as unauthenticated because the token was already used

    Scenario: An access token cannot be used to refresh
      When Olive's access token is presented as a refresh token
      Then the refresh is refused as unauthenticated

  Rule: A refresh token presented twice has leaked: the whole login is revoked

    Scenario: Replaying a refresh token revokes the whole login
      Given Olive has refreshed her tokens
      And Olive's previous refresh token has been presented again, and refused
      When Olive refreshes her tokens with the newest refresh token
      Then the refresh is refused as unauthenticated because the token was already used
