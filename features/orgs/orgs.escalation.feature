@allure.label.epic:Orgs
Feature: Nobody gains more power than they were given
  People cannot raise their own role, hand out a role above their own, or remove someone who outranks them, and
  a request cannot smuggle in fields it does not take (mass assignment): such fields are refused, not ignored.

  Scenario Outline: A <role> who tries to <attempt> is refused and stays a <role>
    Given the org "Acme" with its owner "Olive"
    And Rita is a <role> of "Acme"
    When Rita tries to <attempt> in "Acme"
    Then Rita's attempt is denied
    And the audit log of "Acme" accounts for Rita's attempt
    And Rita is still a <role> of "Acme" and Olive still its owner

    Examples:
      | role   | attempt                    |
      | viewer | make themself an owner     |
      | member | make themself an owner     |
      | member | make themself an admin     |
      | admin  | make themself an owner     |
      | admin  | invite someone as an owner |
      | admin  | remove the owner           |

  Scenario: An invitation cannot be accepted with a role of one's own choosing
    Given the org "Acme" with its owner "Olive"
    And Olive has invited Rita to "Acme" as a viewer
    When Rita accepts her invitation claiming the role "owner"
    Then the request is refused as invalid, naming the field "role"
    And Rita can still accept her invitation and becomes a viewer of "Acme"

  Scenario Outline: A request that carries a field it does not take is refused: <field> when <request>
    Given the org "Acme" with its owner "Olive"
    And Rita is a member of "Acme"
    When Olive sends a request for <request> with the extra field "<field>"
    Then the request is refused as invalid, naming the field "<field>"
    And Rita is still a member of "Acme" and Olive still its owner

    Examples:
      | request                  | field        |
      | changing a member's role | user_id      |
      | issuing an API key       | org_id       |
      | inviting someone         | org_id       |
      | setting the budget       | spent_micros |
      | logging in               | role         |
      | refreshing tokens        | sub          |
