@allure.label.epic:Audit
Feature: Every change and every refusal leaves exactly one audit event
  Owners and admins answer "who did what, to what, and why" from the audit log. Each change and each refused
  request leaves exactly one event naming the actor, the action, its target, the outcome and the reason. The
  event carries the request id and the trace the caller sent, and reads the same in the org's log, in the
  platform's log and in the database.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit

  Rule: A person's change, sign-in or refresh is audited once, by that person

    Scenario Outline: An allowed change is audited once: <action>
      When Olive tries to <attempt> in "Acme"
      Then Olive's attempt is allowed
      And the request leaves exactly one audit event: <action> by Olive on <target>, allowed

      Examples:
        | attempt                | action              | target         |
        | issue an API key       | keys.create         | a key          |
        | revoke an API key      | keys.revoke         | a key          |
        | invite someone         | members.invite      | an invitation  |
        | remove a member        | members.remove      | a user         |
        | change the budget      | budget.update       | the org        |
        | change a member's role | members.change_role | a user         |

    Scenario: Joining an org is audited once, by the person who joined
      Given Olive has invited Nia to "Acme" as a member
      When Nia accepts her invitation
      Then the request leaves exactly one audit event: invitation.accept by Nia on an invitation, allowed

    Scenario: A login is audited once, by the person who logged in
      When Olive logs in
      Then the request leaves exactly one audit event: auth.login by Olive on a user, allowed

    Scenario: A refresh is audited once
      Given Olive has logged in
      When Olive refreshes her tokens
      Then the request leaves exactly one audit event: auth.refresh by Olive on a user, allowed

  Rule: A refused request is audited once, as denied, however many checks it failed

    Scenario Outline: A refused attempt is audited once, with its reason: <action>
      Given Vic is a viewer of "Acme"
      When Vic tries to <attempt> in "Acme"
      Then Vic's attempt is denied
      And the request leaves exactly one audit event: <action> by Vic on the org, denied

      Examples:
        | attempt            | action         |
        | issue an API key   | keys.create    |
        | invite someone     | members.invite |
        | change the budget  | budget.update  |
        | read the audit log | audit.read     |

    Scenario: A wrong password is audited once, as a denied login of that account
      When Olive tries to log in with a wrong password
      Then the request leaves exactly one audit event: auth.login by an anonymous caller on a user, denied

    Scenario: A reused refresh token is audited once, as a denied refresh
      Given Olive has logged in
      And Olive has refreshed her tokens
      When Olive's previous refresh token is presented again
      Then the request leaves exactly one audit event: auth.refresh by Olive on a user, denied

    Scenario: A request without credentials is audited once, not once for each check it failed
      When a caller without credentials asks to issue an API key for "Acme"
      Then the request leaves exactly one audit event: auth.user_token by an anonymous caller on its route, denied

  @needs_database @needs_stub_control
  Rule: A chat request is audited once, by the API key that sent it, whatever came of it

    Scenario: A chat completion is audited once, by the API key that asked
      Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
      And Olive has issued the API key "ci" for "Acme"
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request leaves exactly one audit event: chat.completion by the key "ci" on a model, allowed

    Scenario: A chat request over the budget is audited once, as denied
      Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
      And Olive has issued the API key "ci" for "Acme"
      And the key "ci" has spent the whole budget of "Acme" on "chat-basic"
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request leaves exactly one audit event: chat.completion by the key "ci" on a model, denied

    Scenario: A chat request that no backend could answer is audited once, as failed
      Given the model "chat-basic" is served by a primary and a fallback backend
      And Olive has issued the API key "ci" for "Acme"
      And the primary backend fails with a server error
      And the fallback backend fails with a server error
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request leaves exactly one audit event: chat.completion by the key "ci" on a model, failed

  Rule: A billing request is audited once, by the service or the platform that sent it

    @needs_database
    Scenario: A reservation by the billing service is audited once
      Given an account with 5.00 USD in one credit lot
      When the service reserves 1.00 USD on the account
      Then the request leaves exactly one audit event: billing.reserve by the service on a reservation, allowed

    @needs_database
    Scenario: A reservation beyond the available credit is audited once, as denied
      Given an account with 5.00 USD in one credit lot
      When the service reserves 9.00 USD on the account
      Then the request leaves exactly one audit event: billing.reserve by the service on an account, denied

    Scenario: Credit granted by the platform is audited once
      When the platform grants "Acme" 1.00 USD of credit
      Then the request leaves exactly one audit event: billing.mint by the platform on an account, allowed
