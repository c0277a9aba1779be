"""AWS adapters: cached clients, the orders table, queue and topic."""
