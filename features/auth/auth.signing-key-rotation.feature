@allure.label.epic:Auth @serial
Feature: Rotating the signing key
  The platform rotates the key that signs access tokens without logging anyone out. A new key is published
  before it signs, so clients can fetch it in time; once it signs, tokens from the previous key keep working
  until that key is retired; after retirement they are refused at once.

  These scenarios change what every token in the gateway is checked against, so they run alone (@serial). Each
  one leaves the key that signed before it as the signing key again.

  Background:
    Given the org "Acme" with its owner "Olive"

  Rule: A new key is published before it signs

    Scenario: A new key is published before it signs
      Given Olive has logged in
      When the platform publishes a new signing key
      Then the new key is among the published signing keys
      And tokens issued now are still signed by the previous key

  Rule: Tokens from the previous key work until that key is retired, and are refused at once after

    Scenario: Tokens from the previous key keep working after the new key takes over
      Given Olive has logged in
      And the platform has published a new signing key
      When the platform makes the new key the signing key
      Then tokens issued now are signed by the new key
      And Olive's earlier access token is still accepted
      And the previous key is still published

    Scenario: Tokens from a retired key are refused at once
      Given the gateway signs with a key rotated in for this scenario
      And Olive has logged in
      And the platform has published a new signing key
      And the platform has made the new key the signing key
      When the platform retires the previous key
      Then Olive's access token is refused as unauthenticated, the gateway saying "unknown or retired key"
      And Olive's refresh token is refused too
      And the previous key is no longer published
      And Olive can log in again and is served

  Rule: The key that signs cannot be retired, and a retired key never signs again

    Scenario: The key that signs cannot be retired
      Given the gateway signs with a key rotated in for this scenario
      When the platform tries to retire the key that signs
      Then the platform is told the key still signs
      And tokens issued now are still signed by that key

    Scenario: A retired key cannot sign again
      Given the gateway signs with a key rotated in for this scenario
      And the platform has rotated to a newer key and retired the previous one
      When the platform tries to make the retired key the signing key again
      Then the platform is told the key is retired
      And tokens issued now are still signed by the newer key
