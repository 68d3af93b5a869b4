@allure.label.epic:Budgets @needs_database @needs_stub_control
Feature: A budget holds for every shape of request
  Applications send more than short English sentences: other scripts, content in parts, tool definitions and
  tool calls, several completions at once, and newer token limits. Before calling a backend the gateway holds a
  true worst case for whatever it accepts, so the org is charged exactly the usage its backend reports, never
  less, and never spends past its budget.

  Background:
    Given the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And "Acme" calls models with the API key "ci"
    And the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens

  Rule: Whatever the request's shape, the org pays exactly the usage its backend reports

    Scenario Outline: A request with <shape> is charged exactly its backend's usage
      When the key "ci" asks "chat-basic" for a chat completion with <shape>
      Then "Acme" was charged once, exactly the completion's usage at the model's price
      And the hold placed for the request covered the usage its backend reported

      Examples:
        | shape                                  |
        | a question of 400 Chinese characters   |
        | its content in several text parts      |
        | tool definitions                       |
        | a conversation with a tool call        |
        | three completions                      |
        | a limit on completion tokens           |

    Scenario: A backend that reports more than the hold is charged in full, and the overrun is recorded
      Given the primary backend reports far more tokens than the request could use
      When the key "ci" asks "chat-basic" for a chat completion
      Then "Acme" was charged once, exactly the completion's usage at the model's price
      And the reservation is marked as an overrun, and the overrun is recorded in the audit log of "Acme"

  Rule: What the gateway cannot bound, it refuses

    Scenario: An image the model has no price for is refused, naming the part
      When the key "ci" asks "chat-basic" for a chat completion with an image
      Then the request is refused as invalid, naming the image part
      And the model's primary backend received no request for it
      And "Acme" has spent nothing and holds nothing

  Rule: A burst of mixed requests never spends past the budget

    Scenario: Requests of every shape arriving together cannot spend past a budget that affords ten
      Given the budget of "Acme" affords 10 chat completions on "chat-basic"
      When the key "ci" sends 30 chat completions of mixed shapes to "chat-basic" at once
      Then "Acme" has not spent past its budget, by its account in the database
      And the burst was answered as far as the budget affords, and no further
      And every request of the burst that was not answered was refused as over budget
