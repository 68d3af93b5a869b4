@allure.label.epic:Billing @needs_database
Feature: Only the right token reaches billing
  Services reserve and settle with a service token; only platform admins mint, with an admin token. A token that
  is missing, expired, malformed, signed with the wrong secret or issued for another audience is refused, and
  neither kind of token opens the other's routes. Every refusal leaves an audit event under the caller's request id.

  Scenario Outline: A caller presenting <credential> is refused, and the refusal audited
    Given an account with 10.00 USD in one credit lot
    When a caller presenting <credential> <action> 1.00 USD <where>
    Then the request is refused because the caller is not authenticated
    And the refusal is in the audit log under the request id the suite sent
    And the account has 10.00 USD available, 0.00 USD held and 0.00 USD spent of 10.00 USD minted

    Examples:
      | credential                                   | action   | where           |
      | an expired service token                     | reserves | on the account  |
      | a malformed service token                    | reserves | on the account  |
      | no token                                     | reserves | on the account  |
      | a service token signed with the wrong secret | reserves | on the account  |
      | a service token for another audience         | reserves | on the account  |
      | a valid admin token                          | reserves | on the account  |
      | a valid service token                        | mints    | for the account |
      | an expired admin token                       | mints    | for the account |
