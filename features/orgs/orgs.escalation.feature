@allure.label.epic:Orgs
Feature: Nobody gains more power than they were given
  People cannot raise their own role, hand out a role above their own, or remove someone who outranks them, and
  a request cannot smuggle in fields it does not take (mass assignment): such fields are refused, not ignored.

  Background:
    Given the org "Acme" with its owner "Olive"

  Rule: Nobody raises their own role, hands out a role above their own, or removes someone who outranks them

    Scenario Outline: Role <role> trying to <attempt> is refused and keeps its role
      Given Rita has the role <role> in "Acme"
      When Rita tries to <attempt> in "Acme"
      Then Rita's attempt is denied
      And the audit log of "Acme" accounts for Rita's attempt
      And Rita still has the role <role> in "Acme" and Olive still owns it

      Examples:
        | role   | attempt                    |
        | viewer | make themself an owner     |
        | member | make themself an owner     |
        | member | make themself an admin     |
        | admin  | make themself an owner     |
        | admin  | invite someone as an owner |
        | admin  | remove the owner           |

  Rule: A request that carries a field it does not take is refused, not ignored

    Scenario: An invitation cannot be accepted with a role of one's own choosing
      Given Olive has invited Rita to "Acme" as a viewer
      When Rita accepts her invitation claiming the role "owner"
      Then the request is refused as invalid, naming the field "role"
      And Rita can still accept her invitation and becomes a viewer of "Acme"

    Scenario Outline: A request that carries a field it does not take is refused: <field> when <request>
      Given Rita has the role member in "Acme"
      When Olive sends a request for <request> with the extra field "<field>"
      Then the request is refused as invalid, naming the field "<field>"
      And Rita still has the role member in "Acme" and Olive still owns it

      Examples:
        | request                  | field        |
        | changing a member's role | user_id      |
        | issuing an API key       | org_id       |
        | inviting someone         | org_id       |
        | setting the budget       | spent_micros |
        | logging in               | role         |
        | refreshing tokens        | sub          |
