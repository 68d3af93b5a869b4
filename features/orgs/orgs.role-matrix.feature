@allure.label.epic:Orgs
Feature: What each role may do in an org
  Roles rank owner > admin > member > viewer. Viewers read; members also read reservations; admins also manage
  keys, people and the budget and read the audit log; only owners change roles. A refused action is forbidden,
  with a message that says what was refused and why, and the org's audit log records it with who tried, what, on
  what, and the request id the client sent. An allowed change is audited too.

  Scenario Outline: Role <role> trying to <action> is <outcome>
    Given the org "Acme" with its owner "Olive"
    And Rita has the role <role> in "Acme"
    When Rita tries to <action> in "Acme"
    Then Rita's attempt is <outcome>
    And the audit log of "Acme" accounts for Rita's attempt

    Examples: Viewers read only
      | role   | action                 | outcome |
      | viewer | view the org           | allowed |
      | viewer | list the members       | allowed |
      | viewer | read the usage         | allowed |
      | viewer | list the API keys      | allowed |
      | viewer | read a reservation     | denied  |
      | viewer | issue an API key       | denied  |
      | viewer | revoke an API key      | denied  |
      | viewer | invite someone         | denied  |
      | viewer | remove a member        | denied  |
      | viewer | change the budget      | denied  |
      | viewer | read the audit log     | denied  |
      | viewer | change a member's role | denied  |

    Examples: Members also read reservations
      | role   | action                 | outcome |
      | member | view the org           | allowed |
      | member | list the members       | allowed |
      | member | read the usage         | allowed |
      | member | list the API keys      | allowed |
      | member | read a reservation     | allowed |
      | member | issue an API key       | denied  |
      | member | revoke an API key      | denied  |
      | member | invite someone         | denied  |
      | member | remove a member        | denied  |
      | member | change the budget      | denied  |
      | member | read the audit log     | denied  |
      | member | change a member's role | denied  |

    Examples: Admins manage keys, people and the budget
      | role  | action                 | outcome |
      | admin | view the org           | allowed |
      | admin | list the members       | allowed |
      | admin | read the usage         | allowed |
      | admin | list the API keys      | allowed |
      | admin | read a reservation     | allowed |
      | admin | issue an API key       | allowed |
      | admin | revoke an API key      | allowed |
      | admin | invite someone         | allowed |
      | admin | remove a member        | allowed |
      | admin | change the budget      | allowed |
      | admin | read the audit log     | allowed |
      | admin | change a member's role | denied  |

    Examples: Owners may do everything
      | role  | action                 | outcome |
      | owner | view the org           | allowed |
      | owner | list the members       | allowed |
      | owner | read the usage         | allowed |
      | owner | list the API keys      | allowed |
      | owner | read a reservation     | allowed |
      | owner | issue an API key       | allowed |
      | owner | revoke an API key      | allowed |
      | owner | invite someone         | allowed |
      | owner | remove a member        | allowed |
      | owner | change the budget      | allowed |
      | owner | read the audit log     | allowed |
      | owner | change a member's role | allowed |
