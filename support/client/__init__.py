"""The client side of an exchange with the gateway: the API client that records every request and answer as
masked evidence, assertions whose messages quote the exchange and its request id, the Allure formatter
(reporting) and the failure dossier attached when a step fails.

Imports only support.harness."""
