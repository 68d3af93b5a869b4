"""The benchmarks: one module each (foundation, billing, gateway, convergence, parallel); common holds what they share."""
