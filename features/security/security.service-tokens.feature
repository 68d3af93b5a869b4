@allure.label.epic:Security @needs_database
Feature: Service and admin tokens say who issued them and expire soon
  Service and platform-admin tokens are shared-secret (HS256) tokens. Each must name a trusted issuer and live at
  most an hour, so that a leaked token is worth little. (Start-up refuses shared secrets that are short or equal.)

  Background:
    Given an account with 10.00 USD in one credit lot

  Scenario Outline: <credential> is refused
    When a caller presenting <credential> <action>
    Then the token is refused as unauthenticated, the gateway saying "<why>"

    Examples:
      | credential                             | action                           | why      |
      | a service token without an issuer      | reserves 1.00 USD on the account | iss      |
      | a service token from an unknown issuer | reserves 1.00 USD on the account | issuer   |
      | a service token that lasts a year      | reserves 1.00 USD on the account | lifetime |
      | an admin token without an issuer       | mints 1.00 USD for the account   | iss      |
      | an admin token that lasts a year       | mints 1.00 USD for the account   | lifetime |
