@allure.label.epic:Health
Feature: Published signing keys
  Clients and other services verify the gateway's access tokens with the public keys it publishes. The published
  set must never leak private key material, and must verify every token the gateway issues.

  Rule: The published keys are public keys only

    @smoke
    Scenario: Published keys are public P-256 keys for ES256
      When a client fetches the gateway's published signing keys
      Then every published key is a P-256 public key for ES256 signatures with a key id
      And no published key carries a private member

  Rule: The published keys verify every token the gateway issues

    Scenario: A freshly issued access token verifies against the published keys
      Given the org "Acme" with its owner "Olive"
      When Olive logs in
      Then Olive's access token verifies against the published signing keys
      And Olive's access token is an ES256 access token for the gateway that expires within 15 minutes
