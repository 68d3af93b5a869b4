@allure.label.epic:Auth
Feature: Forged and misused access tokens are refused
  The platform API trusts an access token only if the gateway signed it, with a key it still trusts, for this
  gateway, and it is within its lifetime. Each forgery below starts from a genuine access token and changes one
  thing. Before each, the suite shows that a faithful copy re-signed with the gateway's trusted key is accepted,
  so the refusal can only come from the one change. Every refusal says the caller is unauthenticated and why,
  and is audited.

  Scenario Outline: A forged access token is refused: <forgery>
    Given the org "Acme" with its owner "Olive"
    And the gateway accepts a copy of Olive's access token that the suite re-signed with the trusted key
    When a caller presents Olive's access token forged as "<forgery>"
    Then the caller is refused as unauthenticated, the gateway saying "<why>"
    And the refusal is audited as denied with the request id the caller sent

    Examples:
      | forgery                                      | why                    |
      | alg none                                     | algorithm              |
      | HS256 signed with the public key             | algorithm              |
      | expired                                      | expired                |
      | not yet valid                                | not valid yet          |
      | wrong audience                               | audience               |
      | wrong issuer                                 | issuer                 |
      | tampered payload                             | signature              |
      | unknown kid                                  | unknown or retired key |
      | refresh token used as access token           | type                   |
      | a stranger's signature under the trusted kid | signature              |
      | signature stripped                           | signature              |
      | attacker key embedded in the header          | unknown or retired key |
      | no expiry                                    | exp                    |
      | wrong token type                             | type                   |
      | service token                                | algorithm              |
      | not a JWT at all                             | well-formed            |
      | no token at all                              | no bearer              |
