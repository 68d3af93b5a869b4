@allure.label.epic:Resilience @resilience @needs_database @needs_stub_control
Feature: What an answer owes survives faults between the answer and the books
  Once a model's backend has answered, the answer is owed, whatever fails next. The gateway journals the charge
  before it writes it to the books: if the database is away, or the gateway dies before the charge is committed,
  the charge is written once the database or the gateway is back, exactly once, even when the hold expired
  meanwhile. A charge the database keeps refusing is set aside as a dead letter, which a platform admin sees and
  replays, once.

  Background:
    Given the model "chat-basic" costs 1.00 USD per 1k prompt tokens and 2.00 USD per 1k completion tokens
    And the org "Acme" with its owner "Olive" and 5.00 USD of credit
    And Olive has issued the API key "ci" for "Acme"

  Rule: An answer given while the database was away is charged once the database returns

    @serial
    Scenario: The client gets its answer while the database is away, and is charged once when it returns
      Given a chat completion with the key "ci" was answered while the database was away
      When the database is available again
      Then "Acme" is charged exactly once for that completion, at its usage
      And nothing is left on hold for "Acme"
      And the platform's reconciliation balances

  Rule: A gateway killed between the answer and the commit charges the answer once it is back

    @serial
    Scenario: A gateway killed after the backend answered charges the answer once it is back
      Given a chat completion with the key "ci" was cut off by the gateway dying after its backend answered
      When the gateway is started again
      Then "Acme" is charged exactly once for that completion, at its usage
      And nothing is left on hold for "Acme"
      And the platform's reconciliation balances

    @serial
    Scenario: The answer is charged late, once, although its hold expired while the gateway was down
      Given a chat completion with the key "ci" was cut off by the gateway dying after its backend answered
      And the completion's hold ran out of time while the gateway was down
      When the gateway is started again
      Then "Acme" is charged exactly once for that completion, at its usage, as a late charge
      And nothing is left on hold for "Acme"
      And the platform's reconciliation balances

  Rule: A charge the database keeps refusing becomes a dead letter, and a platform admin replays it once

    Scenario: A charge the database keeps refusing is set aside as a dead letter a platform admin can see
      Given the database refuses every change to what "Acme" has spent
      When a chat completion with the key "ci" is answered
      Then the client got the model's answer
      And its charge becomes a dead letter that a platform admin sees, naming the request and what it owes
      And nothing has been charged for that completion yet

    Scenario: A replayed dead letter charges the answer exactly once
      Given a chat completion with the key "ci" whose charge became a dead letter
      And the database accepts changes to what "Acme" has spent again
      When a platform admin replays the dead letter
      Then the dead letter is marked as replayed
      And "Acme" is charged exactly once for that completion, at its usage
      And the replay is in the platform's audit log

    Scenario: A dead letter is replayed only once
      Given a chat completion with the key "ci" whose charge became a dead letter
      And the database accepts changes to what "Acme" has spent again
      And a platform admin has replayed the dead letter
      When a platform admin replays the dead letter again
      Then the replay is refused, the dead letter having been replayed already
      And "Acme" is charged exactly once for that completion, at its usage
