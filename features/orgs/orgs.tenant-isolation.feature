@allure.label.epic:Orgs
Feature: One org cannot see into another
  An org's members, keys, usage, audit log and reservations are invisible to every other org. Whatever another
  org's people or API keys ask about them, the answer is exactly the answer they would get about something that
  does not exist (apart from the request id), so they cannot even learn that it exists. People asking through
  another org's address are told it is not found; API keys, which only work on the model API, are refused on the
  platform API alike for every org. Each probe is audited as denied, and nothing of the probed org changes.

  Background:
    Given the org "Acme" with its owner "Olive", an API key "acme-ci" and a pending reservation
    And the org "Globex" with its owner "Gus", an API key "globex-ci" and a pending reservation

  Rule: Whatever another org asks about an org's things, it learns nothing, and nothing changes

    Scenario Outline: Globex's <identity> asks for Acme's <thing>
      When Globex's <identity> asks for Acme's <thing>
      Then the answer is <answer>, exactly as for <thing> that does not exist
      And the probe is audited as denied
      And Acme's members, API key and reservation are as they were

      Examples: Globex's owner, through Acme's address
        | identity | thing       | answer    |
        | owner    | members     | not found |
        | owner    | API keys    | not found |
        | owner    | usage       | not found |
        | owner    | audit log   | not found |
        | owner    | reservation | not found |

      Examples: Globex's owner, naming Acme's things through Globex's own address
        | identity | thing                        | answer    |
        | owner    | reservation via Globex       | not found |
        | owner    | API key to revoke via Globex | not found |
        | owner    | member to demote via Globex  | not found |
        | owner    | member to remove via Globex  | not found |

      Examples: Globex's API key
        | identity | thing       | answer          |
        | API key  | reservation | not found       |
        | API key  | members     | unauthenticated |
        | API key  | API keys    | unauthenticated |
        | API key  | usage       | unauthenticated |
        | API key  | audit log   | unauthenticated |

  Rule: An org still sees its own things

    Scenario: Globex's owner and API key still see Globex's own things
      When Globex's owner and API key ask for Globex's own members, API keys, usage, audit log and reservation
      Then every one of those answers is Globex's own
