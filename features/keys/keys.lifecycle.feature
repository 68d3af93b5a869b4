@allure.label.epic:Keys
Feature: An API key's secret is shown once, and a revoked key dies at once
  An API key belongs to one org and is its credential for model traffic. Its secret is shown once, when it is
  issued, and never again: not in the key list, not when it is revoked, not in the audit log; the gateway keeps
  only a hash of it. A revoked key is refused on its very next request. Keys work only on the model API and
  people's access tokens only on the platform API.

  Background:
    Given the org "Acme" with its owner "Olive"
    And Olive has issued the API key "ci" for "Acme"

  Rule: A key's secret is shown once, when it is issued, and the gateway keeps only a hash of it

    Scenario: The secret is never shown again after the key is issued
      When Olive lists the API keys of "Acme"
      Then the key "ci" is listed by its name and prefix, without its secret
      And the secret of "ci" appears nowhere in the answer

    Scenario: Revoking a key does not show its secret either, nor does the audit log
      When Olive revokes the key "ci" of "Acme"
      Then the secret of "ci" appears nowhere in the answer
      And the secret of "ci" appears nowhere in the audit log of "Acme"

    @needs_database
    Scenario: The gateway keeps only a hash of the secret
      When Olive issues the API key "batch" for "Acme"
      Then the gateway's database holds no copy of the secret of "batch"
      And the gateway's database holds no copy of the secret of "ci"

  Rule: A revoked key is refused on its very next request

    Scenario: A revoked key is refused at once
      Given the key "ci" is accepted for model traffic
      When Olive revokes the key "ci" of "Acme"
      Then the key "ci" is refused as unauthenticated on its very next request
      And the key "ci" is listed as revoked
      And the audit log of "Acme" shows, each with the request id the suite sent:
        | action       | actor        | outcome |
        | keys.revoke  | Olive        | allowed |
        | auth.api_key | the key "ci" | denied  |

  Rule: Keys work only on the model API, and people's access tokens only on the platform API

    Scenario Outline: A credential works only where it belongs: <credential> on <api>
      When <credential> is presented to <api>
      Then it is refused as unauthenticated, the gateway saying "<why>"

      Examples:
        | credential                  | api              | why       |
        | the key "ci"                | the platform API | API key   |
        | Olive's access token        | the model API    | API key   |
        | a key that was never issued | the model API    | not known |
