@allure.label.epic:Convergence @needs_config_repo @needs_database
Feature: Budgets declared in git are the budgets in force
  Operators declare each org's budget in the configuration repository. Once the gateway has synced a commit,
  chat requests are held to the budget of that commit, whether the sync was asked for or came with the
  reconcile interval, and the configuration reports Synced at that commit.

  Background:
    Given the org "Acme" with its owner "Olive" and 10.00 USD of credit
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And Olive holds the API key "ci" for "Acme"

  Rule: A committed budget is in force once the gateway syncs, whether asked to or on its interval

    Scenario Outline: A budget committed to git is Synced (<trigger>)
      Given "Acme" is declared in git with a budget of <old budget>
      And the operator has committed a budget of <new budget> for "Acme"
      When <trigger>
      Then the configuration is Synced at that commit within <bound> seconds
      And the budget in force for "Acme" is <new budget>

      # The suite's repository sets a reconcile interval of half a second.
      Examples:
        | old budget | new budget | trigger                       | bound |
        | 0.05 USD   | 5.00 USD   | the gateway syncs             | 5     |
        | 5.00 USD   | 0.05 USD   | the reconcile interval passes | 2     |

  Rule: Chat requests are held to the budget of the latest commit in force

    @needs_stub_control
    Scenario Outline: A request is <verdict> under the budget of the latest commit
      Given "Acme" is declared in git with a budget of <old budget>
      And the operator has committed a budget of <new budget> for "Acme", and the gateway has applied it
      When the key "ci" asks "chat-basic" for a chat completion
      Then the request is <verdict> under the budget in git

      Examples:
        | old budget | new budget | verdict  |
        | 0.05 USD   | 5.00 USD   | answered |
        | 5.00 USD   | 0.05 USD   | refused  |
