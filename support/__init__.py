"""The acceptance suite's library. It talks to the gateway over HTTP and SQL only: never import `gateway`."""
